//! The synchronous heart shared by `run` and `demo`: message bytes in,
//! window rows / late records / rejections out, plus per-partition
//! checkpoints. No I/O; the caller decides when a [`Batch`] leaves.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::engine::batch::{Batch, Counts, Footprint, LateRecord, OutRow, RejectRecord};
use crate::engine::campaigns::{Admission, PartitionCampaigns, MAX_CAMPAIGNS_PER_WINDOW, MAX_LIVE_CAMPAIGNS};
use crate::engine::event::{event_key, AdFormat, Country, Device, Interner};
use crate::engine::parse::{parse_event, Reject, RejectReason};
use crate::engine::rollup::{Dims, Rollup};
use crate::engine::window::{
    Checkpoint, Observation, Outcome, PartitionWindows, Seed, Totals, WindowConfig, WindowRow,
};

pub struct Processor {
    cfg: WindowConfig,
    rollups: std::sync::Arc<[Rollup]>,
    rollup_names: std::sync::Arc<[String]>,
    max_event_bytes: usize,
    interner: Interner,
    /// Most distinct campaigns per base window and partition (see
    /// [`crate::engine::campaigns`]).
    campaign_limit: usize,
    /// The window sizes of the rollups that keep campaigns, and the base
    /// window's: a campaign is held until its windows of all these sizes
    /// have closed.
    campaign_spans_us: Vec<i64>,
    partitions: BTreeMap<i32, PartitionWindows>,
    campaigns: BTreeMap<i32, PartitionCampaigns>,
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
    /// A processor with the default rollups ([`Rollup::defaults`]).
    pub fn new(cfg: WindowConfig, max_event_bytes: usize) -> Self {
        Self::with_rollups(cfg, Rollup::defaults(cfg.size_us), max_event_bytes)
            .unwrap_or_else(|e| unreachable!("the default rollups are valid: {e}"))
    }

    /// A processor aggregating `rollups`: at least one, none twice, each
    /// window size a whole multiple of the base window `cfg.size_us` (the
    /// base window decides lateness for all of them, so a shorter or
    /// misaligned window could close while an event for it is on time).
    pub fn with_rollups(cfg: WindowConfig, rollups: Vec<Rollup>, max_event_bytes: usize) -> Result<Self, String> {
        check_rollups(&rollups, cfg.size_us)?;
        let mut campaign_spans_us: Vec<i64> =
            rollups.iter().filter(|r| r.dims.contains(Dims::CAMPAIGN)).map(|r| r.size_us).collect();
        campaign_spans_us.push(cfg.size_us);
        campaign_spans_us.sort_unstable();
        campaign_spans_us.dedup();
        Ok(Processor {
            cfg,
            rollup_names: rollups.iter().map(Rollup::name).collect(),
            rollups: rollups.into(),
            max_event_bytes,
            interner: Interner::with_capacity_limit(MAX_LIVE_CAMPAIGNS),
            campaign_limit: MAX_CAMPAIGNS_PER_WINDOW,
            campaign_spans_us,
            partitions: BTreeMap::new(),
            campaigns: BTreeMap::new(),
            sent: BTreeMap::new(),
            batch: Batch::default(),
            scratch: Vec::new(),
            due_since: HashMap::new(),
            counts: Counts::default(),
        })
    }

    /// The window geometry.
    pub fn config(&self) -> WindowConfig {
        self.cfg
    }

    /// The same with at most `limit` distinct campaigns per base window and
    /// partition (tests; the default is [`MAX_CAMPAIGNS_PER_WINDOW`]).
    pub fn with_campaign_limit(mut self, limit: usize) -> Self {
        self.campaign_limit = limit;
        self
    }

    /// The rollups this processor aggregates, in row order.
    pub fn rollups(&self) -> &[Rollup] {
        &self.rollups
    }

    pub fn has_partition(&self, p: i32) -> bool {
        self.partitions.contains_key(&p)
    }

    /// The next offset partition `p` expects, if it has seen any message.
    pub fn next_offset(&self, p: i32) -> Option<i64> {
        self.partitions.get(&p).and_then(|w| w.next_offset())
    }

    /// Partition `p`'s watermark (see [`crate::engine::window`]), µs.
    pub fn watermark(&self, p: i32) -> Option<i64> {
        self.partitions.get(&p).and_then(|w| w.watermark())
    }

    /// Starts tracking partition `p`, from a committed checkpoint if any.
    pub fn init_partition(&mut self, p: i32, cp: Option<Checkpoint>) {
        let w = match cp {
            Some(cp) => PartitionWindows::restore(self.cfg, &self.rollups, &cp),
            None => PartitionWindows::new(self.cfg, &self.rollups),
        };
        if let Some(cp) = cp {
            self.sent.insert(p, cp);
        }
        self.partitions.insert(p, w);
        if let Some(mut c) = self.campaigns.insert(p, PartitionCampaigns::default()) {
            c.release_all(&mut self.interner);
        }
    }

    /// The base-size rollup whose rows can seed every longer one at a
    /// restart (its dimensions contain all of theirs), and its name; `None`
    /// without longer rollups or without such a rollup.
    pub fn seed_source(&self) -> Option<String> {
        let mut long = self.rollups.iter().filter(|r| r.size_us > self.cfg.size_us).peekable();
        long.peek()?;
        let need = long.fold(crate::engine::Dims::default(), |d, r| d.union(r.dims));
        self.rollups
            .iter()
            .filter(|r| r.size_us == self.cfg.size_us && r.dims.contains(need))
            .min_by_key(|r| r.dims.count())
            .map(Rollup::name)
    }

    /// Starts tracking partition `p` from `cp.offset` with its longer
    /// windows seeded from `rows`, the final rows of [`seed_source`]
    /// downstream (see [`PartitionWindows::restore_seeded`]). Returns
    /// false, changing nothing, when that cannot be done exactly (no
    /// `base_at` in the checkpoint, a value it does not know, the campaign
    /// limit): the caller then replays from `cp.resume_offset`.
    ///
    /// [`seed_source`]: Self::seed_source
    pub fn init_partition_seeded(&mut self, p: i32, cp: Checkpoint, rows: &[SeedRow<'_>]) -> bool {
        let mut seeds = Vec::with_capacity(rows.len());
        // The seeded campaigns are held, like counted ones, until every
        // window a seed went into has closed (see `engine::campaigns`).
        let mut held = PartitionCampaigns::default();
        let lateness = self.cfg.allowed_lateness_us;
        for r in rows {
            // A dimension the source leaves out (`''`) is one no longer
            // rollup keeps: any value does.
            let (Some(ad_format), Some(country), Some(device)) = (
                if r.ad_format.is_empty() { Some(AdFormat::ALL[0]) } else { AdFormat::parse(r.ad_format) },
                if r.country.is_empty() { Some(Country::ALL[0]) } else { Country::parse(r.country) },
                if r.device.is_empty() { Some(Device::ALL[0]) } else { Device::parse(r.device) },
            ) else {
                held.release_all(&mut self.interner);
                return false;
            };
            let Some(campaign) = self.interner.intern(r.campaign) else {
                held.release_all(&mut self.interner);
                return false;
            };
            let start = r.base_start_us;
            let end = self.campaign_spans_us.iter().map(|&s| start.div_euclid(s) * s + s).max().unwrap_or(start);
            held.hold(campaign, end + lateness, &mut self.interner);
            seeds.push(Seed {
                base_start_us: r.base_start_us,
                campaign,
                ad_format,
                country,
                device,
                totals: r.totals,
                counted_through: r.counted_through,
            });
        }
        let Some(w) = PartitionWindows::restore_seeded(self.cfg, &self.rollups, &cp, seeds) else {
            held.release_all(&mut self.interner);
            return false;
        };
        self.sent.insert(p, cp);
        self.partitions.insert(p, w);
        if let Some(mut old) = self.campaigns.insert(p, held) {
            old.release_all(&mut self.interner);
        }
        true
    }

    /// Forgets partition `p` (revoked): its new owner rebuilds its open
    /// windows from the last commit.
    pub fn drop_partition(&mut self, p: i32) {
        self.partitions.remove(&p);
        if let Some(mut c) = self.campaigns.remove(&p) {
            c.release_all(&mut self.interner);
        }
        self.sent.remove(&p);
        self.due_since.remove(&p);
        self.batch.commits.retain(|(q, _)| *q != p);
    }

    /// Processes one message of partition `p` (which must be initialised).
    /// `message_time_us` is the message's own timestamp (Kafka's CreateTime
    /// or LogAppendTime; `None` when it has none): an event more than
    /// `max_future` ahead of it (without one: of the partition's watermark)
    /// is rejected (`future_timestamp`). Both values
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
        // Before the restored commit: read again only for the longer
        // windows; rejections and late events there are already written
        // (and in the dead-letter topic), so they are not written again.
        let replaying = w.replaying(offset);
        let ev = match parse_event(payload, self.max_event_bytes) {
            Ok(ev) => ev,
            Err(rej) => {
                w.skip(offset);
                let record = || RejectRecord::new(p, offset, key, rej, payload);
                Self::reject_unless_replaying(&mut self.batch, &mut self.counts, replaying, record);
                return;
            }
        };
        let max_future_us = self.cfg.max_future_us;
        // A message without a timestamp is measured against its partition's
        // watermark instead (a function of the messages before it, so a
        // replay decides the same): otherwise one such event years ahead
        // would keep its window, and the checkpoint, in memory for good.
        let (reference, what) = match message_time_us {
            Some(t) => (Some(t), "its message timestamp"),
            None => (w.watermark(), "its partition's watermark (the message has no timestamp)"),
        };
        if let Some(t) = reference.filter(|&t| ev.timestamp_us > t.saturating_add(max_future_us)) {
            w.skip(offset);
            let record = || {
                let detail = format!(
                    "event time {} is more than {} s ahead of {what} {}",
                    crate::engine::time::format_event_timestamp(ev.timestamp_us),
                    max_future_us / 1_000_000,
                    crate::engine::time::format_event_timestamp(t)
                );
                RejectRecord::new(p, offset, key, Reject { reason: RejectReason::FutureTimestamp, detail }, payload)
            };
            Self::reject_unless_replaying(&mut self.batch, &mut self.counts, replaying, record);
            return;
        }
        let Some(cid) = self.interner.intern(&ev.campaign_id) else {
            w.skip(offset);
            let record = || {
                let detail = format!(
                    "more than {MAX_LIVE_CAMPAIGNS} campaign ids in open windows over all partitions (at most {} per base window and partition)",
                    self.campaign_limit
                );
                RejectRecord::new(p, offset, key, Reject { reason: RejectReason::TooManyCampaigns, detail }, payload)
            };
            Self::reject_unless_replaying(&mut self.batch, &mut self.counts, replaying, record);
            return;
        };
        // The campaign limit and the campaign's reference, for an event
        // whose base window is open (one in a closed window is late).
        let base_start = self.cfg.window_start(ev.timestamp_us);
        let lateness = self.cfg.allowed_lateness_us;
        let base_open = w.watermark().is_none_or(|wm| base_start + self.cfg.size_us + lateness > wm);
        let Some(campaigns) = self.campaigns.get_mut(&p) else {
            debug_assert!(false, "partition {p} has no campaigns");
            return;
        };
        // A late event (its base window closed) is neither admitted nor held.
        let admission = base_open.then(|| campaigns.admit(cid, base_start, self.campaign_limit));
        if admission == Some(Admission::Full) {
            self.interner.release_if_unused(cid);
            w.skip(offset);
            let limit = self.campaign_limit;
            let record = || {
                let detail = format!(
                    "more than {limit} campaigns in the base window starting at {} of partition {p}",
                    crate::engine::time::format_event_timestamp(base_start)
                );
                RejectRecord::new(p, offset, key, Reject { reason: RejectReason::TooManyCampaigns, detail }, payload)
            };
            Self::reject_unless_replaying(&mut self.batch, &mut self.counts, replaying, record);
            return;
        }
        debug_assert!(
            admission != Some(Admission::Again) || campaigns.is_held(cid),
            "held since its window's first event"
        );
        if admission == Some(Admission::Admitted) {
            // The latest end of its windows (a longer window need not
            // end later: 40 s and 60 s windows are both epoch-aligned).
            let ts = ev.timestamp_us;
            let end = self.campaign_spans_us.iter().map(|&s| ts.div_euclid(s) * s + s).max().unwrap_or(ts);
            let until = end + lateness;
            campaigns.hold(cid, until, &mut self.interner);
        }
        let o = Observation {
            ts: ev.timestamp_us,
            campaign: cid,
            ad_format: ev.ad_format,
            country: ev.country,
            device: ev.device,
            event_type: ev.event_type,
            revenue_micros: ev.revenue_micros,
            id: event_key(&ev.event_id),
            msg_ts: message_time_us,
        };
        let epoch = w.fire_epoch();
        let wm_before = w.watermark();
        let outcome = w.observe(offset, &o, &mut self.scratch);
        if w.fire_epoch() != epoch {
            self.due_since.entry(p).or_insert_with(Instant::now);
        }
        if let Some(wm) = w.watermark().filter(|_| w.watermark() != wm_before) {
            let base_close = |start: i64| start + self.cfg.size_us + lateness;
            campaigns.expire(wm, base_close, &mut self.interner);
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
            Outcome::Late { .. } if replaying => {
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
                    country: ev.country,
                    device: ev.device,
                    event_type: ev.event_type,
                    revenue_micros: ev.revenue_micros,
                    watermark_us,
                    reason: "window_closed",
                });
            }
        }
        // A late event's campaign may be held by nobody (its name is in the
        // late record already).
        self.interner.release_if_unused(cid);
        // Rows emitted here are final rows, due the moment the watermark
        // closed their window: now.
        move_rows(&mut self.batch, p, &mut self.scratch, None);
    }

    /// A rejection; or, while replaying below the restored commit (where
    /// it is already written, and in the dead-letter topic), a replay skip,
    /// its record never built.
    fn reject_unless_replaying(
        batch: &mut Batch,
        counts: &mut Counts,
        replaying: bool,
        record: impl FnOnce() -> RejectRecord,
    ) {
        if replaying {
            counts.replay_skipped += 1;
        } else {
            let record = record();
            counts.rejected[record.reason.index()] += 1;
            batch.rejected.push(record);
        }
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
        let open_cells = self.partitions.values().map(|w| w.open_cells()).sum();
        let (dedup_ids, dedup_bytes) =
            self.partitions.values().map(|w| w.dedup_footprint()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let min_watermark_us = self.partitions.values().filter_map(|w| w.watermark()).min();
        let campaigns_interned = self.interner.live();
        let campaigns_open = self.campaigns.values().map(PartitionCampaigns::held).sum();
        Footprint {
            open_windows,
            open_cells,
            dedup_ids,
            dedup_bytes,
            campaigns_interned,
            campaigns_open,
            min_watermark_us,
        }
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
        // Ids forgotten before this snapshot may be reused now: no row of
        // this batch or an earlier one can be resolved with a later one.
        self.interner.recycle();
        batch.rollups = self.rollups.clone();
        batch.rollup_names = self.rollup_names.clone();
        batch.commits = self.partitions.iter().filter_map(|(p, w)| w.checkpoint().map(|cp| (*p, cp))).collect();
        for (p, cp) in &batch.commits {
            self.sent.insert(*p, *cp);
        }
        batch.counts = self.take_counts();
        batch.footprint = self.footprint();
        batch
    }
}

/// A final base row read back from downstream, for
/// [`Processor::init_partition_seeded`].
#[derive(Debug, Clone, Copy)]
pub struct SeedRow<'a> {
    pub base_start_us: i64,
    pub campaign: &'a str,
    pub ad_format: &'a str,
    pub country: &'a str,
    pub device: &'a str,
    pub totals: Totals,
    /// 1 + the highest offset counted in it.
    pub counted_through: u64,
}

/// The rule of [`Processor::with_rollups`].
pub fn check_rollups(rollups: &[Rollup], base_us: i64) -> Result<(), String> {
    if rollups.is_empty() {
        return Err("no rollup configured (--rollup): nothing would be aggregated".to_string());
    }
    if rollups.len() > usize::from(u8::MAX) {
        return Err(format!("{} rollups configured; at most 255", rollups.len()));
    }
    for (i, r) in rollups.iter().enumerate() {
        if r.size_us <= 0 || r.size_us % base_us != 0 {
            return Err(format!(
                "rollup {}: its window must be a whole multiple of --window {} (the base window decides lateness for every rollup)",
                r.name(),
                crate::engine::time::format_duration_us(base_us)
            ));
        }
        if rollups[..i].contains(r) {
            return Err(format!("rollup {} is configured twice", r.name()));
        }
    }
    Ok(())
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
    use crate::engine::event::{AdFormat, Country, Device};
    use crate::engine::rollup::Dims;

    fn ev(id: &str, ts: &str, fmt: &str, ty: &str, rev: &str) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","timestamp":"{ts}","campaign_id":"C001","ad_format":"{fmt}","country":"US","device":"iOS","event_type":"{ty}","revenue":{rev}}}"#).into_bytes()
    }

    #[test]
    fn every_message_ends_up_counted_late_or_rejected() {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let mut p = Processor::with_rollups(cfg, vec![Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us)], 4096).unwrap();
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
        assert_eq!(b.commits, vec![(0, Checkpoint::at(2, Some(1_765_324_801_000_000), Some(1_765_324_816_000_000)))]);
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

    #[test]
    fn every_default_rollup_gets_every_counted_event() {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let mut p = Processor::new(cfg, 4096);
        assert_eq!(p.rollups().len(), 5);
        p.init_partition(0, None);
        let msgs = [
            ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
            ev("b", "2025-12-10T00:00:02", "banner", "click", "0.05"),
            ev("c", "2025-12-10T00:00:31", "interstitial", "impression", "0.0"),
            ev("d", "2025-12-10T00:00:03", "banner", "impression", "0.0"), // late: watermark 00:00:31
        ];
        for (i, m) in msgs.iter().enumerate() {
            p.process(0, i as i64, None, None, m);
        }
        p.fire_all();
        let b = p.take_batch();
        for (i, r) in p.rollups().iter().enumerate() {
            let rows: Vec<_> = b.rows.iter().filter(|o| o.row.rollup as usize == i).collect();
            let events: u64 = rows.iter().map(|o| o.row.totals.impressions + o.row.totals.clicks).sum();
            assert_eq!(events, 3, "rollup {}", r.name());
            let segmented = r.dims.contains(Dims::COUNTRY);
            assert!(rows.iter().all(|o| o.row.key.country.is_some() == segmented && o.row.key.ad_format.is_some()));
        }
        assert_eq!(b.late.len(), 1, "late once, not once per rollup");
        assert_eq!((b.late[0].country, b.late[0].device), (Country::Us, Device::Ios));
        let console: Vec<_> = b.console_rows().map(|o| (o.row.window_start_us, o.row.key.ad_format)).collect();
        assert_eq!(console.len(), 2, "the console shows the campaign × format 10 s rows: {console:?}");
        assert!(console.contains(&(1_765_324_800_000_000, Some(AdFormat::Banner))));
    }

    /// A message without a Kafka timestamp is guarded against its
    /// partition's watermark: one event a year ahead is rejected instead
    /// of holding its window (and the checkpoint) in memory for good.
    #[test]
    fn a_message_without_a_timestamp_is_guarded_by_the_watermark() {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let mut p = Processor::new(cfg, 4096);
        p.init_partition(0, None);
        let msgs = [
            ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
            ev("b", "2026-12-10T00:00:01", "banner", "impression", "0.0"), // a year ahead
            ev("c", "2025-12-10T00:40:00", "banner", "impression", "0.0"), // 40 min ahead: within 1 h, held
            ev("d", "2025-12-10T00:00:02", "banner", "impression", "0.0"),
        ];
        for (i, m) in msgs.iter().enumerate() {
            p.process(0, i as i64, None, None, m);
        }
        let b = p.take_batch();
        let rejected: Vec<_> = b.rejected.iter().map(|r| (r.offset, r.reason)).collect();
        assert_eq!(rejected, vec![(1, RejectReason::FutureTimestamp)]);
        assert!(b.rejected[0].detail.contains("watermark"), "{}", b.rejected[0].detail);
        assert_eq!((b.counts.counted, b.counts.late), (3, 0), "the 40-minute event is held, so d is on time");
    }

    #[test]
    fn rollups_must_fit_the_base_window() {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let r = |s: i64| Rollup::new(Dims::CAMPAIGN_FORMAT, s * 1_000_000);
        assert!(Processor::with_rollups(cfg, vec![], 4096).is_err());
        let e = Processor::with_rollups(cfg, vec![r(10), r(15)], 4096).err().unwrap();
        assert!(e.contains("whole multiple of --window 10s"), "{e}");
        assert!(Processor::with_rollups(cfg, vec![r(5)], 4096).is_err(), "shorter than the base window");
        assert!(Processor::with_rollups(cfg, vec![r(10), r(10)], 4096).err().unwrap().contains("twice"));
        assert!(Processor::with_rollups(cfg, vec![r(20), r(3600)], 4096).is_ok());
    }

    #[test]
    fn a_replay_before_the_commit_writes_no_reject_or_late_record_again() {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let msgs = [
            ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
            b"garbage".to_vec(),
            ev("b", "2025-12-10T00:00:31", "banner", "impression", "0.0"),
            ev("c", "2025-12-10T00:00:02", "banner", "impression", "0.0"), // late
            ev("d", "2025-12-10T00:00:32", "banner", "impression", "0.0"),
            b"more garbage".to_vec(),
        ];
        let mut first = Processor::new(cfg, 4096);
        first.init_partition(0, None);
        for (i, m) in msgs[..5].iter().enumerate() {
            first.process(0, i as i64, None, None, m);
        }
        let b = first.take_batch();
        assert_eq!((b.rejected.len(), b.late.len()), (1, 1));
        let cp = b.commits[0].1;
        assert_eq!((cp.resume_offset, cp.offset), (0, 2), "the minute and the hour need offset 0 again");
        let mut again = Processor::new(cfg, 4096);
        again.init_partition(0, Some(cp));
        for (i, m) in msgs.iter().enumerate() {
            again.process(0, i as i64, None, None, m);
        }
        let b = again.take_batch();
        let rejected: Vec<i64> = b.rejected.iter().map(|r| r.offset).collect();
        assert_eq!(rejected, vec![5], "only the reject after the commit is new");
        let late: Vec<i64> = b.late.iter().map(|l| l.offset).collect();
        assert_eq!(late, vec![3], "offset 3 is after the commit: written again (idempotent by position)");
        assert_eq!(b.counts.replay_skipped, 2, "the first event's closed window and the garbage before the commit");
    }

    /// Campaign churn (issue 18 item 3): events of campaign `c` at second
    /// `sec` after 2025-12-10T00:00:00.
    fn churn_event(prefix: char, n: u64, c: u64, sec: i64, click: bool) -> Vec<u8> {
        let ts = crate::engine::time::format_event_timestamp(1_765_324_800_000_000 + sec * 1_000_000);
        let (ty, rev) = if click { ("click", "0.25") } else { ("impression", "0.0") };
        format!(r#"{{"event_id":"{prefix}{n}","timestamp":"{ts}","campaign_id":"{prefix}{c:07}","ad_format":"banner","country":"US","device":"iOS","event_type":"{ty}","revenue":{rev}}}"#).into_bytes()
    }

    /// `windows` base windows of 10 s, `per` new campaigns in each, one
    /// impression each; the first 30 % of the campaigns of the previous
    /// window click early in the next one (on time: lateness 5 s). Each
    /// base window starts `gap` seconds after the previous, the first at
    /// second `t0`; ids and campaigns begin with `prefix`.
    fn churn(windows: u64, per: u64, gap: i64, t0: i64, prefix: char) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut n = 0;
        for k in 0..windows {
            let start = t0 + k as i64 * gap;
            for i in 0..per {
                n += 1;
                out.push(churn_event(prefix, n, k * per + i, start + (i * 10 / per) as i64, false));
                if k > 0 && i * 10 < per * 3 && (start - gap) + 10 + 5 > start + (i * 10 / per) as i64 {
                    n += 1;
                    out.push(churn_event(prefix, n, (k - 1) * per + i, start - gap + 9, true));
                }
            }
        }
        out
    }

    /// Keeps the highest version of each row, as ReplacingMergeTree does;
    /// campaigns by name (ids are reused).
    type Table = BTreeMap<(u8, i64, String, Option<AdFormat>), (u64, Totals)>;

    fn upsert(table: &mut Table, b: &Batch) {
        for r in &b.rows {
            let k = (r.row.rollup, r.row.window_start_us, b.campaign(r).to_string(), r.row.key.ad_format);
            let e = table.entry(k).or_insert((0, Totals::default()));
            if r.row.version >= e.0 {
                *e = (r.row.version, r.row.totals);
            }
        }
    }

    use crate::engine::window::Totals;

    fn churn_processor(limit: usize) -> Processor {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let rollups = vec![
            Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us),
            Rollup::new(Dims::CAMPAIGN_FORMAT, 60_000_000),
            Rollup::new(Dims::CAMPAIGN_FORMAT, 3_600_000_000),
        ];
        Processor::with_rollups(cfg, rollups, 4096).unwrap().with_campaign_limit(limit)
    }

    /// The reported case: 150,000 campaigns over 150 windows, 1,000 at a
    /// time. Before, 100,000 were counted and 50,000 rejected; now all are,
    /// and once their hour closes their ids are given back and reused.
    #[test]
    fn campaign_churn_is_all_counted_and_ids_are_reclaimed() {
        let mut p = churn_processor(MAX_CAMPAIGNS_PER_WINDOW);
        p.init_partition(0, None);
        let msgs = churn(150, 1000, 10, 0, 'K');
        let mut table = BTreeMap::new();
        let mut counts = Counts::default();
        for (o, m) in msgs.iter().enumerate() {
            p.process(0, o as i64, None, None, m);
            if o % 10_000 == 9_999 {
                let b = p.take_batch();
                counts.add(&b.counts);
                upsert(&mut table, &b);
            }
        }
        // From 00:35, 150 more windows of new campaigns, 10 min apart
        // (campaigns starting and ending over a day).
        let later = churn(150, 1000, 600, 2100, 'L');
        let mut peak_live = 0;
        let base = msgs.len();
        for (o, m) in later.iter().enumerate() {
            p.process(0, (base + o) as i64, None, None, m);
            if o % 1_000 == 999 {
                let b = p.take_batch();
                counts.add(&b.counts);
                upsert(&mut table, &b);
                // Once the first hour (all of the first burst) has closed.
                if b.footprint.min_watermark_us.is_some_and(|wm| wm >= 1_765_324_800_000_000 + 3_605_000_000) {
                    peak_live = peak_live.max(b.footprint.campaigns_interned);
                }
            }
        }
        p.fire_all();
        let b = p.take_batch();
        counts.add(&b.counts);
        upsert(&mut table, &b);
        let events = (msgs.len() + later.len()) as u64;
        assert_eq!(counts.rejected_total(), 0, "{:?}", counts.rejected);
        assert_eq!((counts.counted, counts.late, counts.duplicates), (events, 0, 0));
        // Every campaign's 10 s, 1 m and 1 h rows hold its events.
        for rollup in 0..3u8 {
            let mut per: BTreeMap<&str, (u64, u64, i64)> = BTreeMap::new();
            for ((r, _, c, _), (_, t)) in &table {
                if *r == rollup {
                    let e = per.entry(c.as_str()).or_default();
                    e.0 += t.impressions;
                    e.1 += t.clicks;
                    e.2 += t.revenue_micros;
                }
            }
            assert_eq!(per.len(), 300_000, "rollup {rollup}: every campaign has rows");
            let impressions: u64 = per.values().map(|v| v.0).sum();
            let clicks: u64 = per.values().map(|v| v.1).sum();
            assert_eq!(impressions, 300_000);
            assert_eq!(impressions + clicks, events, "rollup {rollup}");
            assert!(per.values().all(|v| v.0 == 1 && v.2 == 250_000 * v.1 as i64));
        }
        // After the first hour closed: in open windows at most the
        // campaigns of an hour (6 windows of 1,000) and the closing ones;
        // ids reused, so the highest id stays about that of the first
        // burst plus the second burst's first windows before that hour
        // closed (without reuse: 300,000).
        assert!(peak_live > 0 && peak_live <= 8_000, "campaigns interned at once: {peak_live}");
        assert!(p.interner.names().len() <= 160_000, "highest id {}", p.interner.names().len());
    }

    /// With a limit of 500 campaigns per base window, the first 500 of each
    /// window's 1,000 are counted (with their clicks) and the rest rejected;
    /// a restart from a checkpoint in the middle decides exactly the same.
    #[test]
    fn the_campaign_limit_is_per_base_window_and_replays_exactly() {
        let msgs = churn(40, 1000, 10, 0, 'K');
        let run = |crash_after: Option<usize>| {
            let mut p = churn_processor(500);
            p.init_partition(0, None);
            let mut table = BTreeMap::new();
            let mut rejected = std::collections::BTreeSet::new();
            let mut o = 0;
            let mut crashed = false;
            while o < msgs.len() {
                p.process(0, o as i64, None, None, &msgs[o]);
                o += 1;
                if o % 2_000 == 0 {
                    let b = p.take_batch();
                    upsert(&mut table, &b);
                    rejected.extend(b.rejected.iter().map(|r| r.offset));
                    if !crashed && crash_after.is_some_and(|c| o >= c) {
                        // Restart from the commit of that batch.
                        crashed = true;
                        let cp = b.commits[0].1;
                        assert!(cp.resume_offset < o as i64);
                        p = churn_processor(500);
                        p.init_partition(0, Some(cp));
                        o = cp.resume_offset as usize;
                    }
                }
            }
            p.fire_all();
            let b = p.take_batch();
            upsert(&mut table, &b);
            rejected.extend(b.rejected.iter().map(|r| r.offset));
            (table, rejected)
        };
        let (table, rejected) = run(None);
        // 500 impressions rejected per window (the clicks are of the first
        // 300 campaigns of the window before: admitted).
        assert_eq!(rejected.len(), 40 * 500);
        let impressions: u64 = table.iter().filter(|(k, _)| k.0 == 0).map(|(_, v)| v.1.impressions).sum();
        assert_eq!(impressions, 40 * 500);
        for crash in [2_000, 10_000, 26_000] {
            let (t, r) = run(Some(crash));
            assert_eq!(r, rejected, "crash after {crash}: the same messages rejected");
            assert_eq!(t, table, "crash after {crash}: the same rows");
        }
    }

    /// A campaign is held until all its windows have closed, not only its
    /// longest one: with 40 s and 60 s rollups, an event at 00:50 is in
    /// [00:00, 01:00) and [00:40, 01:20). Released at 01:05, its id would
    /// be reused by the next new campaign while [00:40, 01:20) still
    /// counted the first one under it.
    #[test]
    fn a_campaign_is_held_until_its_last_window_closes_whatever_the_sizes() {
        let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
        let rollups = vec![
            Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us),
            Rollup::new(Dims::CAMPAIGN_FORMAT, 40_000_000),
            Rollup::new(Dims::CAMPAIGN_FORMAT, 60_000_000),
        ];
        let mut p = Processor::with_rollups(cfg, rollups, 4096).unwrap();
        p.init_partition(0, None);
        let mut table = Table::new();
        let msgs = [churn_event('a', 0, 1, 50, false), churn_event('b', 1, 2, 70, false)];
        for (o, m) in msgs.iter().enumerate() {
            p.process(0, o as i64, None, None, m);
        }
        upsert(&mut table, &p.take_batch());
        p.process(0, 2, None, None, &churn_event('c', 2, 3, 71, false));
        p.fire_all();
        upsert(&mut table, &p.take_batch());
        let forty: Vec<_> = table
            .iter()
            .filter(|(k, _)| k.0 == 1 && k.1 == 1_765_324_840_000_000)
            .map(|(k, v)| (k.2.as_str(), v.1.impressions))
            .collect();
        assert_eq!(forty, vec![("a0000001", 1), ("b0000002", 1), ("c0000003", 1)]);
    }
}
