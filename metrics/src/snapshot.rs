//! A scrape's worth of metric values, gathered from the crates' own counters and encoded
//! by `prometheus-client` through a collector.
//!
//! The peer's crates keep plain counters (atomics, small maps, status structs); nothing
//! in them knows Prometheus. At every scrape the sources fill a [`Snapshot`], which the
//! [`SnapshotCollector`] hands to the encoder. Label values are bounded by the sources
//! (channels are capped, reasons and roles are fixed sets).

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Labels of one sample: fixed names, values from bounded sets.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, f64)>,
}

#[derive(Debug, Clone)]
struct Histogram {
    name: &'static str,
    help: &'static str,
    /// `(upper bound, observations in this bucket only)`.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

/// Metric families gathered for one scrape.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    families: Vec<Family>,
    histograms: Vec<Histogram>,
}

impl Snapshot {
    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return &mut self.families[i];
        }
        self.families.push(Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    /// Adds a counter sample; `name` without `_total` (the encoder appends it).
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.family(name, help, Kind::Counter)
            .samples
            .push((labels, v));
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.family(name, help, Kind::Gauge)
            .samples
            .push((labels, v));
    }

    /// Adds a histogram from cumulative `(upper bound, count at or under it)` buckets.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        cumulative: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        let mut prev = 0;
        let buckets = cumulative
            .iter()
            .map(|&(le, c)| {
                let own = c.saturating_sub(prev);
                prev = c;
                (le, own)
            })
            .collect();
        self.histograms.push(Histogram {
            name,
            help,
            buckets,
            count,
            sum,
        });
    }

    /// Adds `other`'s families (samples of a family both have are appended).
    pub fn merge(&mut self, other: Snapshot) {
        for f in other.families {
            let kind = f.kind;
            self.family(f.name, f.help, kind).samples.extend(f.samples);
        }
        self.histograms.extend(other.histograms);
    }

    /// How many samples the snapshot holds (histogram buckets not counted).
    pub fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    pub(crate) fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let ty = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, ty)?;
            match f.samples.as_slice() {
                [(labels, v)] if labels.is_empty() => encode_value(f.kind, *v, metric)?,
                samples => {
                    for (labels, v) in samples {
                        encode_value(f.kind, *v, metric.encode_family(labels)?)?;
                    }
                }
            }
        }
        for h in &self.histograms {
            let mut metric =
                encoder.encode_descriptor(h.name, h.help, None, MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

fn encode_value(
    kind: Kind,
    v: f64,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match kind {
        // Whole counts print as integers.
        Kind::Counter if v.fract() == 0.0 && (0.0..9.0e15).contains(&v) => {
            ConstCounter::new(v as u64).encode(encoder)
        }
        Kind::Counter => ConstCounter::new(v).encode(encoder),
        Kind::Gauge if v.fract() == 0.0 && v.abs() < 9.0e15 => {
            ConstGauge::new(v as i64).encode(encoder)
        }
        Kind::Gauge => ConstGauge::new(v).encode(encoder),
    }
}
