//! The send path of a [`StreamCore`]: deciding transmissions (`send_packets` and
//! `send_new_packet` in `udx.c`), MTU probe padding, and writing datagrams (data, acks
//! with SACK blocks, heartbeats, messages, destroy) into the caller's buffer.

use super::*;

impl StreamCore {
    // ------------------------------------------------------------------ sending

    pub(super) fn sbuf_end(&self) -> u64 {
        self.sbuf_base + self.sbuf.len() as u64
    }

    pub(super) fn end_pending(&self) -> bool {
        self.ending && !self.end_sent
    }

    /// `send_packets`: retransmissions first, then new packets while the window allows.
    pub(super) fn send_packets(&mut self) {
        if !self.connected || self.closed.is_some() || self.destroying {
            return;
        }
        while self.lost_pkts > 0 && self.may_send(true) {
            let Some(seq) = self.rtx_queue.pop_front() else {
                break;
            };
            match self.pkt_index(seq) {
                Some(i) if self.packets[i].state == PktState::Lost => self.retransmit_packet(seq),
                _ => continue,
            }
        }
        while self.send_new_packet(false, false) {}
    }

    /// Like libudx's prepare-phase flush: also sends a partially filled packet.
    pub(super) fn flush_sends(&mut self) {
        let partial = self.partial_pending || self.send_needed;
        self.send_needed = false;
        self.partial_pending = false;
        self.send_packets();
        if partial {
            while self.send_new_packet(false, true) {}
        }
    }

    /// `send_new_packet`: packetizes queued bytes. A packet that is not full waits for
    /// the flush (`flush = true`) unless it is a probe or carries END.
    pub(super) fn send_new_packet(&mut self, tlp: bool, flush: bool) -> bool {
        let unsent = self.sbuf_end() - self.unsent_off;
        if unsent == 0 && !self.end_pending() {
            return false;
        }
        if !self.may_send(false) && !tlp {
            return false;
        }
        let maxp = self.max_payload() as u64;
        let len = unsent.min(maxp);
        let with_end = self.ending && len == unsent && !self.end_sent;
        if len < maxp && !tlp && !with_end && !flush {
            self.partial_pending = true;
            return false;
        }
        let mut flags = 0;
        if len > 0 {
            flags |= FLAG_DATA;
        }
        if with_end {
            flags |= FLAG_END;
            self.end_sent = true;
        }
        let pkt = SentPacket {
            offset: self.unsent_off,
            len: len as u16,
            flags,
            state: PktState::Inflight,
            transmits: 0,
            rto_timeouts: 0,
            retransmitted: false,
            probe_pad: 0,
            is_mtu_probe: false,
            old_remote: false,
            time_sent: 0,
            first_sent_ts: 0,
            delivered_ts: 0,
            delivered: 0,
            is_app_limited: false,
        };
        self.unsent_off += len;
        let inflight_was_empty = self.inflight_pkts == 0;
        let seq = self.seq;
        self.packets.push_back(pkt);
        let idx = self.packets.len() - 1;
        let probe =
            self.mtu_probe_wanted && !tlp && !self.remote_changing && self.mtu_probeify(idx);
        self.send_packet(idx, seq, false);
        self.seq = self.seq.wrapping_add(1);
        if inflight_was_empty {
            self.bbr_on_transmit_start();
        }
        if probe {
            self.mtu_probe_count += 1;
            self.mtu_probe_wanted = false;
        }
        if tlp {
            self.tlp_is_retrans = false;
            self.tlp_in_flight = true;
            self.tlp_end_seq = seq;
            self.tlp_permitted = false;
        }
        // A RACK reorder timer armed by this same input outlives the TLP (libudx arms
        // it after sending).
        let arm_tlp = !tlp && self.timer != Timer::RackReo;
        self.arm_stream_timers(arm_tlp);
        true
    }

    pub(super) fn retransmit_packet(&mut self, seq: u32) {
        let Some(i) = self.pkt_index(seq) else { return };
        let inflight_was_empty = self.inflight_pkts == 0;
        self.send_packet(i, seq, true);
        self.stats.retransmits += 1;
        if inflight_was_empty {
            self.bbr_on_transmit_start();
        }
        self.arm_stream_timers(false);
    }

    /// `_send_packet`: the bookkeeping of one transmission; the bytes follow in
    /// `poll_transmit_into`.
    pub(super) fn send_packet(&mut self, i: usize, seq: u32, is_retransmit: bool) {
        self.rate_check_app_limited();
        let now = self.now_ms;
        let p = &mut self.packets[i];
        p.transmits = p.transmits.saturating_add(1);
        if is_retransmit {
            p.retransmitted = true;
        }
        p.time_sent = now;
        let size = p.size();
        let was_lost = p.state == PktState::Lost;
        let was_inflight = p.state == PktState::Inflight && is_retransmit;
        p.state = PktState::Inflight;
        self.rate_pkt_sent(i);
        if was_lost {
            self.lost_pkts -= 1;
        }
        if !was_inflight {
            self.inflight_pkts += 1;
            self.inflight_bytes += size as u64;
        }
        self.tb_available = self.tb_available.saturating_sub(size);
        if self.tb_available == 0 {
            self.pacing_timer_at = Some(self.now_ms + 1);
        }
        self.tx.push_back(Tx::Data(seq));
    }

    pub(super) fn mtu_probeify(&mut self, i: usize) -> bool {
        let overhead = self.max_payload_overhead();
        let wanted = self.mtu_probe_size as i32;
        let p = &mut self.packets[i];
        if p.flags & FLAG_DATA == 0 || p.is_mtu_probe {
            return false;
        }
        let ip_size = p.size() as i32 + overhead as i32 - HEADER_SIZE as i32;
        let pad = wanted - ip_size;
        if !(0..=255).contains(&pad) {
            return false;
        }
        p.probe_pad = pad as u8;
        p.is_mtu_probe = true;
        true
    }

    pub(super) fn max_payload_overhead(&self) -> u16 {
        self.mtu - self.max_payload()
    }

    pub(super) fn mtu_unprobeify(&mut self, i: usize) {
        let p = &mut self.packets[i];
        p.probe_pad = 0;
        p.is_mtu_probe = false;
        if self.mtu_state == MtuState::Search {
            if self.mtu_probe_count >= MTU_MAX_PROBES {
                self.mtu_state = MtuState::SearchComplete;
            } else {
                self.mtu_probe_wanted = true;
            }
        }
    }

    // ------------------------------------------------------------------ output

    pub(super) fn header(&mut self, flags: u8, seq: u32, remote_id: u32) -> Header {
        let rwnd = self.recv_rwnd();
        self.last_adv_rwnd = rwnd;
        Header {
            flags,
            data_offset: 0,
            stream_id: remote_id,
            recv_window: rwnd,
            seq,
            ack: self.ack,
        }
    }

    pub(super) fn count_tx(&mut self, bytes: usize) {
        self.stats.packets_tx += 1;
        self.stats.bytes_tx += bytes as u64;
    }

    /// Appends the next datagram to `out` and returns its destination; the datagram is
    /// `out[len_before..]`. `None` (and `out` untouched) when there is nothing to send.
    pub fn poll_transmit_into(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        self.set_now(now);
        if self.closed.is_some() {
            return None;
        }
        if self.destroying {
            if let Some(Tx::Destroy(seq)) = self.tx.pop_front() {
                let h = self.header(FLAG_DESTROY, seq, self.remote_id);
                out.extend_from_slice(&h.to_bytes());
                self.count_tx(HEADER_SIZE);
                let to = self.remote;
                self.close(Ok(()));
                return to;
            }
            return None;
        }
        if !self.connected {
            return None;
        }
        let remote = self.remote?;
        if self.send_needed || self.partial_pending {
            self.flush_sends();
        }

        if self.ack_pending {
            let piggyback = self.ooo_count == 0
                && matches!(self.tx.front(), Some(Tx::Data(s)) if !self.is_old_remote(*s));
            if !piggyback {
                self.write_ack(out);
                self.after_ack_sent();
                return Some(remote);
            }
        }

        while let Some(tx) = self.tx.pop_front() {
            match tx {
                Tx::Data(seq) => {
                    let Some(i) = self.pkt_index(seq) else {
                        continue;
                    };
                    if self.packets[i].state == PktState::Acked {
                        continue;
                    }
                    let to = self.write_data(i, seq, out);
                    if self.ack_pending {
                        self.after_ack_sent();
                    }
                    return Some(to);
                }
                Tx::Heartbeat => {
                    let h = self.header(FLAG_HEARTBEAT, self.seq, self.remote_id);
                    out.extend_from_slice(&h.to_bytes());
                    self.count_tx(HEADER_SIZE);
                    return Some(remote);
                }
                Tx::Message => {
                    let Some(m) = self.out_messages.pop_front() else {
                        continue;
                    };
                    let h = self.header(FLAG_MESSAGE, self.seq, self.remote_id);
                    out.extend_from_slice(&h.to_bytes());
                    out.extend_from_slice(&m);
                    self.count_tx(HEADER_SIZE + m.len());
                    return Some(remote);
                }
                Tx::Destroy(_) => continue,
            }
        }
        if self.ack_pending {
            self.write_ack(out);
            self.after_ack_sent();
            return Some(remote);
        }
        None
    }

    /// Allocating convenience around [`poll_transmit_into`](Self::poll_transmit_into):
    /// the next datagram and its destination.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let mut v = Vec::new();
        let to = self.poll_transmit_into(now, &mut v)?;
        Some((to, v))
    }

    pub(super) fn is_old_remote(&self, seq: u32) -> bool {
        self.remote_changing
            && self
                .pkt_index(seq)
                .is_some_and(|i| self.packets[i].old_remote)
    }

    pub(super) fn write_data(&mut self, i: usize, seq: u32, out: &mut Vec<u8>) -> SocketAddr {
        let p = &self.packets[i];
        let (flags, offset, len, pad, old) = (
            p.flags,
            p.offset,
            p.len as usize,
            if p.is_mtu_probe { p.probe_pad } else { 0 },
            p.old_remote && self.remote_changing,
        );
        let (rid, to) = match (old, self.old_remote) {
            (true, Some((id, addr))) => (id, addr),
            _ => (self.remote_id, self.remote.expect("connected")),
        };
        let mut h = self.header(flags, seq, rid);
        h.data_offset = pad;
        out.extend_from_slice(&h.to_bytes());
        out.resize(out.len() + pad as usize, 0);
        let start = (offset - self.sbuf_base) as usize;
        let (a, b) = self.sbuf.as_slices();
        if start + len <= a.len() {
            out.extend_from_slice(&a[start..start + len]);
        } else if start >= a.len() {
            out.extend_from_slice(&b[start - a.len()..start - a.len() + len]);
        } else {
            out.extend_from_slice(&a[start..]);
            out.extend_from_slice(&b[..len - (a.len() - start)]);
        }
        self.count_tx(HEADER_SIZE + len);
        to
    }

    pub(super) fn write_ack(&mut self, out: &mut Vec<u8>) {
        let mut blocks = [(0u32, 0u32); MAX_SACKS];
        let mut n = 0;
        if self.ooo_count > 0 {
            let mut start: Option<u32> = None;
            for (i, slot) in self.ooo.iter().enumerate() {
                let seq = self.ack.wrapping_add(i as u32);
                match (slot.is_some(), start) {
                    (true, None) => start = Some(seq),
                    (false, Some(s)) => {
                        blocks[n] = (s, seq);
                        n += 1;
                        start = None;
                        if n == MAX_SACKS {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                if n < MAX_SACKS {
                    blocks[n] = (s, self.ack.wrapping_add(self.ooo.len() as u32));
                    n += 1;
                }
            }
        }
        let flags = if n > 0 { FLAG_SACK } else { 0 };
        let h = self.header(flags, self.seq, self.remote_id);
        out.extend_from_slice(&h.to_bytes());
        packet::encode_sacks(&blocks[..n], out);
        self.count_tx(HEADER_SIZE + 8 * n);
    }

    pub(super) fn after_ack_sent(&mut self) {
        self.ack_pending = false;
        if self.ended && self.ended_remote && self.closed.is_none() {
            self.close(Ok(()));
        }
    }
}
