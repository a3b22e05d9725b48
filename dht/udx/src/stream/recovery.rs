//! Timers and loss recovery of a [`StreamCore`]: the single stream timer (RTO, RACK
//! reorder window, tail-loss probe, zero-window probe, keepalive) and the pacing token
//! bucket, after the timer functions of `udx.c` and RFC 8985 (RACK-TLP).

use super::*;

impl StreamCore {
    // ------------------------------------------------------------------ timers

    pub(super) fn timer_start(&mut self, t: Timer, wait_ms: u64) {
        if t == Timer::Rto {
            self.next_rto_ts = self.now_ms + wait_ms;
        }
        self.timer = t;
        self.timer_at = self.now_ms + wait_ms;
    }

    pub(super) fn timer_stop(&mut self) {
        self.timer = Timer::None;
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let main = (self.timer != Timer::None).then_some(self.timer_at);
        let pace = self.pacing_timer_at.filter(|_| {
            self.lost_pkts > 0 || self.unsent_off < self.sbuf_end() || self.end_pending()
        });
        let t = match (main, pace) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.instant_of(t))
    }

    /// Runs expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.set_now(now);
        if self.closed.is_some() || self.destroying {
            return;
        }
        if let Some(at) = self.pacing_timer_at {
            if self.now_ms >= at {
                self.pacing_timer_at = None;
                self.update_pacing_time();
                self.send_packets();
                if self.tb_available == 0 && self.pacing_timer_at.is_none() {
                    self.pacing_timer_at = Some(self.now_ms + 1);
                }
            }
        }
        if self.timer != Timer::None && self.now_ms >= self.timer_at {
            let t = self.timer;
            match t {
                Timer::Rto => self.rto_timeout(),
                Timer::RackReo => self.rack_reo_timeout(),
                Timer::Tlp => self.tlp_timeout(),
                Timer::Zwp => self.zwp_timeout(),
                Timer::Keepalive => self.keepalive_timeout(),
                Timer::None => {}
            }
        }
    }

    pub(super) fn keepalive_timeout(&mut self) {
        if self.remote_acked == self.seq {
            self.tx.push_back(Tx::Heartbeat);
        }
        self.timer_start(Timer::Keepalive, self.keepalive_ms.max(1) as u64);
    }

    pub(super) fn zwp_timeout(&mut self) {
        self.stats.zwp_count += 1;
        self.tx.push_back(Tx::Heartbeat);
        self.timer_start(Timer::Zwp, self.rto as u64 * 2);
    }

    pub(super) fn rearm_rto(&mut self, from_now: bool) {
        if self.seq == self.remote_acked {
            self.timer_stop();
        } else {
            let rto = if from_now {
                self.rto as u64
            } else {
                let d = self.next_rto_ts as i64 - self.now_ms as i64;
                d.max(1) as u64
            };
            self.timer_start(Timer::Rto, rto);
        }
    }

    pub(super) fn tlp_timeout(&mut self) {
        if self.remote_acked == self.seq {
            self.timer_stop();
            return;
        }
        if self.tlp_in_flight || !self.tlp_permitted {
            self.rearm_rto(false);
            return;
        }
        if !self.send_new_packet(true, true) {
            let last = self.seq.wrapping_sub(1);
            let Some(i) = self.pkt_index(last) else {
                self.rearm_rto(false);
                return;
            };
            if self.packets[i].state != PktState::Inflight {
                self.rearm_rto(false);
                return;
            }
            self.retransmit_packet(last);
            self.tlp_is_retrans = true;
            self.tlp_in_flight = true;
            self.tlp_end_seq = last;
            self.tlp_permitted = false;
        }
        self.rearm_rto(true);
    }

    pub(super) fn schedule_loss_probe(&mut self, advancing_rto: bool) -> bool {
        if self.seq == self.remote_acked || self.ca_state != CaState::Open || self.sacks != 0 {
            return false;
        }
        let mut timeout = 1000u32;
        if self.srtt != 0 {
            timeout = self.srtt * 2;
            if self.inflight_pkts + self.lost_pkts == 1 {
                timeout += TLP_MAX_ACK_DELAY;
            }
        }
        let rto_delta = if advancing_rto {
            self.rto
        } else {
            (self.next_rto_ts as i64 - self.now_ms as i64).max(1) as u32
        };
        self.timer_start(Timer::Tlp, timeout.min(rto_delta) as u64);
        true
    }

    pub(super) fn arm_stream_timers(&mut self, arm_tlp: bool) {
        if matches!(self.timer, Timer::None | Timer::Zwp | Timer::Keepalive) {
            self.timer_start(Timer::Rto, self.rto as u64);
        }
        if arm_tlp && self.ca_state == CaState::Open && self.sacks == 0 {
            self.schedule_loss_probe(false);
        }
    }

    pub(super) fn rack_reo_wnd(&self) -> u32 {
        if !self.reordering_seen {
            if matches!(self.ca_state, CaState::Recovery | CaState::Loss) {
                return 0;
            }
            if self.sacks >= 3 {
                return 0;
            }
        }
        (self.rtt_min.get() / 4).min(self.srtt)
    }

    /// RACK loss detection (`rack_detect_loss`); returns the reorder timeout in ms.
    pub(super) fn rack_detect_loss(&mut self) -> u64 {
        let mut timeout = 0u64;
        let reo_wnd = self.rack_reo_wnd() as u64;
        let now = self.now_ms;
        let mut resending = 0u32;
        let mut probes_lost = 0u32;
        let base = self.remote_acked;
        for i in 0..self.packets.len() {
            let p = &self.packets[i];
            if p.state != PktState::Inflight {
                continue;
            }
            let seq = base.wrapping_add(i as u32);
            let after = sent_after(
                self.rack_time_sent,
                self.rack_next_seq,
                p.time_sent,
                seq.wrapping_add(1),
            );
            if !p.retransmitted && (p.time_sent > self.rack_time_sent || !after) {
                // New packets go out in sequence order, so every later one was sent
                // after this one too: none of them can be declared lost yet.
                break;
            }
            if !after {
                continue;
            }
            let remaining = p.time_sent as i64 + self.rack_rtt as i64 + reo_wnd as i64 - now as i64;
            if remaining <= 0 {
                let size = p.size();
                let probe = p.is_mtu_probe;
                self.mark_lost(i, seq, size);
                self.lost = self.lost.wrapping_add(1);
                if probe {
                    self.mtu_unprobeify(i);
                    probes_lost += 1;
                }
                resending += 1;
            } else if remaining as u64 > timeout {
                timeout = remaining as u64;
            }
        }
        if resending > probes_lost && self.ca_state == CaState::Open {
            self.stats.fast_recoveries += 1;
            self.ca_state = CaState::Recovery;
            self.high_seq = self.seq;
            self.tlp_in_flight = false;
            self.tlp_is_retrans = false;
        }
        self.send_packets();
        timeout
    }

    pub(super) fn mark_lost(&mut self, i: usize, seq: u32, size: u32) {
        let p = &mut self.packets[i];
        p.state = PktState::Lost;
        self.inflight_pkts -= 1;
        self.inflight_bytes = self.inflight_bytes.saturating_sub(size as u64);
        self.lost_pkts += 1;
        self.rtx_queue.push_back(seq);
    }

    pub(super) fn rack_detect_loss_and_arm_timer(&mut self) -> bool {
        let timeout = self.rack_detect_loss();
        if timeout > 0 && self.closed.is_none() {
            self.timer_start(Timer::RackReo, timeout);
            return true;
        }
        false
    }

    pub(super) fn rack_reo_timeout(&mut self) {
        let pending = self.timer;
        self.rack_detect_loss();
        // The RACK timer itself fired, so `pending` is RackReo unless a send re-armed it.
        let from_now = !matches!(pending, Timer::RackReo | Timer::Tlp);
        if self.timer != Timer::Rto {
            self.rearm_rto(from_now);
        }
    }

    pub(super) fn rto_timeout(&mut self) {
        self.timer = Timer::None;
        self.high_seq = self.seq;
        self.stats.rto_count += 1;
        self.ca_state = CaState::Loss;
        self.tlp_in_flight = false;
        self.tlp_is_retrans = false;
        self.timer_start(Timer::Rto, self.rto as u64 * 2);

        self.rtx_queue.clear();
        let now = self.now_ms;
        let reo = self.rack_reo_wnd() as i64;
        let base = self.remote_acked;
        for i in 0..self.packets.len() {
            let seq = base.wrapping_add(i as u32);
            let p = &self.packets[i];
            match p.state {
                PktState::Acked => continue,
                PktState::Lost => {
                    self.rtx_queue.push_back(seq);
                    continue;
                }
                PktState::Inflight => {}
            }
            let remaining = p.time_sent as i64 + self.rack_rtt as i64 + reo - now as i64;
            if seq == base || remaining < 0 {
                if p.rto_timeouts >= MAX_RTO_TIMEOUTS {
                    self.close(Err(StreamError::TimedOut));
                    return;
                }
                let size = p.size();
                let probe = p.is_mtu_probe;
                self.packets[i].rto_timeouts += 1;
                self.lost = self.lost.wrapping_add(1);
                if probe {
                    self.mtu_unprobeify(i);
                }
                self.mark_lost(i, seq, size);
            }
        }
        self.bbr_on_rto();
        self.send_packets();
    }

    // ------------------------------------------------------------------ pacing

    pub(super) fn update_pacing_time(&mut self) {
        let now = self.now_ms;
        if now > self.tb_last_refill_ms {
            let factor = now - self.tb_last_refill_ms;
            self.tb_available =
                (factor * self.pacing_bytes_per_ms.max(1) as u64).min(u32::MAX as u64) as u32;
            self.tb_last_refill_ms = now;
        }
    }

    pub(super) fn may_send(&mut self, retransmit: bool) -> bool {
        self.update_pacing_time();
        if self.tb_available == 0 {
            return false;
        }
        if retransmit {
            self.inflight_pkts < self.cwnd
        } else {
            self.inflight_pkts < self.send_window_in_packets()
        }
    }
}
