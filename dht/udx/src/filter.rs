//! Windowed min/max filters (Kathleen Nichols' algorithm, as in Linux `lib/minmax.c`
//! and libudx `win_filter.c` / `win_filter_f64.c`): the best, second and third best
//! samples of a window, in constant space. Used for the minimum RTT (window in ms) and
//! BBR's maximum bandwidth (window in round trips).

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry<T> {
    t: u64,
    v: T,
}

/// A windowed min or max tracker over values of type `T` (u32 or f64).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WinFilter<T> {
    e: [Entry<T>; 3],
}

impl<T: Copy + PartialOrd> WinFilter<T> {
    /// A filter holding only `v` at time `t`.
    pub(crate) fn new(t: u64, v: T) -> Self {
        let e = Entry { t, v };
        WinFilter { e: [e; 3] }
    }

    /// The current best value.
    pub(crate) fn get(&self) -> T {
        self.e[0].v
    }

    /// Restarts with only `v`.
    pub(crate) fn reset(&mut self, t: u64, v: T) -> T {
        *self = Self::new(t, v);
        v
    }

    /// Adds a sample to a max filter.
    pub(crate) fn apply_max(&mut self, win: u32, t: u64, v: T) -> T {
        if v >= self.e[0].v || t.wrapping_sub(self.e[2].t) > win as u64 {
            return self.reset(t, v);
        }
        let new = Entry { t, v };
        if v >= self.e[1].v {
            self.e[2] = new;
            self.e[1] = new;
        } else if v >= self.e[2].v {
            self.e[2] = new;
        }
        self.common(win, new)
    }

    /// Adds a sample to a min filter.
    pub(crate) fn apply_min(&mut self, win: u32, t: u64, v: T) -> T {
        if v <= self.e[0].v || t.wrapping_sub(self.e[2].t) > win as u64 {
            return self.reset(t, v);
        }
        let new = Entry { t, v };
        if v <= self.e[1].v {
            self.e[2] = new;
            self.e[1] = new;
        } else if v <= self.e[2].v {
            self.e[2] = new;
        }
        self.common(win, new)
    }

    fn common(&mut self, win: u32, new: Entry<T>) -> T {
        // libudx keeps this difference in a uint32_t.
        let dt = new.t.wrapping_sub(self.e[0].t) as u32;
        if dt > win {
            self.e[0] = self.e[1];
            self.e[1] = self.e[2];
            self.e[2] = new;
            if new.t.wrapping_sub(self.e[0].t) > win as u64 {
                self.e[0] = self.e[1];
                self.e[1] = self.e[2];
                self.e[2] = new;
            }
        } else if self.e[1].t == self.e[0].t && dt > win / 4 {
            self.e[2] = new;
            self.e[1] = new;
        } else if self.e[2].t == self.e[1].t && dt > win / 2 {
            self.e[2] = new;
        }
        self.e[0].v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_tracks_and_expires() {
        let mut f = WinFilter::new(0, u32::MAX);
        assert_eq!(f.apply_min(100, 1, 50), 50);
        assert_eq!(f.apply_min(100, 2, 60), 50);
        assert_eq!(f.apply_min(100, 30, 40), 40);
        // After the window the old minimum ages out.
        f.apply_min(100, 60, 70);
        assert_eq!(f.apply_min(100, 200, 80), 80);
    }

    #[test]
    fn max_tracks() {
        let mut f = WinFilter::new(0, 0.0f64);
        assert_eq!(f.apply_max(10, 1, 5.0), 5.0);
        assert_eq!(f.apply_max(10, 2, 3.0), 5.0);
        assert_eq!(f.apply_max(10, 20, 1.0), 1.0);
    }
}
