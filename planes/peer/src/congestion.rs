//! Backpressure for local sends: the channel writer queues that are nearly full.
//!
//! The runtime task hands frames to each channel's bounded writer queue without waiting.
//! A burst of local sends (an agent pipelining `send`s over the bridge) can outrun the
//! network, and a full queue drops frames. So after a frame leaves a queue with less than
//! `headroom` free slots, that queue is recorded here and the runtime takes no new command
//! until it has drained back to `headroom` free slots: the agent is paced to the network
//! instead of losing messages. A peer that stops reading must not stall local sends for
//! everyone, so a congested queue that makes no progress (not one frame taken) for
//! `stall_limit` is given up on (its frames are dropped and reported, as before) until it
//! drains and congests again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// The sending half of a channel writer queue.
pub(crate) type WriterQueue = mpsc::Sender<Arc<[u8]>>;

/// Writer queues that are nearly full.
pub(crate) struct Congestion {
    headroom: usize,
    stall_limit: Duration,
    queues: Vec<Congested>,
}

struct Congested {
    queue: WriterQueue,
    /// When the queue last made progress (or congested).
    since: Instant,
    /// Its fewest free slots since then: more free slots later means frames were taken.
    free_then: usize,
}

/// What the runtime waits on while a queue is congested: the queue regaining `headroom`
/// free slots, or its stall deadline.
pub(crate) struct RoomWait {
    queue: WriterQueue,
    headroom: usize,
    deadline: Instant,
}

impl RoomWait {
    /// Resolves when the queue has room again, closed, or the deadline passed.
    pub(crate) async fn wait(self) {
        let _ =
            tokio::time::timeout_at(self.deadline, self.queue.reserve_many(self.headroom)).await;
    }
}

impl Congestion {
    /// The headroom is a quarter of the queue, at least `min_headroom` (frames that may
    /// still arrive after commands stop), at most the whole queue.
    pub(crate) fn new(queue_capacity: usize, min_headroom: usize, stall_limit: Duration) -> Self {
        Congestion {
            headroom: (queue_capacity / 4)
                .max(min_headroom)
                .clamp(1, queue_capacity.max(1)),
            stall_limit,
            queues: Vec::new(),
        }
    }

    /// Records `queue` if the frame just queued left it with less than `headroom` slots.
    pub(crate) fn after_send(&mut self, queue: &WriterQueue) {
        let free = queue.capacity();
        if free >= self.headroom {
            return;
        }
        if let Some(c) = self.queues.iter_mut().find(|c| c.queue.same_channel(queue)) {
            // Progress is measured from the fullest point.
            c.free_then = c.free_then.min(free);
            return;
        }
        self.queues.push(Congested {
            queue: queue.clone(),
            since: Instant::now(),
            free_then: free,
        });
    }

    /// Forgets queues that drained, closed or stalled, and returns what to wait for while
    /// one is still congested (`None`: commands may be taken).
    pub(crate) fn pending(&mut self) -> Option<RoomWait> {
        let now = Instant::now();
        let (headroom, stall_limit) = (self.headroom, self.stall_limit);
        self.queues.retain_mut(|c| {
            let free = c.queue.capacity();
            if c.queue.is_closed() || free >= headroom {
                return false;
            }
            if now.duration_since(c.since) < stall_limit {
                return true;
            }
            if free > c.free_then {
                // Slow but moving: keep pacing to it.
                c.since = now;
                c.free_then = free;
                return true;
            }
            tracing::warn!(
                ?stall_limit,
                "sidechannel peer stopped reading; local sends no longer wait for it"
            );
            false
        });
        self.queues.first().map(|c| RoomWait {
            queue: c.queue.clone(),
            headroom,
            deadline: c.since + stall_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer queue of `capacity` with `queued` frames, each recorded as a runtime send
    /// would (a one-second stall limit).
    fn queue(
        capacity: usize,
        queued: usize,
    ) -> (WriterQueue, mpsc::Receiver<Arc<[u8]>>, Congestion) {
        let (tx, rx) = mpsc::channel::<Arc<[u8]>>(capacity);
        let mut congestion = Congestion::new(capacity, 1, Duration::from_secs(1));
        for _ in 0..queued {
            send(&tx, &mut congestion);
        }
        (tx, rx, congestion)
    }

    fn send(tx: &WriterQueue, congestion: &mut Congestion) {
        tx.try_send(Arc::from(&b"x"[..])).unwrap();
        congestion.after_send(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nearly_full_queue_holds_commands_until_it_drains() {
        // The headroom is 8 / 4 = 2 free slots: six queued frames leave exactly that.
        let (tx, mut rx, mut congestion) = queue(8, 6);
        assert!(congestion.pending().is_none());
        send(&tx, &mut congestion);
        let wait = congestion.pending().expect("7 of 8 queued is congested");
        let waiter = tokio::spawn(wait.wait());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        rx.recv().await.unwrap();
        waiter.await.unwrap();
        assert!(
            congestion.pending().is_none(),
            "drained back to the headroom"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_nobody_reads_stops_holding_commands_after_the_stall_limit() {
        let (_tx, _rx, mut congestion) = queue(4, 4);
        let started = Instant::now();
        congestion.pending().expect("full").wait().await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            congestion.pending().is_none(),
            "given up on after the stall limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_queue_that_moves_keeps_holding_commands() {
        let (_tx, mut rx, mut congestion) = queue(8, 8);
        congestion.pending().expect("full").wait().await;
        rx.recv().await.unwrap(); // one frame taken in that second: progress
        assert!(
            congestion.pending().is_some(),
            "still congested, not stalled"
        );
        congestion.pending().expect("full").wait().await;
        assert!(
            congestion.pending().is_none(),
            "no progress for a second: stalled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_holds_nothing() {
        let (_tx, rx, mut congestion) = queue(4, 4);
        drop(rx);
        assert!(congestion.pending().is_none());
    }
}
