//! Counters shared by the consume loop, the sink task and the stats logger.
//! Plain atomics: the consume loop bumps them per event, so no locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::parse::RejectReason;

#[derive(Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub counted: AtomicU64,
    pub late: AtomicU64,
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

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|a| a.load(Relaxed)).sum()
    }

    /// One log line: `events in 1200 | counted 1195 | late 2 | rejected 3 (invalid_json 3) | ...`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "events in {} | counted {} | late {} | rejected {}",
            self.consumed.load(Relaxed),
            self.counted.load(Relaxed),
            self.late.load(Relaxed),
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
            " | replay-skipped {} | rows written {} in {} batches | write failures {} | last insert {} ms | commits {} | open windows {}",
            self.replay_skipped.load(Relaxed),
            self.rows_written.load(Relaxed),
            self.batches_written.load(Relaxed),
            self.write_failures.load(Relaxed),
            self.last_insert_ms.load(Relaxed),
            self.commits.load(Relaxed),
            self.open_windows.load(Relaxed),
        );
        let wm = self.min_watermark_us.load(Relaxed);
        if wm != i64::MIN {
            let _ = write!(s, " | watermark {}", crate::time::format_event_timestamp(wm));
        }
        s
    }
}
