//! The synchronous heart shared by `run` and `demo`: message bytes in,
//! window rows / late records / rejections out, plus per-partition
//! checkpoints. No I/O; the caller decides when a [`Batch`] leaves.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::engine::batch::{Batch, Counts, Footprint, LateRecord, OutRow, RejectRecord};
use crate::engine::event::{event_key, Interner};
use crate::engine::parse::{parse_event, Reject, RejectReason};
use crate::engine::window::{Checkpoint, Observation, Outcome, PartitionWindows, WindowConfig, WindowRow};

/// Most distinct campaign ids kept in memory.
pub const MAX_CAMPAIGNS: usize = 100_000;

pub struct Processor {
    cfg: WindowConfig,
    max_event_bytes: usize,
    interner: Interner,
    partitions: BTreeMap<i32, PartitionWindows>,
    /// Checkpoints handed out with the last batch, to tell whether there is
    /// anything new to commit.
    sent: BTreeMap<i32, Checkpoint>,
    batch: Batch,
    scratch: Vec<WindowRow>,
    /// Per partition: when the watermark first passed a window end since
    /// the last batch, i.e. since when fired rows have been waiting.
    due_since: HashMap<i32, Instant>,
    /// Events by fate since the last [`take_counts`](Processor::take_counts)
    /// or [`take_batch`](Processor::take_batch): plain integers, handed to
    /// the caller as data (an atomic add per event and counter, a locked
    /// instruction that also drains the store buffer, cost about 15 % of
    /// the engine's time).
    counts: Counts,
}

impl Processor {
    pub fn new(cfg: WindowConfig, max_event_bytes: usize) -> Self {
        Processor {
            cfg,
            max_event_bytes,
            interner: Interner::with_capacity_limit(MAX_CAMPAIGNS),
            partitions: BTreeMap::new(),
            sent: BTreeMap::new(),
            batch: Batch::default(),
            scratch: Vec::new(),
            due_since: HashMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn has_partition(&self, p: i32) -> bool {
        self.partitions.contains_key(&p)
    }

    /// The next offset partition `p` expects, if it has seen any message.
    pub fn next_offset(&self, p: i32) -> Option<i64> {
        self.partitions.get(&p).and_then(|w| w.next_offset())
    }

    /// Partition `p`'s watermark (max event time seen), µs.
    pub fn watermark(&self, p: i32) -> Option<i64> {
        self.partitions.get(&p).and_then(|w| w.watermark())
    }

    /// Starts tracking partition `p`, from a committed checkpoint if any.
    pub fn init_partition(&mut self, p: i32, cp: Option<Checkpoint>) {
        let w = match cp {
            Some(cp) => PartitionWindows::restore(self.cfg, &cp),
            None => PartitionWindows::new(self.cfg),
        };
        if let Some(cp) = cp {
            self.sent.insert(p, cp);
        }
        self.partitions.insert(p, w);
    }

    /// Forgets partition `p` (revoked): its new owner rebuilds its open
    /// windows from the last commit.
    pub fn drop_partition(&mut self, p: i32) {
        self.partitions.remove(&p);
        self.sent.remove(&p);
        self.due_since.remove(&p);
        self.batch.commits.retain(|(q, _)| *q != p);
    }

    /// Processes one message of partition `p` (which must be initialised).
    /// `message_time_us` is the message's own timestamp (Kafka's CreateTime
    /// or LogAppendTime; `None` when it has none): an event more than
    /// `max_future` ahead of it is rejected (`future_timestamp`). Both values
    /// are stored with the message, so a replay decides the same, and no gap
    /// between events, however long, makes a valid event look "future".
    /// The key only travels with a rejection, to the dead-letter topic.
    pub fn process(&mut self, p: i32, offset: i64, message_time_us: Option<i64>, key: Option<&[u8]>, payload: &[u8]) {
        let Some(w) = self.partitions.get_mut(&p) else {
            debug_assert!(false, "partition {p} not initialised");
            return;
        };
        if w.next_offset().is_some_and(|next| offset < next) {
            // Redelivered below the resume point: already accounted for.
            return;
        }
        self.counts.consumed += 1;
        let ev = match parse_event(payload, self.max_event_bytes) {
            Ok(ev) => ev,
            Err(rej) => {
                w.skip(offset);
                Self::reject(&mut self.batch, &mut self.counts, RejectRecord::new(p, offset, key, rej, payload));
                return;
            }
        };
        if let Some(t) = message_time_us.filter(|&t| ev.timestamp_us > t.saturating_add(self.cfg.max_future_us)) {
            w.skip(offset);
            let rej = Reject {
                reason: RejectReason::FutureTimestamp,
                detail: format!(
                    "event time {} is more than {} s ahead of its message timestamp {}",
                    crate::engine::time::format_event_timestamp(ev.timestamp_us),
                    self.cfg.max_future_us / 1_000_000,
                    crate::engine::time::format_event_timestamp(t)
                ),
            };
            Self::reject(&mut self.batch, &mut self.counts, RejectRecord::new(p, offset, key, rej, payload));
            return;
        }
        let Some(cid) = self.interner.intern(&ev.campaign_id) else {
            w.skip(offset);
            let rej = Reject {
                reason: RejectReason::TooManyCampaigns,
                detail: format!("more than {MAX_CAMPAIGNS} campaign ids"),
            };
            Self::reject(&mut self.batch, &mut self.counts, RejectRecord::new(p, offset, key, rej, payload));
            return;
        };
        let o = Observation {
            ts: ev.timestamp_us,
            campaign: cid,
            ad_format: ev.ad_format,
            event_type: ev.event_type,
            revenue_micros: ev.revenue_micros,
            id: event_key(&ev.event_id),
        };
        let epoch = w.fire_epoch();
        let outcome = w.observe(offset, &o, &mut self.scratch);
        if w.fire_epoch() != epoch {
            self.due_since.entry(p).or_insert_with(Instant::now);
        }
        match outcome {
            Outcome::Counted | Outcome::Updated => {
                self.counts.counted += 1;
                self.counts.by_kind[o.ad_format.index()][o.event_type.index()] += 1;
                self.counts.late_updates += u64::from(outcome == Outcome::Updated);
            }
            Outcome::Duplicate => {
                self.counts.duplicates += 1;
            }
            Outcome::AlreadyEmitted => {
                self.counts.replay_skipped += 1;
            }
            Outcome::Late { window_start_us, watermark_us } => {
                self.counts.late += 1;
                self.batch.late.push(LateRecord {
                    partition: p,
                    offset,
                    event_id: ev.event_id.into_owned(),
                    event_time_us: ev.timestamp_us,
                    window_start_us,
                    campaign: self.interner.name(cid).clone(),
                    ad_format: ev.ad_format,
                    event_type: ev.event_type,
                    revenue_micros: ev.revenue_micros,
                    watermark_us,
                    reason: "window_closed",
                });
            }
        }
        // Rows emitted here are final rows, due the moment the watermark
        // closed their window: now.
        move_rows(&mut self.batch, p, &mut self.scratch, None);
    }

    fn reject(batch: &mut Batch, counts: &mut Counts, record: RejectRecord) {
        counts.rejected[record.reason.index()] += 1;
        batch.rejected.push(record);
    }

    /// Fires every window of partition `p` now (the partition has been idle
    /// for `--idle-timeout`): its current rows go out with the next batch.
    pub fn fire_partition(&mut self, p: i32) {
        if let Some(w) = self.partitions.get_mut(&p) {
            w.fire_all();
        }
    }

    /// Fires every window of every partition, for shutdown and drain.
    pub fn fire_all(&mut self) {
        for w in self.partitions.values_mut() {
            w.fire_all();
        }
    }

    /// Whether a flush would write or commit anything.
    pub fn pending(&self) -> bool {
        self.batch.has_output()
            || self.partitions.values().any(|w| w.has_updates())
            || self.partitions.iter().any(|(p, w)| w.checkpoint().is_some_and(|cp| self.sent.get(p) != Some(&cp)))
    }

    /// The counters gathered since the last call (or batch), for a caller
    /// that reports progress between batches.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Windows in memory over all partitions, and the event ids held for
    /// deduplication with their heap bytes: what the state's memory is made
    /// of (the scaling bench samples it between batches too).
    pub fn footprint(&self) -> Footprint {
        let open_windows = self.partitions.values().map(|w| w.open_windows()).sum();
        let (dedup_ids, dedup_bytes) =
            self.partitions.values().map(|w| w.dedup_footprint()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let min_watermark_us = self.partitions.values().filter_map(|w| w.watermark()).min();
        Footprint { open_windows, dedup_ids, dedup_bytes, min_watermark_us }
    }

    /// Takes the output so far, with the checkpoint of every partition.
    pub fn take_batch(&mut self) -> Batch {
        let now = Instant::now();
        for (&p, w) in self.partitions.iter_mut() {
            w.emit_updates(&mut self.scratch);
            let since = self.due_since.remove(&p).unwrap_or(now);
            move_rows(&mut self.batch, p, &mut self.scratch, Some(since));
        }
        // Rows stay in emission order: ClickHouse does not care, and the
        // consoles sort what they print (OutRow::display_key).
        let mut batch = std::mem::take(&mut self.batch);
        batch.names = self.interner.names();
        batch.commits = self.partitions.iter().filter_map(|(p, w)| w.checkpoint().map(|cp| (*p, cp))).collect();
        for (p, cp) in &batch.commits {
            self.sent.insert(*p, *cp);
        }
        batch.counts = self.take_counts();
        batch.footprint = self.footprint();
        batch
    }
}

/// Moves emitted window rows of partition `p` into the batch (campaigns stay
/// ids; the batch carries the names), recording when they became due
/// (`None`: now).
fn move_rows(batch: &mut Batch, p: i32, rows: &mut Vec<WindowRow>, due: Option<Instant>) {
    if rows.is_empty() {
        return;
    }
    batch.due.push((due.unwrap_or_else(Instant::now), rows.len() as u32));
    for row in rows.drain(..) {
        batch.rows.push(OutRow { partition: p, row });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, ts: &str, fmt: &str, ty: &str, rev: &str) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","timestamp":"{ts}","campaign_id":"C001","ad_format":"{fmt}","event_type":"{ty}","revenue":{rev}}}"#).into_bytes()
    }

    #[test]
    fn every_message_ends_up_counted_late_or_rejected() {
        let mut p = Processor::new(WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000), 4096);
        p.init_partition(0, None);
        let msgs: Vec<Vec<u8>> = vec![
            ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
            b"garbage".to_vec(),
            ev("b", "2025-12-10T00:00:16", "banner", "click", "0.05"),
            ev("c", "2025-12-10T00:00:02", "banner", "impression", "0.0"), // late: watermark 00:00:16
            ev("d", "2025-12-10T03:00:00", "banner", "impression", "0.0"), // far future
            Vec::new(),
            ev("b", "2025-12-10T00:00:16", "banner", "click", "0.05"), // redelivered
        ];
        // Produced at 00:00:20: "d" is 3 h ahead of its message, the others
        // are behind it.
        let produced = Some(1_765_324_820_000_000);
        for (i, m) in msgs.iter().enumerate() {
            p.process(0, i as i64, produced, None, m);
        }
        let b = p.take_batch();
        assert_eq!(b.rows.len(), 1, "window [00:00:00, 00:00:10) closed");
        assert_eq!(b.due.iter().map(|d| d.1 as usize).sum::<usize>(), 1, "every row is timed once");
        assert_eq!(b.rows[0].row.totals.impressions, 1);
        assert_eq!(b.late.len(), 1);
        assert_eq!(b.late[0].event_id, "c");
        let reasons: Vec<_> = b.rejected.iter().map(|r| (r.offset, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![(1, RejectReason::InvalidJson), (4, RejectReason::FutureTimestamp), (5, RejectReason::EmptyMessage)]
        );
        let c = b.counts;
        assert_eq!(c.consumed, 7);
        assert_eq!(c.duplicates, 1);
        assert_eq!((c.counted, c.late, c.rejected_total()), (2, 1, 3));
        assert_eq!(c.rejected[RejectReason::FutureTimestamp.index()], 1);
        assert_eq!(c.by_kind[0], [1, 1], "banner: one impression, one click");
        assert_eq!(c.counted + c.late + c.rejected_total() + c.duplicates, 7);
        assert_eq!(
            b.commits,
            vec![(
                0,
                Checkpoint {
                    offset: 2,
                    max_ts_at_offset: Some(1_765_324_801_000_000),
                    closed_max_ts: Some(1_765_324_816_000_000)
                }
            )]
        );
        assert!(!p.pending(), "nothing new since the batch");
        p.process(0, 2, produced, None, &msgs[2]);
        assert!(!p.pending(), "a redelivered offset is ignored");
        p.fire_partition(0);
        assert!(p.pending(), "an idle partition's open window goes out");
        let b = p.take_batch();
        assert_eq!(b.rows.len(), 1);
        assert_eq!(b.due.len(), 1, "the forced row is timed from its emission");
        assert_eq!(b.rows[0].row.totals.clicks, 1);
        assert!(!b.rows[0].row.is_final);
        assert_eq!(b.counts.consumed, 0, "the redelivered offset was not processed again");
        assert!(!p.pending(), "nothing new after the forced batch");
    }
}
