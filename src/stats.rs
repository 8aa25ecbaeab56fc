//! Counters shared by the consume loop, the sink task and the stats logger.
//! Plain atomics: the consume loop bumps them per event, so no locks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::event::{AdFormat, EventType};
use crate::health::Health;
use crate::parse::RejectReason;

/// Per-partition figures, refreshed by the consume loop once a second (not
/// per event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionGauges {
    /// Messages between the next offset to process and the broker's high
    /// watermark (as of the last fetch response); `None` before either is
    /// known.
    pub lag: Option<i64>,
    /// The partition's watermark (max event time seen), µs.
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
    pub last_insert_ms: AtomicU64,
    pub commits: AtomicU64,
    /// Rejected messages acknowledged by the dead-letter topic.
    pub dlq_written: AtomicU64,
    pub open_windows: AtomicU64,
    /// Lowest partition watermark, µs (i64::MIN = none yet).
    pub min_watermark_us: AtomicI64,
    /// Events counted into windows, by [`AdFormat::index`] × [`EventType::index`].
    pub counted_by_kind: [[AtomicU64; EventType::ALL.len()]; AdFormat::ALL.len()],
    /// Assigned partitions' lag and watermark.
    pub partitions: Mutex<BTreeMap<i32, PartitionGauges>>,
    /// Total time spent in successful sink writes, µs (with `batches_written`,
    /// the mean; the distribution goes to the metrics histogram).
    pub insert_us_total: AtomicU64,
    pub health: Health,
}

impl Stats {
    pub fn new() -> Self {
        let s = Stats::default();
        s.min_watermark_us.store(i64::MIN, Relaxed);
        s
    }

    pub fn reject(&self, r: RejectReason) {
        self.rejected[r.index()].fetch_add(1, Relaxed);
    }

    /// One event counted into a window.
    pub fn count_kind(&self, f: AdFormat, t: EventType) {
        self.counted_by_kind[f.index()][t.index()].fetch_add(1, Relaxed);
    }

    /// A sink write succeeded after `elapsed`.
    pub fn insert_done(&self, elapsed: Duration, rows: usize) {
        let ms = elapsed.as_millis() as u64;
        self.last_insert_ms.store(ms, Relaxed);
        self.insert_us_total.fetch_add(elapsed.as_micros() as u64, Relaxed);
        self.rows_written.fetch_add(rows as u64, Relaxed);
        self.batches_written.fetch_add(1, Relaxed);
        crate::metrics::record_insert(elapsed);
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
            g(&self.write_failures),
            g(&self.commits),
            g(&self.open_windows),
            g(&self.dedup_ids),
            g(&self.dedup_bytes) as f64 / (1024.0 * 1024.0),
            g(&self.replay_skipped),
        );
        let wm = self.min_watermark_us.load(Relaxed);
        if wm != i64::MIN {
            let _ = write!(s, " | watermark {}", crate::time::format_event_timestamp(wm));
        }
        s
    }
}
