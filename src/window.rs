//! Event-time tumbling windows for one input partition. Pure and
//! synchronous: no I/O, no clocks, no Kafka; everything here is a function of
//! the sequence of `(offset, event)` it is fed, which is what makes replay
//! after a crash reproduce exactly the same numbers.
//!
//! # The rules
//! - Windows are `[start, start + size)`, aligned to the Unix epoch. An event
//!   at exactly `start + size` belongs to the *next* window.
//! - The **watermark** of a partition is `max event time seen − allowed
//!   lateness`. A window is **closed** (emitted, final) once the watermark
//!   reaches its end: `end <= watermark`.
//! - An event whose window is already closed is **late**: it is not added to
//!   any window, but reported as [`Outcome::Late`] so the caller can write it,
//!   with its reason, to the late-events output. Nothing is dropped silently.
//! - An event more than `max_future` ahead of the watermark is refused
//!   ([`Outcome::TooFarAhead`]); one bad clock upstream must not push the
//!   watermark an hour forward and make all real traffic late.
//!
//! # Checkpoints and replay
//! Each partition's state is summarised by a [`Checkpoint`]: the offset to
//! resume from (the first offset of the oldest still-open window) and two
//! event times. `max_ts_at_offset` is the max event time seen *before* that
//! offset, so a replay classifies every event (on time or late) exactly as
//! the first pass did. `closed_max_ts` records how far windows were already
//! emitted, so a replay does not re-open, and overwrite with a partial sum, a
//! window that is already final downstream. See [`PartitionWindows::restore`].

use std::collections::BTreeMap;

use crate::event::{AdFormat, EventType};

/// Window geometry and tolerances, all in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    pub size_us: i64,
    pub allowed_lateness_us: i64,
    pub max_future_us: i64,
}

impl WindowConfig {
    pub fn new(size_us: i64, allowed_lateness_us: i64, max_future_us: i64) -> Self {
        assert!(size_us > 0, "window size must be positive");
        WindowConfig { size_us, allowed_lateness_us: allowed_lateness_us.max(0), max_future_us: max_future_us.max(0) }
    }

    /// Start of the window containing `ts`.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_us) * self.size_us
    }
}

/// Totals of one window × campaign × format within one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub impressions: u64,
    pub clicks: u64,
    pub revenue_micros: i64,
}

/// One emitted row: a partition's contribution to a (window, campaign,
/// format) cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRow {
    pub window_start_us: i64,
    pub window_end_us: i64,
    /// Interned campaign id (see [`crate::event::Interner`]).
    pub campaign: u32,
    pub ad_format: AdFormat,
    pub totals: Totals,
    /// `1 + the highest offset counted in this cell`. Deterministic, and
    /// grows when a cell gains events, so downstream keeps the row with the
    /// highest version (ReplacingMergeTree) and replays are idempotent.
    pub version: u64,
    /// `true` when the window was closed by the watermark; `false` when it
    /// was emitted early (shutdown, drain) and may still grow after a restart.
    pub is_final: bool,
}

/// The part of a valid event the windows need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Event time, µs since the epoch.
    pub ts: i64,
    /// Interned campaign id.
    pub campaign: u32,
    pub ad_format: AdFormat,
    pub event_type: EventType,
    pub revenue_micros: i64,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Added to an open window.
    Counted,
    /// Its window was closed by the watermark before it arrived.
    Late { window_start_us: i64, watermark_us: i64 },
    /// A replay after restart met an event of a window that was already
    /// emitted as final before the restart: it is already in that row.
    AlreadyEmitted,
    /// More than `max_future` ahead of the watermark.
    TooFarAhead { watermark_us: i64 },
}

/// Where to resume a partition and what its clocks were there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The Kafka offset to commit: the next message to read after restart.
    pub offset: i64,
    /// Max event time seen before `offset` (None: no event yet).
    pub max_ts_at_offset: Option<i64>,
    /// Max event time seen overall; every window ending at or before
    /// `closed_max_ts − lateness` has been emitted as final.
    pub closed_max_ts: Option<i64>,
}

impl Checkpoint {
    const PREFIX: &'static str = "adstream/1";

    /// Encodes the checkpoint as Kafka commit metadata (well under the
    /// broker's 4 KiB `offset.metadata.max.bytes`).
    pub fn metadata(&self) -> String {
        fn t(v: Option<i64>) -> String {
            v.map_or_else(|| "-".to_string(), |v| v.to_string())
        }
        format!("{} at={} closed={}", Self::PREFIX, t(self.max_ts_at_offset), t(self.closed_max_ts))
    }

    /// Decodes commit metadata written by [`Checkpoint::metadata`]. Returns
    /// `None` for metadata of another writer (or none at all): the partition
    /// then starts fresh from the committed offset.
    pub fn from_metadata(offset: i64, metadata: &str) -> Option<Checkpoint> {
        let mut parts = metadata.split(' ');
        if parts.next()? != Self::PREFIX {
            return None;
        }
        fn t(v: &str) -> Option<Option<i64>> {
            if v == "-" {
                Some(None)
            } else {
                v.parse().ok().map(Some)
            }
        }
        let at = t(parts.next()?.strip_prefix("at=")?)?;
        let closed = t(parts.next()?.strip_prefix("closed=")?)?;
        Some(Checkpoint { offset, max_ts_at_offset: at, closed_max_ts: closed })
    }
}

#[derive(Debug)]
struct OpenWindow {
    first_offset: i64,
    max_ts_before: Option<i64>,
    /// Cells indexed by `campaign * 3 + format`; dense because campaigns are
    /// few and interned, so no hashing on the hot path.
    cells: Vec<Cell>,
    /// Indexes of cells that hold events, in first-touch order.
    touched: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    totals: Totals,
    /// 0 = untouched; else 1 + highest offset counted.
    version: u64,
}

/// The open windows of one partition.
#[derive(Debug)]
pub struct PartitionWindows {
    cfg: WindowConfig,
    max_ts: Option<i64>,
    /// From a restored checkpoint: windows ending at or before
    /// `restored_closed − lateness` are already final downstream.
    restored_closed: Option<i64>,
    open: BTreeMap<i64, OpenWindow>,
    next_offset: Option<i64>,
}

impl PartitionWindows {
    pub fn new(cfg: WindowConfig) -> Self {
        PartitionWindows { cfg, max_ts: None, restored_closed: None, open: BTreeMap::new(), next_offset: None }
    }

    /// State for replaying from a committed checkpoint.
    pub fn restore(cfg: WindowConfig, cp: &Checkpoint) -> Self {
        PartitionWindows {
            cfg,
            max_ts: cp.max_ts_at_offset,
            restored_closed: cp.closed_max_ts,
            open: BTreeMap::new(),
            next_offset: Some(cp.offset),
        }
    }

    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// `max event time − allowed lateness`, or `None` before the first event.
    pub fn watermark(&self) -> Option<i64> {
        self.max_ts.map(|m| m.saturating_sub(self.cfg.allowed_lateness_us))
    }

    /// The next offset this partition expects (`None` before the first).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Number of open windows (memory grows with this × keys, never with
    /// events).
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Records that `offset` was consumed without touching any window (a
    /// rejected message), so the checkpoint can move past it.
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
    }

    /// Feeds one valid event. Windows closed by the resulting watermark are
    /// appended to `out`.
    pub fn observe(&mut self, offset: i64, ev: &Observation, out: &mut Vec<WindowRow>) -> Outcome {
        let Observation { ts, campaign, ad_format, event_type, revenue_micros } = *ev;
        self.next_offset = Some(offset + 1);
        let start = self.cfg.window_start(ts);
        let end = start + self.cfg.size_us;
        if let Some(wm) = self.watermark() {
            if ts > wm.saturating_add(self.cfg.max_future_us) {
                return Outcome::TooFarAhead { watermark_us: wm };
            }
            if end <= wm {
                return Outcome::Late { window_start_us: start, watermark_us: wm };
            }
        }
        if let Some(closed) = self.restored_closed {
            if end <= closed.saturating_sub(self.cfg.allowed_lateness_us) {
                return Outcome::AlreadyEmitted;
            }
        }
        let max_ts_before = self.max_ts;
        let w = self.open.entry(start).or_insert_with(|| OpenWindow {
            first_offset: offset,
            max_ts_before,
            cells: Vec::new(),
            touched: Vec::new(),
        });
        let idx = campaign as usize * 3 + ad_format.index();
        if idx >= w.cells.len() {
            w.cells.resize(idx + 1, Cell::default());
        }
        let cell = &mut w.cells[idx];
        if cell.version == 0 {
            w.touched.push(idx as u32);
        }
        match event_type {
            EventType::Impression => cell.totals.impressions += 1,
            EventType::Click => cell.totals.clicks += 1,
        }
        cell.totals.revenue_micros += revenue_micros;
        cell.version = cell.version.max(offset as u64 + 1);

        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
            self.close_up_to_watermark(out);
        }
        Outcome::Counted
    }

    fn close_up_to_watermark(&mut self, out: &mut Vec<WindowRow>) {
        let Some(wm) = self.watermark() else { return };
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + self.cfg.size_us > wm {
                break;
            }
            let start = *entry.key();
            let w = entry.remove();
            emit(&self.cfg, start, &w, true, out);
        }
    }

    /// Emits every open window as it stands, marked not final, without
    /// closing it: used at shutdown and when draining a topic, so the
    /// freshest numbers are downstream. The checkpoint still points at the
    /// first open window, so a restart rebuilds these windows in full and
    /// re-emits them with a higher version.
    pub fn emit_open(&self, out: &mut Vec<WindowRow>) {
        for (&start, w) in &self.open {
            emit(&self.cfg, start, w, false, out);
        }
    }

    /// Where a restart must resume so that replay rebuilds every open window
    /// exactly. `None` before the first message.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let closed_max_ts = match (self.max_ts, self.restored_closed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(oldest) = self.open.values().min_by_key(|w| w.first_offset) {
            return Some(Checkpoint {
                offset: oldest.first_offset,
                max_ts_at_offset: oldest.max_ts_before,
                closed_max_ts,
            });
        }
        let offset = self.next_offset?;
        Some(Checkpoint { offset, max_ts_at_offset: self.max_ts, closed_max_ts })
    }
}

fn emit(cfg: &WindowConfig, start: i64, w: &OpenWindow, is_final: bool, out: &mut Vec<WindowRow>) {
    let mut idxs = w.touched.clone();
    idxs.sort_unstable();
    for idx in idxs {
        let cell = &w.cells[idx as usize];
        out.push(WindowRow {
            window_start_us: start,
            window_end_us: start + cfg.size_us,
            campaign: idx / 3,
            ad_format: AdFormat::ALL[(idx % 3) as usize],
            totals: cell.totals,
            version: cell.version,
            is_final,
        });
    }
}

/// CTR in percent; `None` when there were no impressions (a window can hold
/// clicks without impressions when an impression landed in the previous
/// window). NULL rather than 0 so averages over windows are not skewed.
pub fn ctr_percent(t: &Totals) -> Option<f64> {
    (t.impressions > 0).then(|| t.clicks as f64 / t.impressions as f64 * 100.0)
}

/// eCPM in USD (revenue per 1000 impressions); `None` without impressions.
pub fn ecpm_usd(t: &Totals) -> Option<f64> {
    (t.impressions > 0).then(|| t.revenue_micros as f64 / 1e6 / t.impressions as f64 * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::{Click, Impression};

    const S: i64 = 1_000_000;

    type Table = BTreeMap<(i64, u32, AdFormat), (Totals, u64)>;

    fn obs(ts: i64, campaign: u32, ad_format: AdFormat, event_type: EventType, revenue_micros: i64) -> Observation {
        Observation { ts, campaign, ad_format, event_type, revenue_micros }
    }

    fn cfg() -> WindowConfig {
        WindowConfig::new(10 * S, 5 * S, 3600 * S)
    }

    /// Feeds (ts seconds as f64, campaign, format, type, revenue) in order,
    /// offsets 0.., and returns everything emitted plus outcomes.
    fn feed(
        w: &mut PartitionWindows,
        first_offset: i64,
        events: &[(f64, u32, AdFormat, EventType, i64)],
    ) -> (Vec<WindowRow>, Vec<Outcome>) {
        let mut out = Vec::new();
        let mut outcomes = Vec::new();
        for (i, &(t, c, f, ty, r)) in events.iter().enumerate() {
            let ts = (t * S as f64).round() as i64;
            outcomes.push(w.observe(first_offset + i as i64, &obs(ts, c, f, ty, r), &mut out));
        }
        (out, outcomes)
    }

    #[test]
    fn window_boundaries_are_half_open_and_epoch_aligned() {
        let c = cfg();
        assert_eq!(c.window_start(0), 0);
        assert_eq!(c.window_start(10 * S - 1), 0);
        assert_eq!(c.window_start(10 * S), 10 * S, "00:00:10.000 belongs to the next window");
        assert_eq!(c.window_start(-1), -10 * S);
        assert_eq!(c.window_start(1_765_327_581_994_570), 1_765_327_580_000_000);
    }

    #[test]
    fn event_exactly_on_the_boundary_goes_to_the_next_window() {
        let mut w = PartitionWindows::new(cfg());
        let (_, _) = feed(
            &mut w,
            0,
            &[(9.999999, 0, AdFormat::Banner, Impression, 0), (10.0, 0, AdFormat::Banner, Impression, 0)],
        );
        let mut out = Vec::new();
        w.emit_open(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].window_start_us, 0);
        assert_eq!(out[1].window_start_us, 10 * S);
        assert_eq!(out[1].window_end_us, 20 * S);
        assert!(out.iter().all(|r| r.totals.impressions == 1 && !r.is_final));
    }

    #[test]
    fn window_closes_when_watermark_reaches_its_end() {
        let mut w = PartitionWindows::new(cfg());
        let (out, _) =
            feed(&mut w, 0, &[(1.0, 0, AdFormat::Banner, Impression, 0), (14.999, 0, AdFormat::Banner, Impression, 0)]);
        assert!(out.is_empty(), "watermark 9.999 < 10");
        assert_eq!(w.watermark(), Some(9_999_000));
        let (out, _) = feed(&mut w, 2, &[(15.0, 0, AdFormat::Banner, Click, 20_000)]);
        assert_eq!(out.len(), 1, "watermark 10 closes [0,10)");
        assert!(out[0].is_final);
        assert_eq!(out[0].totals, Totals { impressions: 1, clicks: 0, revenue_micros: 0 });
        assert_eq!(out[0].version, 1);
    }

    #[test]
    fn out_of_order_within_lateness_is_counted() {
        let mut w = PartitionWindows::new(cfg());
        let (out, outcomes) = feed(
            &mut w,
            0,
            &[
                (8.0, 0, AdFormat::Banner, Impression, 0),
                (13.0, 0, AdFormat::Banner, Impression, 0),
                (9.5, 0, AdFormat::Banner, Click, 50_000), // late by 3.5 s, watermark 8
                (16.0, 0, AdFormat::Banner, Impression, 0),
            ],
        );
        assert!(outcomes.iter().all(|o| *o == Outcome::Counted));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].totals, Totals { impressions: 1, clicks: 1, revenue_micros: 50_000 });
        assert_eq!(out[0].version, 3);
    }

    #[test]
    fn events_behind_a_closed_window_are_late_not_lost() {
        let mut w = PartitionWindows::new(cfg());
        let (out, outcomes) = feed(
            &mut w,
            0,
            &[
                (1.0, 0, AdFormat::Banner, Impression, 0),
                (16.0, 0, AdFormat::Banner, Impression, 0),
                (9.0, 0, AdFormat::Banner, Click, 10),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(outcomes[2], Outcome::Late { window_start_us: 0, watermark_us: 11 * S });
    }

    #[test]
    fn far_future_events_are_refused_and_do_not_move_the_watermark() {
        let mut w = PartitionWindows::new(cfg());
        let (_, outcomes) = feed(
            &mut w,
            0,
            &[(100.0, 0, AdFormat::Banner, Impression, 0), (100.0 + 3600.0 + 6.0, 0, AdFormat::Banner, Impression, 0)],
        );
        assert_eq!(outcomes[1], Outcome::TooFarAhead { watermark_us: 95 * S });
        assert_eq!(w.watermark(), Some(95 * S));
        let (_, outcomes) = feed(&mut w, 2, &[(95.0 + 3600.0, 0, AdFormat::Banner, Impression, 0)]);
        assert_eq!(outcomes[0], Outcome::Counted);
    }

    #[test]
    fn keys_are_separate_and_emitted_in_key_order() {
        let mut w = PartitionWindows::new(cfg());
        feed(
            &mut w,
            0,
            &[
                (1.0, 2, AdFormat::RewardedVideo, Impression, 0),
                (1.0, 0, AdFormat::Interstitial, Click, 7),
                (1.0, 2, AdFormat::RewardedVideo, Click, 9),
                (1.0, 0, AdFormat::Banner, Impression, 0),
            ],
        );
        let mut out = Vec::new();
        feed(&mut w, 4, &[(30.0, 0, AdFormat::Banner, Impression, 0)]).0.into_iter().for_each(|r| out.push(r));
        let keys: Vec<_> = out.iter().map(|r| (r.campaign, r.ad_format)).collect();
        assert_eq!(keys, vec![(0, AdFormat::Banner), (0, AdFormat::Interstitial), (2, AdFormat::RewardedVideo)]);
        assert_eq!(out[2].totals, Totals { impressions: 1, clicks: 1, revenue_micros: 9 });
        assert_eq!(out[2].version, 3);
    }

    #[test]
    fn ctr_and_ecpm_with_and_without_impressions() {
        let t = Totals { impressions: 85, clicks: 4, revenue_micros: 230_000 };
        assert!((ctr_percent(&t).unwrap() - 4.705882352941177).abs() < 1e-12);
        assert!((ecpm_usd(&t).unwrap() - 2.7058823529411766).abs() < 1e-12);
        let none = Totals { impressions: 0, clicks: 3, revenue_micros: 100 };
        assert_eq!(ctr_percent(&none), None);
        assert_eq!(ecpm_usd(&none), None);
    }

    #[test]
    fn checkpoint_points_at_the_oldest_open_window() {
        let mut w = PartitionWindows::new(cfg());
        assert_eq!(w.checkpoint(), None);
        w.skip(41);
        assert_eq!(w.checkpoint().unwrap().offset, 42);
        feed(&mut w, 42, &[(1.0, 0, AdFormat::Banner, Impression, 0), (12.0, 0, AdFormat::Banner, Impression, 0)]);
        let cp = w.checkpoint().unwrap();
        assert_eq!(cp, Checkpoint { offset: 42, max_ts_at_offset: None, closed_max_ts: Some(12 * S) });
        feed(&mut w, 44, &[(16.0, 0, AdFormat::Banner, Impression, 0)]);
        let cp = w.checkpoint().unwrap();
        assert_eq!(cp, Checkpoint { offset: 43, max_ts_at_offset: Some(S), closed_max_ts: Some(16 * S) });
    }

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_ignored() {
        let cp = Checkpoint { offset: 7, max_ts_at_offset: Some(-5), closed_max_ts: None };
        assert_eq!(Checkpoint::from_metadata(7, &cp.metadata()), Some(cp));
        assert_eq!(Checkpoint::from_metadata(7, ""), None);
        assert_eq!(Checkpoint::from_metadata(7, "adstream/1 at=x closed=-"), None);
        assert_eq!(Checkpoint::from_metadata(7, "someone else"), None);
    }

    /// A deterministic pseudo-random jittered stream, used to check that
    /// "crash anywhere, restore from the last checkpoint, replay" yields the
    /// same final rows and the same late set as one uninterrupted pass.
    fn jittered_stream(n: usize, seed: u64) -> Vec<(f64, u32, AdFormat, EventType, i64)> {
        let mut x = seed;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|i| {
                let base = i as f64 * 0.05;
                let jitter = (next() % 8000) as f64 / 1000.0;
                let c = (next() % 5) as u32;
                let f = AdFormat::ALL[(next() % 3) as usize];
                let click = next() % 10 == 0;
                (
                    base - jitter,
                    c,
                    f,
                    if click { Click } else { Impression },
                    if click { (next() % 1000) as i64 } else { 0 },
                )
            })
            .collect()
    }

    fn run_with_crashes(events: &[(f64, u32, AdFormat, EventType, i64)], crash_at: &[usize]) -> (Table, Vec<i64>) {
        // The "downstream": a ReplacingMergeTree keeping the highest version.
        let mut table: Table = BTreeMap::new();
        let mut late: std::collections::BTreeSet<i64> = Default::default();
        let mut committed: Option<Checkpoint> = None;
        let mut w = PartitionWindows::new(cfg());
        let mut pos = 0usize;
        let mut crashes = crash_at.iter().copied().peekable();
        let mut out = Vec::new();
        while pos < events.len() {
            if crashes.peek() == Some(&pos) {
                crashes.next();
                // Crash: lose in-memory state, resume at the committed checkpoint.
                w = committed.map_or_else(|| PartitionWindows::new(cfg()), |cp| PartitionWindows::restore(cfg(), &cp));
                pos = committed.map_or(0, |cp| cp.offset as usize);
                continue;
            }
            let (t, c, f, ty, r) = events[pos];
            let ts = (t * S as f64).round() as i64;
            match w.observe(pos as i64, &obs(ts, c, f, ty, r), &mut out) {
                Outcome::Late { .. } => {
                    late.insert(pos as i64);
                }
                Outcome::Counted | Outcome::AlreadyEmitted => {}
                Outcome::TooFarAhead { .. } => unreachable!(),
            }
            pos += 1;
            // Every 37 events: "write" the batch durably, then commit.
            if pos.is_multiple_of(37) {
                for row in out.drain(..) {
                    let e = table
                        .entry((row.window_start_us, row.campaign, row.ad_format))
                        .or_insert((row.totals, row.version));
                    if row.version >= e.1 {
                        *e = (row.totals, row.version);
                    }
                }
                committed = w.checkpoint();
            }
        }
        w.emit_open(&mut out);
        for row in out.drain(..) {
            let e =
                table.entry((row.window_start_us, row.campaign, row.ad_format)).or_insert((row.totals, row.version));
            if row.version >= e.1 {
                *e = (row.totals, row.version);
            }
        }
        (table, late.into_iter().collect())
    }

    #[test]
    fn replay_from_any_checkpoint_reproduces_the_uninterrupted_result() {
        let events = jittered_stream(5_000, 0x9E3779B97F4A7C15);
        let (clean, clean_late) = run_with_crashes(&events, &[]);
        assert!(!clean_late.is_empty(), "the stream must exercise lateness");
        let total: u64 = clean.values().map(|(t, _)| t.impressions + t.clicks).sum();
        assert_eq!(total as usize + clean_late.len(), events.len(), "every event counted once or late");
        for crashes in [vec![100], vec![1_000, 1_001, 2_500], vec![37, 74, 4_999], (1..40).map(|i| i * 123).collect()] {
            let (t, l) = run_with_crashes(&events, &crashes);
            assert_eq!(t, clean, "crashes at {crashes:?}");
            assert_eq!(l, clean_late, "crashes at {crashes:?}");
        }
    }
}
