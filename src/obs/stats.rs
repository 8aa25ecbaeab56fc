//! Counters shared by the consume loop, the sink task and the stats logger.
//! Plain atomics: the consume loop bumps them per event, so no locks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::batch::{Counts, Footprint};
use crate::engine::event::{AdFormat, EventType};
use crate::engine::parse::RejectReason;
use crate::obs::health::Health;

/// Per-partition figures, refreshed by the consume loop once a second (not
/// per event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionGauges {
    /// Messages between the next offset to process and the broker's high
    /// watermark (as of the last fetch response); `None` before either is
    /// known.
    pub lag: Option<i64>,
    /// The partition's watermark (see `engine::window`), µs.
    pub watermark_us: Option<i64>,
}

#[derive(Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub counted: AtomicU64,
    pub late: AtomicU64,
    /// Events counted into a window that had already fired (its rows were
    /// emitted again).
    pub late_updates: AtomicU64,
    /// Redelivered events (same event_id in the same window) not counted
    /// again.
    pub duplicates: AtomicU64,
    /// Event ids currently held for deduplication, and their heap bytes.
    pub dedup_ids: AtomicU64,
    pub dedup_bytes: AtomicU64,
    /// Messages behind the broker's high watermark, summed over the
    /// assigned partitions (from the last fetch responses).
    pub lag: AtomicU64,
    /// Replayed events of windows already final downstream (not an error:
    /// they are in those rows).
    pub replay_skipped: AtomicU64,
    pub rejected: [AtomicU64; RejectReason::ALL.len()],
    pub rows_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_failures: AtomicU64,
    /// Of `write_failures`, those ClickHouse refused for good (see
    /// `io::clickhouse::retry`): each one stops the pipeline.
    pub permanent_write_failures: AtomicU64,
    pub last_insert_ms: AtomicU64,
    pub commits: AtomicU64,
    /// Rejected messages acknowledged by the dead-letter topic.
    pub dlq_written: AtomicU64,
    pub open_windows: AtomicU64,
    /// Cells (window × key) held in memory.
    pub open_cells: AtomicU64,
    /// Campaign ids interned (in open windows of some partition), and
    /// campaigns held summed over partitions (see `engine::campaigns`).
    pub campaigns_interned: AtomicU64,
    pub campaigns_open: AtomicU64,
    /// Lowest partition watermark, µs (i64::MIN = none yet).
    pub min_watermark_us: AtomicI64,
    /// Events counted into windows, by [`AdFormat::index`] × [`EventType::index`].
    pub counted_by_kind: [[AtomicU64; EventType::ALL.len()]; AdFormat::ALL.len()],
    /// Assigned partitions' lag and watermark.
    pub partitions: Mutex<BTreeMap<i32, PartitionGauges>>,
    pub health: Health,
    /// Per written window row: from the moment it became due (the watermark
    /// passed its window's end, or its end + allowed lateness for a final
    /// row; a forced or late-update emission counts from its emission) to
    /// ClickHouse acknowledging the INSERT that carried it.
    pub visible_latency: LatencyHistogram,
}

/// Sub-buckets per power of two: values are kept within 1/8 (12.5 %).
const SUB_BITS: u32 = 3;
const BUCKETS: usize = 64 << SUB_BITS;

/// A lock-free log-linear histogram of durations in microseconds (8 buckets
/// per power of two), cheap enough to record from the sink task.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LatencyHistogram {
    fn index(us: u64) -> usize {
        if us < (1 << SUB_BITS) {
            return us as usize;
        }
        let msb = 63 - us.leading_zeros();
        let sub = (us >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (((msb - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < (1 << SUB_BITS) {
            return i;
        }
        let msb = (i >> SUB_BITS) + u64::from(SUB_BITS) - 1;
        let sub = i & ((1 << SUB_BITS) - 1);
        let low = (1u64 << msb) | (sub << (msb - u64::from(SUB_BITS)));
        low + (1u64 << (msb - u64::from(SUB_BITS))) - 1
    }

    pub fn record(&self, us: u64, n: u64) {
        self.buckets[Self::index(us).min(BUCKETS - 1)].fetch_add(n, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in µs, as the upper edge of its bucket;
    /// `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Some(Self::upper(i));
            }
        }
        None
    }
}

impl Stats {
    pub fn new() -> Self {
        let s = Stats::default();
        s.min_watermark_us.store(i64::MIN, Relaxed);
        s
    }

    /// Adds the engine's counters (plain data, handed out with each batch
    /// and once a second) to the shared atomics.
    pub fn add(&self, c: &Counts) {
        for (atomic, n) in [
            (&self.consumed, c.consumed),
            (&self.counted, c.counted),
            (&self.late_updates, c.late_updates),
            (&self.duplicates, c.duplicates),
            (&self.replay_skipped, c.replay_skipped),
            (&self.late, c.late),
        ]
        .into_iter()
        .chain(self.rejected.iter().zip(c.rejected))
        {
            if n > 0 {
                atomic.fetch_add(n, Relaxed);
            }
        }
        for (atomics, counts) in self.counted_by_kind.iter().zip(&c.by_kind) {
            for (atomic, &n) in atomics.iter().zip(counts) {
                if n > 0 {
                    atomic.fetch_add(n, Relaxed);
                }
            }
        }
    }

    /// What the engine's state is made of, as of its last batch.
    pub fn set_footprint(&self, f: &Footprint) {
        self.open_windows.store(f.open_windows as u64, Relaxed);
        self.open_cells.store(f.open_cells as u64, Relaxed);
        self.campaigns_interned.store(f.campaigns_interned as u64, Relaxed);
        self.campaigns_open.store(f.campaigns_open as u64, Relaxed);
        self.dedup_ids.store(f.dedup_ids as u64, Relaxed);
        self.dedup_bytes.store(f.dedup_bytes as u64, Relaxed);
        if let Some(wm) = f.min_watermark_us {
            self.min_watermark_us.store(wm, Relaxed);
        }
    }

    /// A sink write succeeded after `elapsed`.
    pub fn insert_done(&self, elapsed: Duration, rows: usize) {
        let ms = elapsed.as_millis() as u64;
        self.last_insert_ms.store(ms, Relaxed);
        self.rows_written.fetch_add(rows as u64, Relaxed);
        self.batches_written.fetch_add(1, Relaxed);
        self.health.clickhouse.ok();
    }

    /// Replaces the per-partition figures (revoked partitions disappear).
    pub fn set_partitions(&self, gauges: BTreeMap<i32, PartitionGauges>) {
        if let Ok(mut p) = self.partitions.lock() {
            *p = gauges;
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|a| a.load(Relaxed)).sum()
    }

    /// One log line: `events in 1200 | counted 1195 (updates 40) | late 2 |
    /// duplicates 1 | rejected 3 (invalid_json 3) | ...`.
    pub fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let mut s = format!(
            "events in {} | counted {} (late updates {}) | late {} | duplicates {} | rejected {}",
            g(&self.consumed),
            g(&self.counted),
            g(&self.late_updates),
            g(&self.late),
            g(&self.duplicates),
            self.rejected_total()
        );
        let by_reason: Vec<String> = RejectReason::ALL
            .iter()
            .filter_map(|r| {
                let n = self.rejected[r.index()].load(Relaxed);
                (n > 0).then(|| format!("{} {n}", r.as_str()))
            })
            .collect();
        if !by_reason.is_empty() {
            let _ = write!(s, " ({})", by_reason.join(", "));
        }
        let _ = write!(
            s,
            " | lag {} | rows written {} in {} batches | last insert {} ms | write failures {} | commits {} | \
             open windows {} | dedup ids {} ({:.1} MiB) | replay-skipped {}",
            g(&self.lag),
            g(&self.rows_written),
            g(&self.batches_written),
            g(&self.last_insert_ms),
            match g(&self.permanent_write_failures) {
                0 => g(&self.write_failures).to_string(),
                p => format!("{} ({p} permanent)", g(&self.write_failures)),
            },
            g(&self.commits),
            g(&self.open_windows),
            g(&self.dedup_ids),
            g(&self.dedup_bytes) as f64 / (1024.0 * 1024.0),
            g(&self.replay_skipped),
        );
        if let (Some(p50), Some(p99)) = (self.visible_latency.quantile(0.5), self.visible_latency.quantile(0.99)) {
            let _ = write!(
                s,
                " | due-to-visible p50 {:.1} ms p99 {:.1} ms over {} rows",
                p50 as f64 / 1000.0,
                p99 as f64 / 1000.0,
                self.visible_latency.count()
            );
        }
        let wm = self.min_watermark_us.load(Relaxed);
        if wm != i64::MIN {
            let _ = write!(s, " | watermark {}", crate::engine::time::format_event_timestamp(wm));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_values_within_an_eighth() {
        for v in (0..5000u64).chain([65_535, 1_000_000, 123_456_789, u64::MAX / 2]) {
            let i = LatencyHistogram::index(v);
            let up = LatencyHistogram::upper(i);
            assert!(up >= v, "{v}: bucket {i} ends at {up}");
            assert!(up - v <= v / 8, "{v}: bucket {i} ends at {up}");
            assert!(i == 0 || LatencyHistogram::upper(i - 1) < v, "{v}: bucket {i} is the first that holds it");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        h.record(1_000, 98);
        h.record(500_000, 2);
        let p50 = h.quantile(0.5).unwrap();
        assert!((1_000..=1_125).contains(&p50), "{p50}");
        assert!(h.quantile(0.98).unwrap() < 2_000);
        assert!(h.quantile(0.99).unwrap() >= 500_000);
        assert_eq!(h.count(), 100);
    }
}
