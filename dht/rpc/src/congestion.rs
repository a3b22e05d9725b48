//! The send window of `lib/io.js` (`CongestionWindow`): at most `max_window` requests
//! per 750 ms drain slot and `2 * max_window` across the last four slots. Requests that
//! do not fit wait in a queue until a drain frees room.

/// io.js `DEFAULT_MAX_WINDOW`.
pub const DEFAULT_MAX_WINDOW: u32 = 80;

/// Four-slot sliding request counter.
#[derive(Debug, Clone)]
pub struct CongestionWindow {
    i: usize,
    total: u32,
    window: [u32; 4],
    max_window: u32,
}

impl CongestionWindow {
    /// A window allowing `max_window` sends per slot.
    pub fn new(max_window: u32) -> Self {
        CongestionWindow {
            i: 0,
            total: 0,
            window: [0; 4],
            max_window,
        }
    }

    /// The per-slot limit.
    pub fn max_window(&self) -> u32 {
        self.max_window
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.i = 0;
        self.total = 0;
        self.window = [0; 4];
    }

    /// True when no more requests may be sent until a drain.
    pub fn is_full(&self) -> bool {
        self.total >= 2 * self.max_window || self.window[self.i] >= self.max_window
    }

    /// A response arrived (or a request ended): frees one send in the current slot.
    pub fn recv(&mut self) {
        if self.window[self.i] > 0 {
            self.window[self.i] -= 1;
            self.total -= 1;
        }
    }

    /// A request datagram was sent.
    pub fn send(&mut self) {
        self.total += 1;
        self.window[self.i] += 1;
    }

    /// Moves to the next slot, forgetting the oldest.
    pub fn drain(&mut self) {
        self.i = (self.i + 1) & 3;
        self.total -= self.window[self.i];
        self.window[self.i] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_drains() {
        let mut c = CongestionWindow::new(2);
        assert!(!c.is_full());
        c.send();
        c.send();
        assert!(c.is_full(), "slot limit");
        c.recv();
        assert!(!c.is_full());
        c.send();
        c.drain();
        assert!(!c.is_full());
        c.send();
        c.send();
        assert!(
            c.is_full(),
            "total limit is 2 * max and the slot limit is hit too"
        );
        c.drain();
        assert!(c.is_full(), "total 4 >= 2 * 2");
        c.drain();
        c.drain();
        assert!(!c.is_full(), "the first slot was forgotten");
        c.recv();
        c.recv();
        c.recv();
        c.clear();
        assert!(!c.is_full());
    }
}
