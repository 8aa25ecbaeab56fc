//! The synchronous heart shared by `run` and `demo`: message bytes in,
//! window rows / late records / rejections out, plus per-partition
//! checkpoints. No I/O; the caller decides when a [`Batch`] leaves.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::engine::batch::{Batch, Counts, Footprint, LateRecord, Now, OutRow, RejectRecord};
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
    /// the last batch, i.e. since when fired rows have been waiting (by the
    /// caller's clock; `None` if it never said).
    due_since: HashMap<i32, Option<Instant>>,
    /// The caller's clock at its last [`set_clock`](Self::set_clock).
    now: Option<Now>,
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
    pub fn with_rollups(cfg: WindowConfig, rollups: Vec<Rollup>, max_event_bytes: usize) -> Result<Self, RollupsError> {
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
            now: None,
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
                Self::reject_unless_replaying(&mut self.batch, &mut self.counts, (replaying, self.now), record);
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
            Self::reject_unless_replaying(&mut self.batch, &mut self.counts, (replaying, self.now), record);
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
            Self::reject_unless_replaying(&mut self.batch, &mut self.counts, (replaying, self.now), record);
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
            Self::reject_unless_replaying(&mut self.batch, &mut self.counts, (replaying, self.now), record);
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
            self.due_since.entry(p).or_insert(self.now.map(|n| n.instant));
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
        move_rows(&mut self.batch, p, &mut self.scratch, self.now.map(|n| n.instant));
    }

    /// A rejection; or, while replaying below the restored commit (where
    /// it is already written, and in the dead-letter topic), a replay skip,
    /// its record never built.
    fn reject_unless_replaying(
        batch: &mut Batch,
        counts: &mut Counts,
        (replaying, now): (bool, Option<Now>),
        record: impl FnOnce() -> RejectRecord,
    ) {
        if replaying {
            counts.replay_skipped += 1;
        } else {
            let mut record = record();
            record.rejected_at_us = now.map_or(0, |n| n.epoch_us);
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

    /// The caller's clocks now: rows that become due from here on are due
    /// since `now.instant`, messages rejected from here on were rejected at
    /// `now.epoch_us`. The consume loop calls it once per fetched batch of
    /// messages; without it no due time is recorded and rejects carry 0.
    pub fn set_clock(&mut self, now: Now) {
        self.now = Some(now);
    }

    /// Takes the output so far, with the checkpoint of every partition.
    pub fn take_batch(&mut self) -> Batch {
        let now = self.now.map(|n| n.instant);
        for (&p, w) in self.partitions.iter_mut() {
            w.emit_updates(&mut self.scratch);
            let since = self.due_since.remove(&p).flatten().or(now);
            move_rows(&mut self.batch, p, &mut self.scratch, since);
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

/// Why a set of rollups is refused ([`check_rollups`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollupsError {
    #[error("no rollup configured (--rollup): nothing would be aggregated")]
    Empty,
    /// How many were configured.
    #[error("{0} rollups configured; at most 255")]
    TooMany(usize),
    /// The rollup's name and the base window (`10s`).
    #[error(
        "rollup {rollup}: its window must be a whole multiple of --window {base} (the base window decides lateness for every rollup)"
    )]
    NotAMultiple { rollup: String, base: String },
    /// The rollup's name.
    #[error("rollup {0} is configured twice")]
    Twice(String),
}

/// The rule of [`Processor::with_rollups`].
pub fn check_rollups(rollups: &[Rollup], base_us: i64) -> Result<(), RollupsError> {
    if rollups.is_empty() {
        return Err(RollupsError::Empty);
    }
    if rollups.len() > usize::from(u8::MAX) {
        return Err(RollupsError::TooMany(rollups.len()));
    }
    for (i, r) in rollups.iter().enumerate() {
        if r.size_us <= 0 || r.size_us % base_us != 0 {
            return Err(RollupsError::NotAMultiple {
                rollup: r.name(),
                base: crate::engine::time::format_duration_us(base_us),
            });
        }
        if rollups[..i].contains(r) {
            return Err(RollupsError::Twice(r.name()));
        }
    }
    Ok(())
}

/// Moves emitted window rows of partition `p` into the batch (campaigns stay
/// ids; the batch carries the names), recording when they became due
/// (`None`: the caller keeps no clock, nothing is recorded).
fn move_rows(batch: &mut Batch, p: i32, rows: &mut Vec<WindowRow>, due: Option<Instant>) {
    if rows.is_empty() {
        return;
    }
    if let Some(due) = due {
        batch.due.push((due, rows.len() as u32));
    }
    for row in rows.drain(..) {
        batch.rows.push(OutRow { partition: p, row });
    }
}

#[cfg(test)]
mod tests;
