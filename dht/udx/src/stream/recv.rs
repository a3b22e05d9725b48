//! The receive path of a [`StreamCore`]: `process_packet` of `udx.c` (ordering, END and
//! DESTROY, messages, window updates, cumulative and selective acks, RTT estimation,
//! then RACK and BBR), plus the in-order and out-of-order receive buffers.

use super::*;

impl StreamCore {
    // ------------------------------------------------------------------ receiving

    /// Processes one datagram addressed to this stream (`process_packet`).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), PacketError> {
        let _ = from;
        self.set_now(now);
        let pkt = packet::decode(bytes)?;
        let h = pkt.header;
        if h.stream_id != self.local_id {
            return Err(PacketError::WrongStream(h.stream_id));
        }
        if self.closed.is_some() || self.destroying {
            return Err(PacketError::Closed);
        }
        self.stats.packets_rx += 1;
        self.stats.bytes_rx += bytes.len() as u64;

        let (ty, seq, ack, rwnd) = (h.flags, h.seq, h.ack, h.recv_window);
        let delivered_before = self.delivered;
        let lost_before = self.lost;
        let prior_remote_acked = self.remote_acked;
        let ack_advanced = sd(ack, prior_remote_acked) > 0;
        let data_inflight = self.remote_acked != self.seq;

        if ty & FLAG_HEARTBEAT != 0 {
            self.ack_pending = true;
            return Ok(());
        }
        let payload = pkt.payload;

        // Stream packets must be causally newer (or the same).
        if sd(seq, self.ack) >= 0 {
            let mut accepted = true;
            if ty & (FLAG_DATA | FLAG_END) != 0 && !self.ended_remote && !self.ooo_has(seq) {
                accepted = self.process_data(ty, seq, payload);
            }
            if accepted && ty & FLAG_END != 0 {
                self.ending_remote = true;
                self.remote_ended = seq;
            }
            if ty & FLAG_DESTROY != 0 {
                self.close(Err(StreamError::Reset));
                return Ok(());
            }
        }

        if ty & FLAG_MESSAGE != 0 && self.in_messages < self.cfg.max_queued_messages {
            self.in_messages += 1;
            self.events
                .push_back(StreamEvent::Message(payload.to_vec()));
        }

        self.drain_ooo();
        if self.ending_remote && !self.ended_remote && sd(self.remote_ended, self.ack) < 0 {
            self.ended_remote = true;
            self.events.push_back(StreamEvent::End);
        }

        // An ack for something we never sent.
        if sd(self.seq, ack) < 0 {
            return Ok(());
        }

        if sd(ack, self.remote_acked) >= 0
            && (sd(self.send_wl1, seq) < 0 || (self.send_wl1 == seq && sd(self.send_wl2, ack) <= 0))
        {
            if rwnd > 0 && self.timer == Timer::Zwp {
                self.timer_stop();
            }
            self.send_rwnd = rwnd;
            self.send_wl1 = seq;
            self.send_wl2 = ack;
        }

        if self.remote_changing && sd(ack, self.seq_on_remote_changed) >= 0 {
            self.remote_changing = false;
            self.old_remote = None;
            self.events.push_back(StreamEvent::RemoteChanged);
        }

        // RACK 7.4.2: the loss probe repaired a loss (or was itself acked).
        if self.tlp_in_flight
            && sd(ack, self.tlp_end_seq) >= 0
            && (!self.tlp_is_retrans || sd(ack, self.tlp_end_seq) > 0)
        {
            self.tlp_in_flight = false;
        }

        if sd(ack, self.high_seq) > 0 && matches!(self.ca_state, CaState::Recovery | CaState::Loss)
        {
            if self.ca_state == CaState::Recovery {
                self.cwnd = self.ssthresh;
            }
            self.ca_state = CaState::Open;
        }

        let mut ended = false;
        let mut rs = RateSample::default();
        let mut p = prior_remote_acked;
        while sd(p, ack) < 0 {
            match self.ack_packet(p, false, &mut rs) {
                1 => self.delivered = self.delivered.wrapping_add(1),
                2 => {
                    ended = true;
                    break;
                }
                _ => {}
            }
            p = p.wrapping_add(1);
        }
        if ack_advanced {
            self.advance_remote_acked(ack);
        }

        if ended {
            if self.remote_acked == self.seq {
                if self.keepalive_ms > 0 {
                    self.timer_start(Timer::Keepalive, self.keepalive_ms as u64);
                } else {
                    self.timer_stop();
                }
            }
            // A final state packet, making sure the peer's END is acked too; the stream
            // closes once it is out if both sides have ended.
            self.ack_pending = true;
            return Ok(());
        }

        for (start, end) in pkt.sacks() {
            if self.sack_is_valid(start, end) {
                let mut p = start;
                while p != end {
                    match self.ack_packet(p, true, &mut rs) {
                        1 => self.delivered = self.delivered.wrapping_add(1),
                        2 => break,
                        _ => {}
                    }
                    p = p.wrapping_add(1);
                }
            }
        }

        let delivered = self.delivered.wrapping_sub(delivered_before);
        let lost = self.lost.wrapping_sub(lost_before);
        let mut arm_rto_or_tlp = ack_advanced && data_inflight;

        if delivered > 0 {
            if self.remote_acked == self.seq {
                arm_rto_or_tlp = false;
                let end_queued = self.ending && !self.ended;
                if self.send_rwnd == 0 && (self.queued_bytes > 0 || end_queued) {
                    self.timer_start(Timer::Zwp, self.rto as u64);
                } else if self.keepalive_ms > 0 {
                    self.timer_start(Timer::Keepalive, self.keepalive_ms as u64);
                } else {
                    self.timer_stop();
                }
            } else {
                self.next_rto_ts = self.now_ms + self.rto as u64;
            }
            if self.rack_detect_loss_and_arm_timer() {
                arm_rto_or_tlp = false;
            }
            if self.hit_high_watermark && self.write_capacity() > 0 {
                self.hit_high_watermark = false;
                if !self.ev_drain {
                    self.ev_drain = true;
                    self.events.push_back(StreamEvent::Drain);
                }
            }
        }

        if arm_rto_or_tlp && !self.schedule_loss_probe(true) {
            self.rearm_rto(true);
        }

        if ty & (FLAG_DATA | FLAG_END) != 0 {
            self.ack_pending = true;
        }

        if data_inflight {
            self.rate_gen(delivered, lost, &mut rs);
            self.bbr_main(&rs);
        }
        self.send_packets();
        Ok(())
    }

    pub(super) fn sack_is_valid(&self, start: u32, end: u32) -> bool {
        !(sd(end, self.seq) > 0
            || sd(start, end) >= 0
            || sd(start, self.seq) >= 0
            || sd(start, self.remote_acked) < 0)
    }

    /// Drops acked packets from the front and frees their bytes.
    pub(super) fn advance_remote_acked(&mut self, ack: u32) {
        let n = (ack.wrapping_sub(self.remote_acked) as usize).min(self.packets.len());
        self.packets.drain(..n);
        self.remote_acked = ack;
        let keep_from = self
            .packets
            .front()
            .map(|p| p.offset)
            .unwrap_or(self.unsent_off);
        let free = (keep_from - self.sbuf_base) as usize;
        if free > 0 {
            self.sbuf.drain(..free);
            self.sbuf_base = keep_from;
        }
    }

    /// `ack_packet`: 0 = not outstanding, 1 = newly acked, 2 = our END is now acked.
    pub(super) fn ack_packet(&mut self, seq: u32, sack: bool, rs: &mut RateSample) -> u8 {
        let Some(i) = self.pkt_index(seq) else {
            return 0;
        };
        if self.packets[i].state == PktState::Acked {
            if !sack {
                self.sacks = self.sacks.saturating_sub(1);
            }
            return 0;
        }
        let is_probe = self.packets[i].is_mtu_probe;
        if self.mtu_state == MtuState::Search && self.mtu_probe_count > 0 && is_probe {
            self.mtu_probe_count = 0;
            self.mtu = self.mtu_probe_size;
            if self.mtu_probe_size == self.mtu_max {
                self.mtu_state = MtuState::SearchComplete;
            } else {
                self.mtu_probe_size = (self.mtu_probe_size + MTU_STEP).min(self.mtu_max);
                self.mtu_probe_wanted = true;
            }
        }
        if self.mtu_state == MtuState::Base {
            self.mtu_state = MtuState::Search;
            self.mtu_probe_wanted = true;
        }
        if sack {
            self.sacks += 1;
        }
        let (state, size, len, time_sent, retransmitted) = {
            let p = &self.packets[i];
            (p.state, p.size(), p.len, p.time_sent, p.retransmitted)
        };
        if state == PktState::Lost {
            self.lost_pkts -= 1;
        } else {
            self.inflight_pkts -= 1;
            self.inflight_bytes = self.inflight_bytes.saturating_sub(size as u64);
        }
        self.packets[i].state = PktState::Acked;
        self.rate_pkt_delivered(i, seq, rs);

        let now = self.now_ms;
        let rtt = self.clamp_rtt(now.saturating_sub(time_sent));
        let next = seq.wrapping_add(1);
        if !retransmitted {
            self.rtt_min.apply_min(RTT_MIN_WINDOW_MS, now, rtt);
            if self.srtt == 0 {
                self.srtt = rtt;
                self.rttvar = rtt / 2;
            } else {
                let delta = self.srtt.abs_diff(rtt);
                self.rttvar = (3 * self.rttvar + delta) / 4;
                self.srtt = (7 * self.srtt + rtt) / 8;
            }
            self.tlp_permitted = true;
            self.rto = (self.srtt + 4 * self.rttvar).clamp(1000, RTO_MAX_MS);
        }
        if !retransmitted || rtt >= self.rtt_min.get() {
            self.rack_rtt = rtt;
            rs.rtt_ms = rtt as i64;
            if sent_after(time_sent, next, self.rack_time_sent, self.rack_next_seq) {
                self.rack_time_sent = time_sent;
                self.rack_next_seq = next;
            }
        }
        if sd(next, self.rack_fack) > 0 {
            self.rack_fack = next;
        } else if sd(next, self.rack_fack) < 0 && !retransmitted {
            self.reordering_seen = true;
        }

        self.queued_bytes -= len as usize;

        if self.ending
            && !self.ended
            && self.end_sent
            && self.inflight_pkts == 0
            && self.lost_pkts == 0
            && self.unsent_off == self.sbuf_end()
        {
            self.ended = true;
            return 2;
        }
        1
    }

    pub(super) fn clamp_rtt(&self, rtt: u64) -> u32 {
        if self.srtt == 0 {
            return rtt.min(RTT_MAX_MS as u64) as u32;
        }
        let outlier = self.srtt as u64 + 5 * self.rttvar as u64;
        if rtt > outlier && rtt > 5000 {
            return outlier.min(RTT_MAX_MS as u64) as u32;
        }
        rtt.min(u32::MAX as u64) as u32
    }

    pub(super) fn ooo_has(&self, seq: u32) -> bool {
        let i = seq.wrapping_sub(self.ack) as usize;
        self.ooo.get(i).is_some_and(|s| s.is_some())
    }

    /// `process_data_packet`; false when the packet was dropped for lack of buffer room.
    pub(super) fn process_data(&mut self, ty: u8, seq: u32, data: &[u8]) -> bool {
        if self.rbuf.len() + self.ooo_bytes + data.len() > self.cfg.recv_buffer_limit {
            return false;
        }
        if seq == self.ack && ty & FLAG_DATA != 0 {
            self.ack = self.ack.wrapping_add(1);
            if !self.ooo.is_empty() {
                self.ooo.pop_front();
            }
            self.deliver(data);
            return true;
        }
        let i = seq.wrapping_sub(self.ack) as usize;
        if i >= MAX_OOO_DISTANCE {
            return false;
        }
        if self.ooo.len() <= i {
            self.ooo.resize_with(i + 1, || None);
        }
        self.ooo[i] = Some(OooPacket {
            flags: ty,
            data: data.to_vec(),
        });
        self.ooo_count += 1;
        self.ooo_bytes += data.len();
        true
    }

    pub(super) fn drain_ooo(&mut self) {
        while let Some(Some(_)) = self.ooo.front() {
            let p = self.ooo.pop_front().flatten().expect("checked");
            self.ack = self.ack.wrapping_add(1);
            self.ooo_count -= 1;
            self.ooo_bytes -= p.data.len();
            if p.flags & FLAG_DATA != 0 {
                self.deliver(&p.data);
            }
        }
    }

    pub(super) fn deliver(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.rbuf.extend(data);
        self.stats.bytes_delivered += data.len() as u64;
        if !self.ev_readable {
            self.ev_readable = true;
            self.events.push_back(StreamEvent::Readable);
        }
    }
}
