//! Summaries, which the `prometheus` crate lacks: a cumulative count and sum, and the quantiles
//! 0.7, 0.95 and 0.99 (Pitaya's objectives) of the observations of the last ten minutes, as Go's
//! client computes them (`MaxAge` 10 min in 5 age buckets).
//!
//! Observations are counted into log-linear buckets (16 per power of two: a quantile is within
//! about 3 % of the true value), one set per age bucket; a quantile merges the live age buckets.
//! Memory is bounded per series (5 × 1025 counters).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kiwano_metrics::Family;
use parking_lot::Mutex;
use prometheus::core::{Collector as PromCollector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};

/// Pitaya's objectives.
pub const QUANTILES: [f64; 3] = [0.7, 0.95, 0.99];

/// How far back the quantiles look.
const MAX_AGE: Duration = Duration::from_secs(600);
/// Age buckets: the window moves in steps of `MAX_AGE / AGE_BUCKETS`.
const AGE_BUCKETS: usize = 5;
/// Sub-buckets per power of two.
const SUB: usize = 16;
/// Buckets: one for values under 1, then 64 powers of two.
const SLOTS: usize = 1 + 64 * SUB;

/// The bucket of a value.
fn slot(v: f64) -> usize {
    if v.is_nan() || v < 1.0 {
        return 0;
    }
    let e = v.log2().floor().min(63.0);
    let base = e.exp2();
    let sub = (((v / base) - 1.0) * SUB as f64).floor().clamp(0.0, (SUB - 1) as f64);
    1 + e as usize * SUB + sub as usize
}

/// The value a bucket stands for (its middle).
fn value(slot: usize) -> f64 {
    if slot == 0 {
        return 0.0;
    }
    let (e, sub) = ((slot - 1) / SUB, (slot - 1) % SUB);
    (e as f64).exp2() * (1.0 + (sub as f64 + 0.5) / SUB as f64)
}

struct Window {
    buckets: Vec<Box<[u32]>>,
    /// When the newest age bucket started.
    rotated: Instant,
    newest: usize,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self { buckets: (0..AGE_BUCKETS).map(|_| vec![0u32; SLOTS].into_boxed_slice()).collect(), rotated: now, newest: 0 }
    }

    /// Drops the age buckets older than the window.
    fn rotate(&mut self, now: Instant) {
        let step = MAX_AGE / AGE_BUCKETS as u32;
        let mut steps = 0;
        while now.duration_since(self.rotated) >= step && steps < AGE_BUCKETS {
            self.newest = (self.newest + 1) % AGE_BUCKETS;
            self.buckets[self.newest].fill(0);
            self.rotated += step;
            steps += 1;
        }
        if now.duration_since(self.rotated) >= step {
            self.rotated = now;
        }
    }

    fn observe(&mut self, v: f64, now: Instant) {
        self.rotate(now);
        let c = &mut self.buckets[self.newest][slot(v)];
        *c = c.saturating_add(1);
    }

    /// The quantiles of the window; NaN when it is empty (as Go reports them).
    fn quantiles(&mut self, now: Instant) -> [f64; 3] {
        self.rotate(now);
        let mut merged = vec![0u64; SLOTS];
        for b in &self.buckets {
            for (m, c) in merged.iter_mut().zip(b.iter()) {
                *m += u64::from(*c);
            }
        }
        let total: u64 = merged.iter().sum();
        QUANTILES.map(|q| {
            if total == 0 {
                return f64::NAN;
            }
            let rank = (q * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in merged.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return value(i);
                }
            }
            value(SLOTS - 1)
        })
    }
}

struct Series {
    labels: Box<[String]>,
    count: u64,
    sum: f64,
    window: Window,
}

/// One summary family's series, by label values.
pub struct SummaryVec {
    family: &'static Family,
    const_labels: Vec<(String, String)>,
    /// By a hash of the label values; colliding series share the vector.
    series: Mutex<HashMap<u64, Vec<Series>>>,
    desc: Desc,
}

/// A hash of label values: not exposed to peers' choice of values alone (a random seed per
/// process), and quick (foldhash).
fn hash(labels: &[&str]) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    SEED.get_or_init(foldhash::fast::RandomState::default).hash_one(labels)
}

impl SummaryVec {
    /// An empty family with `const_labels` on every series.
    ///
    /// # Panics
    /// Never for the catalogue's families: their names and labels are valid.
    pub fn new(family: &'static Family, const_labels: &HashMap<String, String>) -> Self {
        let mut consts: Vec<(String, String)> = const_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        consts.sort();
        let desc = Desc::new(family.name.into(), family.help.into(), family.labels.iter().map(|l| (*l).to_owned()).collect(), const_labels.clone())
            .unwrap_or_else(|e| panic!("summary {}: {e}", family.name));
        Self { family, const_labels: consts, series: Mutex::new(HashMap::new()), desc }
    }

    /// Observes `v` into the series of `labels`.
    pub fn observe(&self, labels: &[&str], v: f64) {
        if labels.len() != self.family.labels.len() {
            tracing::error!(metric = self.family.name, "metrics: {} label values for {} labels", labels.len(), self.family.labels.len());
            return;
        }
        let now = Instant::now();
        let mut all = self.series.lock();
        let chain = all.entry(hash(labels)).or_default();
        let i = match chain.iter().position(|s| s.labels.iter().map(String::as_str).eq(labels.iter().copied())) {
            Some(i) => i,
            None => {
                chain.push(Series { labels: labels.iter().map(|l| (*l).to_owned()).collect(), count: 0, sum: 0.0, window: Window::new(now) });
                chain.len() - 1
            }
        };
        let s = &mut chain[i];
        s.count += 1;
        s.sum += v;
        s.window.observe(v, now);
    }

    fn collect(&self) -> MetricFamily {
        let now = Instant::now();
        let mut family = MetricFamily::default();
        family.set_name(self.family.name.to_owned());
        family.set_help(self.family.help.to_owned());
        family.set_field_type(MetricType::SUMMARY);
        let mut all = self.series.lock();
        let mut metrics = Vec::new();
        for s in all.values_mut().flatten() {
            let mut pairs: Vec<(String, String)> = self.const_labels.clone();
            pairs.extend(self.family.labels.iter().map(|n| (*n).to_owned()).zip(s.labels.iter().cloned()));
            pairs.sort();
            let label = pairs
                .into_iter()
                .map(|(n, v)| {
                    let mut p = LabelPair::default();
                    p.set_name(n);
                    p.set_value(v);
                    p
                })
                .collect();
            let mut summary = Summary::default();
            summary.set_sample_count(s.count);
            summary.set_sample_sum(s.sum);
            summary.set_quantile(
                QUANTILES
                    .iter()
                    .zip(s.window.quantiles(now))
                    .map(|(q, v)| {
                        let mut quantile = Quantile::default();
                        quantile.set_quantile(*q);
                        quantile.set_value(v);
                        quantile
                    })
                    .collect(),
            );
            let mut metric = Metric::from_label(label);
            metric.set_summary(summary);
            metrics.push(metric);
        }
        family.set_metric(metrics);
        family
    }
}

/// A [`SummaryVec`] registered with a `prometheus::Registry`.
pub struct Collector(pub std::sync::Arc<SummaryVec>);

impl PromCollector for Collector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.0.collect()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_a_few_percent() {
        for v in [1.0, 3.0, 100.0, 12_345.0, 1e9, 7.5e12] {
            let got = value(slot(v));
            assert!((got - v).abs() / v < 0.04, "{v} -> {got}");
        }
        assert_eq!(slot(0.0), 0);
        assert_eq!(slot(f64::NAN), 0);
    }

    #[test]
    fn quantiles_follow_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        for v in 1..=100 {
            w.observe(f64::from(v) * 1000.0, t0);
        }
        let [q70, q95, q99] = w.quantiles(t0);
        for (got, want) in [(q70, 70_000.0), (q95, 95_000.0), (q99, 99_000.0)] {
            assert!((got - want).abs() / want < 0.05, "{got} vs {want}");
        }
        // Ten minutes later the window is empty again.
        assert!(w.quantiles(t0 + MAX_AGE + Duration::from_secs(1))[0].is_nan());
    }
}
