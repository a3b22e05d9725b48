//! Congestion control: delivery-rate sampling (libudx `udx_rate.c`, after the Linux
//! `tcp_rate.c` / draft-cheng-iccrg-delivery-rate-estimation) and BBR v1 (libudx
//! `udx_bbr.c`, after Linux `tcp_bbr.c`).
//!
//! Units follow libudx: bandwidth in packets per millisecond, times in milliseconds,
//! windows in packets. Every quirk that changes the sender's behaviour on the wire is kept;
//! the few places where libudx relies on unsigned wrap-around of a negative time delta
//! use a saturating difference instead.

use super::{CaState, StreamCore};
use crate::filter::WinFilter;

const CYCLE_LEN: u8 = 8;
const BW_FILTER_CYCLES: u32 = CYCLE_LEN as u32 + 2;
const MIN_RTT_INTERVAL_MS: u64 = 10_000;
const MIN_PROBE_RTT_MODE_MS: u64 = 200;

const PACING_MARGIN: f64 = 0.99;
const HIGH_GAIN: f64 = 2.88539;
const DRAIN_GAIN: f64 = 1.0 / 2.88539;
const CWND_GAIN: f64 = 2.0;
const PACING_GAIN: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const CWND_MIN_TARGET: u32 = 4;
const FULL_BW_THRESH: f64 = 1.25;
const FULL_BW_COUNT: u8 = 3;
const EXTRA_ACKED_GAIN: f64 = 1.0;
const EXTRA_ACKED_WIN_RTTS: u8 = 5;
const EXTRA_ACKED_MAX_MS: u32 = 100;

/// BBR's state machine phase (`UDX_BBR_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BbrState {
    /// Exponential search for the bottleneck bandwidth.
    Startup,
    /// Draining the queue built during startup.
    Drain,
    /// Steady state, cycling the pacing gain.
    ProbeBw,
    /// Briefly shrinking the window to re-measure the minimum RTT.
    ProbeRtt,
}

/// One rate sample, built while an ack is processed (`udx_rate_sample_t`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateSample {
    pub prior_timestamp: u64,
    pub prior_delivered: u32,
    pub delivered: i32,
    pub interval_ms: i64,
    pub rtt_ms: i64,
    pub losses: i32,
    pub acked_sacked: u32,
    pub seq: u32,
    pub is_app_limited: bool,
    pub is_retrans: bool,
}

impl Default for RateSample {
    fn default() -> Self {
        RateSample {
            prior_timestamp: 0,
            prior_delivered: 0,
            delivered: 0,
            interval_ms: 0,
            rtt_ms: -1,
            losses: 0,
            acked_sacked: 0,
            seq: 0,
            is_app_limited: false,
            is_retrans: false,
        }
    }
}

/// BBR variables (the `bbr` struct inside `udx_stream_t`).
#[derive(Debug, Clone)]
pub(crate) struct Bbr {
    pub min_rtt_ms: u32,
    pub min_rtt_stamp: u64,
    pub probe_rtt_done_time: u64,
    pub bw: WinFilter<f64>,
    pub rtt_count: u32,
    pub next_rtt_delivered: u32,
    pub cycle_timestamp: u64,
    pub state: BbrState,
    pub prev_ca_state: CaState,
    pub use_packet_conservation: bool,
    pub round_start: bool,
    pub idle_restart: bool,
    pub probe_rtt_round_done: bool,
    pub pacing_gain: f64,
    pub cwnd_gain: f64,
    pub full_bw_reached: bool,
    pub full_bw_count: u8,
    pub cycle_index: u8,
    pub has_seen_rtt: bool,
    pub prior_cwnd: u32,
    pub full_bw: f64,
    pub ack_epoch_start: u64,
    pub extra_acked: [u32; 2],
    pub ack_epoch_acked: u32,
    pub extra_acked_win_rtts: u8,
    pub extra_acked_win_index: usize,
}

impl Bbr {
    pub(crate) fn new(now_ms: u64, min_rtt: u32) -> Bbr {
        Bbr {
            min_rtt_ms: min_rtt,
            min_rtt_stamp: now_ms,
            probe_rtt_done_time: 0,
            bw: WinFilter::new(0, 0.0),
            rtt_count: 0,
            next_rtt_delivered: 0,
            cycle_timestamp: 0,
            state: BbrState::Startup,
            prev_ca_state: CaState::Open,
            use_packet_conservation: false,
            round_start: false,
            idle_restart: false,
            probe_rtt_round_done: false,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            full_bw_reached: false,
            full_bw_count: 0,
            cycle_index: 0,
            has_seen_rtt: false,
            prior_cwnd: 0,
            full_bw: 0.0,
            ack_epoch_start: now_ms,
            extra_acked: [0, 0],
            ack_epoch_acked: 0,
            extra_acked_win_rtts: 0,
            extra_acked_win_index: 0,
        }
    }
}

fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn delta_ms(t1: u64, t0: u64) -> u64 {
    t1.saturating_sub(t0)
}

/// `rack_sent_after()`: was (t1, seq1) sent after (t2, seq2)?
pub(crate) fn sent_after(t1: u64, seq1: u32, t2: u64, seq2: u32) -> bool {
    t1 > t2 || (t1 == t2 && seq_diff(seq2, seq1) < 0)
}

impl StreamCore {
    // ---- rate sampling (udx_rate.c) ----

    /// `udx__rate_pkt_sent`: snapshot the delivery state into the packet at index `idx`.
    pub(crate) fn rate_pkt_sent(&mut self, idx: usize) {
        if self.seq == self.remote_acked {
            self.first_sent_ts = self.now_ms;
            self.delivered_ts = self.now_ms;
        }
        let app_limited = self.app_limited != 0;
        let p = &mut self.packets[idx];
        p.first_sent_ts = self.first_sent_ts;
        p.delivered_ts = self.delivered_ts;
        p.delivered = self.delivered;
        p.is_app_limited = app_limited;
    }

    /// `udx__rate_pkt_delivered`.
    pub(crate) fn rate_pkt_delivered(&mut self, idx: usize, seq: u32, rs: &mut RateSample) {
        let p = &self.packets[idx];
        if p.delivered_ts == 0 {
            return;
        }
        if rs.prior_delivered == 0 || sent_after(p.time_sent, seq, self.first_sent_ts, rs.seq) {
            rs.prior_delivered = p.delivered;
            rs.prior_timestamp = p.delivered_ts;
            rs.is_app_limited = p.is_app_limited;
            rs.is_retrans = p.retransmitted;
            rs.seq = seq;
            self.first_sent_ts = p.time_sent;
            rs.interval_ms = delta_ms(self.first_sent_ts, p.first_sent_ts) as i64;
        }
    }

    /// `udx__rate_gen`.
    pub(crate) fn rate_gen(&mut self, delivered: u32, lost: u32, rs: &mut RateSample) {
        if self.app_limited != 0 && seq_diff(self.delivered, self.app_limited) > 0 {
            self.app_limited = 0;
        }
        if delivered > 0 {
            self.delivered_ts = self.now_ms;
        }
        rs.acked_sacked = delivered;
        rs.losses = lost as i32;

        if rs.prior_timestamp == 0 {
            rs.delivered = -1;
            rs.interval_ms = -1;
            return;
        }
        rs.delivered = self.delivered.wrapping_sub(rs.prior_delivered) as i32;

        let snd_ms = rs.interval_ms.max(0) as u64;
        let ack_ms = delta_ms(self.now_ms, rs.prior_timestamp);
        rs.interval_ms = snd_ms.max(ack_ms) as i64;

        if rs.interval_ms < self.rtt_min.get() as i64 {
            rs.interval_ms = -1;
            return;
        }

        if !rs.is_app_limited
            || (rs.delivered as u64).wrapping_mul(self.rate_interval_ms as u64)
                >= (self.rate_delivered as u64).wrapping_mul(rs.interval_ms as u64)
        {
            self.rate_delivered = rs.delivered as u32;
            self.rate_interval_ms = rs.interval_ms as u32;
        }
    }

    /// `udx__rate_check_app_limited`.
    pub(crate) fn rate_check_app_limited(&mut self) {
        if self.queued_bytes < self.max_payload() as usize
            && self.inflight_pkts < self.cwnd
            && self.lost_pkts == 0
        {
            let v = self.delivered.wrapping_add(self.inflight_pkts);
            self.app_limited = if v == 0 { 1 } else { v };
        }
    }

    // ---- BBR (udx_bbr.c) ----

    fn bbr_max_bw(&self) -> f64 {
        self.bbr.bw.get()
    }

    fn bbr_extra_acked(&self) -> u32 {
        self.bbr.extra_acked[0].max(self.bbr.extra_acked[1])
    }

    fn bbr_bw_to_pacing_rate(&self, bw: f64, gain: f64) -> u64 {
        let mss = self.max_payload() as f64;
        let bpms = (bw * mss * gain * PACING_MARGIN) as u64;
        bpms.max(1)
    }

    pub(crate) fn bbr_init_pacing_rate_from_rtt(&mut self) {
        let srtt = if self.srtt != 0 {
            self.bbr.has_seen_rtt = true;
            self.srtt
        } else {
            1
        };
        let bw = self.cwnd as f64 / srtt as f64;
        self.pacing_bytes_per_ms = clamp_u32(self.bbr_bw_to_pacing_rate(bw, HIGH_GAIN));
    }

    fn bbr_set_pacing_rate(&mut self, bw: f64, gain: f64) {
        let rate = self.bbr_bw_to_pacing_rate(bw, gain);
        if !self.bbr.has_seen_rtt && self.srtt != 0 {
            self.bbr_init_pacing_rate_from_rtt();
        }
        if self.bbr.full_bw_reached || rate > self.pacing_bytes_per_ms as u64 {
            self.pacing_bytes_per_ms = clamp_u32(rate);
        }
    }

    fn bbr_save_cwnd(&mut self) {
        if self.bbr.prev_ca_state < CaState::Recovery && self.bbr.state != BbrState::ProbeRtt {
            self.bbr.prior_cwnd = self.cwnd;
        } else {
            self.bbr.prior_cwnd = self.bbr.prior_cwnd.max(self.cwnd);
        }
    }

    /// `bbr_on_transmit_start`: called when a packet leaves an idle stream.
    pub(crate) fn bbr_on_transmit_start(&mut self) {
        if self.app_limited != 0 {
            self.bbr.idle_restart = true;
            self.bbr.ack_epoch_start = self.now_ms;
            self.bbr.ack_epoch_acked = 0;
            match self.bbr.state {
                BbrState::ProbeBw => {
                    let bw = self.bbr_max_bw();
                    self.bbr_set_pacing_rate(bw, 1.0);
                }
                BbrState::ProbeRtt => self.bbr_check_probe_rtt_done(),
                _ => {}
            }
        }
    }

    fn bbr_bdp(&self, bw: f64, gain: f64) -> u32 {
        if self.bbr.min_rtt_ms == u32::MAX {
            return 10;
        }
        (bw * self.bbr.min_rtt_ms as f64 * gain) as u32
    }

    fn bbr_ack_aggregation_cwnd(&self) -> u32 {
        if EXTRA_ACKED_GAIN > 0.0 && self.bbr.full_bw_reached {
            let max_aggr = (self.bbr_max_bw() * EXTRA_ACKED_MAX_MS as f64) as u32;
            let aggr = (EXTRA_ACKED_GAIN * self.bbr_extra_acked() as f64) as u32;
            aggr.min(max_aggr)
        } else {
            0
        }
    }

    fn bbr_set_cwnd_to_recover_or_restore(&mut self, rs: &RateSample, acked: u32) -> (bool, u32) {
        let prev = self.bbr.prev_ca_state;
        let state = self.ca_state;
        let mut cwnd = self.cwnd;
        if rs.losses > 0 {
            cwnd = (cwnd as i64 - rs.losses as i64).max(1) as u32;
        }
        if state == CaState::Recovery && prev != CaState::Recovery {
            self.bbr.use_packet_conservation = true;
            self.bbr.next_rtt_delivered = self.delivered;
            cwnd = self.inflight_pkts + acked;
        } else if prev >= CaState::Recovery && state == CaState::Open {
            cwnd = cwnd.max(self.bbr.prior_cwnd);
            self.bbr.use_packet_conservation = false;
        }
        self.bbr.prev_ca_state = state;
        if self.bbr.use_packet_conservation {
            return (true, cwnd.max(self.inflight_pkts + acked));
        }
        (false, cwnd)
    }

    fn bbr_set_cwnd(&mut self, rs: &RateSample, acked: u32, bw: f64, gain: f64) {
        let mut cwnd = self.cwnd;
        if acked > 0 {
            let (done, c) = self.bbr_set_cwnd_to_recover_or_restore(rs, acked);
            cwnd = c;
            if !done {
                let target = self
                    .bbr_bdp(bw, gain)
                    .saturating_add(self.bbr_ack_aggregation_cwnd());
                if self.bbr.full_bw_reached {
                    cwnd = cwnd.saturating_add(acked).min(target);
                } else if cwnd < target || self.delivered < 10 {
                    cwnd = cwnd.saturating_add(acked);
                }
                cwnd = cwnd.max(CWND_MIN_TARGET);
            }
        }
        self.cwnd = cwnd;
        if self.bbr.state == BbrState::ProbeRtt {
            self.cwnd = self.cwnd.min(CWND_MIN_TARGET);
        }
    }

    fn bbr_is_next_cycle_phase(&self, rs: &RateSample) -> bool {
        let full_length =
            delta_ms(self.delivered_ts, self.bbr.cycle_timestamp) > self.bbr.min_rtt_ms as u64;
        if self.bbr.pacing_gain == 1.0 {
            return full_length;
        }
        let inflight = self.inflight_pkts;
        let bw = self.bbr_max_bw();
        if self.bbr.pacing_gain > 1.0 {
            return full_length
                && (rs.losses != 0 || inflight > self.bbr_bdp(bw, self.bbr.pacing_gain));
        }
        full_length || inflight <= self.bbr_bdp(bw, 1.0)
    }

    fn bbr_advance_cycle_phase(&mut self) {
        self.bbr.cycle_index = (self.bbr.cycle_index + 1) & (CYCLE_LEN - 1);
        self.bbr.cycle_timestamp = self.delivered_ts;
    }

    fn bbr_reset_probe_bw_mode(&mut self) {
        self.bbr.state = BbrState::ProbeBw;
        self.bbr.cycle_index = 3;
        self.bbr_advance_cycle_phase();
    }

    fn bbr_reset_mode(&mut self) {
        if !self.bbr.full_bw_reached {
            self.bbr.state = BbrState::Startup;
        } else {
            self.bbr_reset_probe_bw_mode();
        }
    }

    fn bbr_update_bw(&mut self, rs: &RateSample) {
        self.bbr.round_start = false;
        if rs.delivered < 0 || rs.interval_ms <= 0 {
            return;
        }
        if seq_diff(rs.prior_delivered, self.bbr.next_rtt_delivered) >= 0 {
            self.bbr.next_rtt_delivered = self.delivered;
            self.bbr.rtt_count = self.bbr.rtt_count.wrapping_add(1);
            self.bbr.round_start = true;
            self.bbr.use_packet_conservation = false;
        }
        let bw = rs.delivered as f64 / rs.interval_ms as f64;
        if !rs.is_app_limited || bw >= self.bbr_max_bw() {
            let t = self.bbr.rtt_count as u64;
            self.bbr.bw.apply_max(BW_FILTER_CYCLES, t, bw);
        }
    }

    fn bbr_update_ack_aggregation(&mut self, rs: &RateSample) {
        if rs.acked_sacked == 0 || rs.delivered < 0 || rs.interval_ms <= 0 {
            return;
        }
        if self.bbr.round_start {
            self.bbr.extra_acked_win_rtts = self.bbr.extra_acked_win_rtts.saturating_add(1);
            if self.bbr.extra_acked_win_rtts >= EXTRA_ACKED_WIN_RTTS {
                self.bbr.extra_acked_win_rtts = 0;
                self.bbr.extra_acked_win_index ^= 1;
                self.bbr.extra_acked[self.bbr.extra_acked_win_index] = 0;
            }
        }
        let epoch_ms = delta_ms(self.delivered_ts, self.bbr.ack_epoch_start);
        let mut expected = (self.bbr_max_bw() * epoch_ms as f64) as u32;
        if self.bbr.ack_epoch_acked <= expected
            || self.bbr.ack_epoch_acked as u64 + rs.acked_sacked as u64 >= u32::MAX as u64
        {
            self.bbr.ack_epoch_acked = 0;
            self.bbr.ack_epoch_start = self.delivered_ts;
            expected = 0;
        }
        self.bbr.ack_epoch_acked = self.bbr.ack_epoch_acked.saturating_add(rs.acked_sacked);
        let extra = self
            .bbr
            .ack_epoch_acked
            .saturating_sub(expected)
            .min(self.cwnd);
        let i = self.bbr.extra_acked_win_index;
        if extra > self.bbr.extra_acked[i] {
            self.bbr.extra_acked[i] = extra;
        }
    }

    fn bbr_check_full_bw_reached(&mut self, rs: &RateSample) {
        if self.bbr.full_bw_reached || !self.bbr.round_start || rs.is_app_limited {
            return;
        }
        let thresh = self.bbr.full_bw * FULL_BW_THRESH;
        if self.bbr_max_bw() >= thresh {
            self.bbr.full_bw = self.bbr_max_bw();
            self.bbr.full_bw_count = 0;
            return;
        }
        self.bbr.full_bw_count += 1;
        self.bbr.full_bw_reached = self.bbr.full_bw_count >= FULL_BW_COUNT;
    }

    fn bbr_check_drain(&mut self) {
        if self.bbr.state == BbrState::Startup && self.bbr.full_bw_reached {
            self.bbr.state = BbrState::Drain;
            self.ssthresh = self.bbr_bdp(self.bbr_max_bw(), 1.0);
        }
        if self.bbr.state == BbrState::Drain
            && self.inflight_pkts <= self.bbr_bdp(self.bbr_max_bw(), 1.0)
        {
            self.bbr_reset_probe_bw_mode();
        }
    }

    fn bbr_check_probe_rtt_done(&mut self) {
        let done = self.bbr.probe_rtt_done_time;
        if !(done != 0 && self.now_ms > done) {
            return;
        }
        self.bbr.min_rtt_stamp = self.now_ms;
        self.cwnd = self.cwnd.max(self.bbr.prior_cwnd);
        self.bbr_reset_mode();
    }

    fn bbr_update_min_rtt(&mut self, rs: &RateSample) {
        let now = self.now_ms;
        let expired = now > self.bbr.min_rtt_stamp + MIN_RTT_INTERVAL_MS;
        if rs.rtt_ms >= 0 && (rs.rtt_ms < self.bbr.min_rtt_ms as i64 || expired) {
            self.bbr.min_rtt_ms = if rs.rtt_ms > 0 { rs.rtt_ms as u32 } else { 1 };
            self.bbr.min_rtt_stamp = now;
        }
        if MIN_PROBE_RTT_MODE_MS > 0
            && expired
            && !self.bbr.idle_restart
            && self.bbr.state != BbrState::ProbeRtt
        {
            self.bbr.state = BbrState::ProbeRtt;
            self.bbr_save_cwnd();
            self.bbr.probe_rtt_done_time = 0;
        }
        if self.bbr.state == BbrState::ProbeRtt {
            let v = self.delivered.wrapping_add(self.inflight_pkts);
            self.app_limited = if v == 0 { 1 } else { v };
            if self.bbr.probe_rtt_done_time == 0 && self.inflight_pkts <= CWND_MIN_TARGET {
                self.bbr.probe_rtt_done_time = now + MIN_PROBE_RTT_MODE_MS;
                self.bbr.probe_rtt_round_done = false;
                self.bbr.next_rtt_delivered = self.delivered;
            } else if self.bbr.probe_rtt_done_time != 0 {
                if self.bbr.round_start {
                    self.bbr.probe_rtt_round_done = true;
                }
                if self.bbr.probe_rtt_round_done {
                    self.bbr_check_probe_rtt_done();
                }
            }
        }
        if rs.delivered > 0 {
            self.bbr.idle_restart = false;
        }
    }

    fn bbr_update_gains(&mut self) {
        let (p, c) = match self.bbr.state {
            BbrState::Startup => (HIGH_GAIN, HIGH_GAIN),
            BbrState::Drain => (DRAIN_GAIN, HIGH_GAIN),
            BbrState::ProbeBw => (PACING_GAIN[self.bbr.cycle_index as usize], CWND_GAIN),
            BbrState::ProbeRtt => (1.0, 1.0),
        };
        self.bbr.pacing_gain = p;
        self.bbr.cwnd_gain = c;
    }

    /// `bbr_main`: runs once per processed ack with a fresh rate sample.
    pub(crate) fn bbr_main(&mut self, rs: &RateSample) {
        self.bbr_update_bw(rs);
        self.bbr_update_ack_aggregation(rs);
        if self.bbr.state == BbrState::ProbeBw && self.bbr_is_next_cycle_phase(rs) {
            self.bbr_advance_cycle_phase();
        }
        self.bbr_check_full_bw_reached(rs);
        self.bbr_check_drain();
        self.bbr_update_min_rtt(rs);
        self.bbr_update_gains();

        let bw = self.bbr_max_bw();
        self.bbr_set_pacing_rate(bw, self.bbr.pacing_gain);
        self.bbr_set_cwnd(rs, rs.acked_sacked, bw, self.bbr.cwnd_gain);
    }

    /// `bbr_on_rto`: a dummy loss sample.
    pub(crate) fn bbr_on_rto(&mut self) {
        self.bbr.prev_ca_state = CaState::Loss;
        self.bbr.full_bw = 0.0;
        self.bbr.round_start = true;
    }

    /// Estimated bottleneck bandwidth in payload bytes per second (`udx_stream_get_bw`).
    pub fn bandwidth(&self) -> u64 {
        (self.bbr_max_bw() * 1000.0 * self.max_payload() as f64) as u64
    }
}

fn clamp_u32(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}
