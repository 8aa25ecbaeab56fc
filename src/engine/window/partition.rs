//! [`PartitionWindows`]: one partition's open windows, with the window's
//! hooks named for what happens there: [`PartitionWindows::observe`] feeds
//! an event, `handle_watermark` moves the partition's clock, and
//! `close_windows` is where a window closes (its final rows emitted);
//! [`PartitionWindows::fire_all`] and [`PartitionWindows::emit_updates`]
//! write fired windows early, [`PartitionWindows::checkpoint`] says where to
//! resume.

use std::collections::BTreeMap;

use crate::engine::event::EventType;

use super::dedup::{WindowIds, IDS_SPAN_US};
use super::{
    Checkpoint, Held, Observation, Outcome, Rollup, Seed, Totals, WindowConfig, WindowRow, CORROBORATING_EVENTS,
};

/// The gate of one base window (`--window`): where it starts in the
/// partition and the event ids counted in it. Whether an event is on time,
/// late or a duplicate is decided here, once, for every rollup alike.
#[derive(Debug)]
struct GateWindow {
    first_offset: i64,
    max_ts_before: Option<i64>,
    held_before: Option<Held>,
    /// Event ids counted in this window.
    ids: WindowIds,
    /// Fired by [`PartitionWindows::fire_all`] before the watermark got here.
    forced: bool,
}

#[derive(Debug)]
struct OpenWindow {
    first_offset: i64,
    max_ts_before: Option<i64>,
    held_before: Option<Held>,
    /// For each key (see [`Rollup::key`]), 1 + the index of its cell in
    /// `cells`, or 0 while the key has no events in this window. Four bytes
    /// per key and no hashing on the hot path; the cells themselves are
    /// packed in first-touch order. A dense array of cells per window (40
    /// bytes and a cache line per key) made every event and every output
    /// row a cache miss once keys ran into the tens of thousands.
    slots: Vec<u32>,
    /// The cells that hold events, in first-touch order.
    cells: Vec<Cell>,
    /// Fired by [`PartitionWindows::fire_all`] before the watermark got
    /// here, and not emitted since: cleared by the emission, so that after
    /// an idle spell the window waits for its end again instead of being
    /// written on every flush for the rest of its life.
    forced: bool,
    /// Some cell changed since the last emission.
    dirty: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// The rollup's key of the cell.
    key: u32,
    totals: Totals,
    /// 1 + highest offset counted.
    version: u64,
    /// Changed since it was last emitted (a flag, not the emitted version:
    /// a smaller cell is fewer cache misses when keys are many).
    changed: bool,
}

/// The open windows of one rollup in one partition.
#[derive(Debug)]
struct RollupWindows {
    rollup: Rollup,
    open: BTreeMap<i64, OpenWindow>,
    /// Slot tables (all zero) and cell lists (empty) of closed windows,
    /// reused: with many keys a fresh zeroed table per window costs page
    /// faults.
    spare: Vec<(Vec<u32>, Vec<Cell>)>,
}

impl RollupWindows {
    /// Drops windows past their allowed lateness, emitting their final rows.
    fn close_windows_until(&mut self, idx: u8, wm: i64, lateness: i64, out: &mut Vec<WindowRow>) {
        let rollup = self.rollup;
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            if !rollup.closed_at(start, lateness, wm) {
                break;
            }
            let mut w = entry.remove();
            emit(idx, &self.rollup, start, &mut w, true, out);
            if self.spare.len() < SPARE_ID_SETS {
                // Only the slots of keys with events need resetting.
                for c in &w.cells {
                    w.slots[c.key as usize] = 0;
                }
                w.cells.clear();
                self.spare.push((w.slots, w.cells));
            }
        }
    }
}

/// The windows of one partition that are still in memory (not closed):
/// one gate per base window, and the windows of every rollup.
#[derive(Debug)]
pub struct PartitionWindows {
    cfg: WindowConfig,
    /// The watermark (see the module docs).
    max_ts: Option<i64>,
    /// An event ahead of the watermark, waiting for corroboration.
    held: Option<Held>,
    /// From a restored checkpoint: windows closed at this watermark are
    /// already final downstream.
    restored_closed: Option<i64>,
    /// From a restored checkpoint: the offset committed then. The replay
    /// of longer windows rebuilds gates from before it; the commit offset
    /// never goes back below it.
    restored_commit: Option<i64>,
    /// The restored checkpoint's `base_at`.
    restored_base: Option<(Option<i64>, Option<Held>)>,
    /// Restored by [`restore_seeded`](Self::restore_seeded): the longer
    /// windows hold the final base rows of windows closed at
    /// `restored_closed`, so a replayed event of such a base window feeds
    /// no rollup.
    seeded: bool,
    gate: BTreeMap<i64, GateWindow>,
    rollups: Vec<RollupWindows>,
    next_offset: Option<i64>,
    /// Counts the times the watermark crossed a base window end (so that
    /// some window fired); lets the caller timestamp firings without this
    /// module reading a clock.
    fire_epoch: u64,
    /// Id sets of closed windows, cleared but keeping their capacity, for
    /// the next windows: a window's set would otherwise grow from empty by
    /// doubling (about a dozen reallocations and rehashes of every id so far
    /// per window). At most [`SPARE_ID_SETS`] are kept.
    spare_ids: Vec<WindowIds>,
}

/// Spare id sets (and cell tables, per rollup) kept per partition (about
/// the windows open at once).
const SPARE_ID_SETS: usize = 2;

impl PartitionWindows {
    /// A fresh partition aggregating `rollups`, each of whose window sizes
    /// must be a multiple of `cfg.size_us` (the processor checks).
    pub fn new(cfg: WindowConfig, rollups: &[Rollup]) -> Self {
        PartitionWindows {
            cfg,
            max_ts: None,
            held: None,
            restored_closed: None,
            restored_commit: None,
            restored_base: None,
            seeded: false,
            gate: BTreeMap::new(),
            rollups: rollups
                .iter()
                .map(|&rollup| RollupWindows { rollup, open: BTreeMap::new(), spare: Vec::new() })
                .collect(),
            next_offset: None,
            fire_epoch: 0,
            spare_ids: Vec::new(),
        }
    }

    /// State for replaying from a committed checkpoint.
    pub fn restore(cfg: WindowConfig, rollups: &[Rollup], cp: &Checkpoint) -> Self {
        let mut w = PartitionWindows::new(cfg, rollups);
        w.max_ts = cp.max_ts_at_resume;
        w.held = cp.held_at_resume;
        w.restored_closed = cp.closed_max_ts;
        w.restored_commit = Some(cp.offset);
        w.restored_base = cp.base_at.map(|b| (b, cp.held_at_base));
        w.next_offset = Some(cp.resume_offset);
        w
    }

    /// State for reading on from the committed `cp.offset` (not from
    /// `cp.resume_offset`): the longer windows still open start from
    /// `seeds`, the partition's final rows of base windows closed at
    /// `cp.closed_max_ts` (downstream, exact, one partition's own), summed
    /// into each rollup's window; the base windows still open are rebuilt
    /// by the replay from `cp.offset`, as every event of theirs lies at or
    /// after it. `None` when `cp.base_at` is unknown.
    ///
    /// The seeded windows keep `cp.resume_offset` as their first offset, so
    /// the checkpoints after this still name the full-replay resume point.
    pub fn restore_seeded(
        cfg: WindowConfig,
        rollups: &[Rollup],
        cp: &Checkpoint,
        seeds: impl IntoIterator<Item = Seed>,
    ) -> Option<Self> {
        let base_at = cp.base_at?;
        let mut w = PartitionWindows::restore(cfg, rollups, cp);
        w.max_ts = base_at;
        w.held = cp.held_at_base;
        w.next_offset = Some(cp.offset);
        w.seeded = true;
        let lateness = cfg.allowed_lateness_us;
        for s in seeds {
            let closed = cp.closed_max_ts.is_some_and(|c| cfg.closed_at(s.base_start_us, c));
            if !closed {
                continue; // rebuilt by the replay
            }
            for r in w.rollups.iter_mut().filter(|r| r.rollup.size_us > cfg.size_us) {
                let rstart = r.rollup.window_start(s.base_start_us);
                if cp.closed_max_ts.is_some_and(|c| r.rollup.closed_at(rstart, lateness, c)) {
                    continue;
                }
                let key = r.rollup.key(s.campaign, s.ad_format, s.country, s.device) as usize;
                let win = r.open.entry(rstart).or_insert_with(|| OpenWindow {
                    first_offset: cp.resume_offset,
                    max_ts_before: cp.max_ts_at_resume,
                    held_before: cp.held_at_resume,
                    slots: Vec::new(),
                    cells: Vec::new(),
                    forced: false,
                    dirty: false,
                });
                if key >= win.slots.len() {
                    win.slots.resize(key + 1, 0);
                }
                if win.slots[key] == 0 {
                    win.cells.push(Cell { key: key as u32, ..Cell::default() });
                    win.slots[key] = win.cells.len() as u32;
                }
                let cell = &mut win.cells[win.slots[key] as usize - 1];
                cell.totals.impressions += s.totals.impressions;
                cell.totals.clicks += s.totals.clicks;
                cell.totals.revenue_micros += s.totals.revenue_micros;
                cell.version = cell.version.max(s.counted_through);
                // Emitted again when the window fires (same totals and
                // version if nothing is added): a window that had not
                // fired before the restart has no row downstream yet.
                cell.changed = true;
                win.dirty = true;
            }
        }
        Some(w)
    }

    /// The watermark (see the module docs), or `None` before the first
    /// event.
    pub fn watermark(&self) -> Option<i64> {
        self.max_ts
    }

    /// Grows by one whenever the watermark passes a window end. The
    /// processor compares it around [`observe`](Self::observe) to learn
    /// *when* windows became due, for the fire-to-visible latency figure.
    pub fn fire_epoch(&self) -> u64 {
        self.fire_epoch
    }

    /// The next offset this partition expects (`None` before the first).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Number of windows in memory over all rollups (memory grows with this
    /// × keys, never with events).
    pub fn open_windows(&self) -> usize {
        self.rollups.iter().map(|r| r.open.len()).sum()
    }

    /// Cells (window × key) in memory over all rollups.
    pub fn open_cells(&self) -> usize {
        self.rollups.iter().flat_map(|r| r.open.values()).map(|w| w.cells.len()).sum()
    }

    /// Event ids held for deduplication, and the heap bytes they take.
    /// Spare (empty) sets kept for reuse count in the bytes.
    pub fn dedup_footprint(&self) -> (usize, usize) {
        let spare: usize = self.spare_ids.iter().map(WindowIds::bytes).sum();
        self.gate.values().fold((0, spare), |(n, b), w| (n + w.ids.len(), b + w.ids.bytes()))
    }

    /// Whether `offset` lies before the offset committed when this partition
    /// was restored: it is read again only to rebuild longer windows, and
    /// its rejection or lateness was already written (and acknowledged)
    /// before that commit.
    pub fn replaying(&self, offset: i64) -> bool {
        self.restored_commit.is_some_and(|c| offset < c)
    }

    /// Records that `offset` was consumed without touching any window (a
    /// rejected message), so the checkpoint can move past it.
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
    }

    /// Feeds one valid event. Windows closed by the resulting watermark are
    /// appended to `out` (final rows); fired windows' rows wait for
    /// [`emit_updates`](Self::emit_updates).
    ///
    /// The event's base window decides its fate for every rollup alike:
    /// late when that window is closed, a duplicate when its id was counted
    /// there. A rollup window is never closed while a base window inside it
    /// is open (its end is at or after theirs), so a counted event always
    /// finds every rollup's window open.
    pub fn observe(&mut self, offset: i64, ev: &Observation, out: &mut Vec<WindowRow>) -> Outcome {
        let Observation { ts, campaign, ad_format, country, device, event_type, revenue_micros, id, msg_ts } = *ev;
        self.next_offset = Some(offset + 1);
        let start = self.cfg.window_start(ts);
        if let Some(wm) = self.max_ts {
            if self.cfg.closed_at(start, wm) {
                return Outcome::Late { window_start_us: start, watermark_us: wm };
            }
        }
        let max_ts_before = self.max_ts;
        let held_before = self.held;
        let fired_before = self.gate.get(&start).map(|g| g.forced || self.cfg.ended_at(start, max_ts_before));
        let spare = &mut self.spare_ids;
        let g = self.gate.entry(start).or_insert_with(|| GateWindow {
            first_offset: offset,
            max_ts_before,
            held_before,
            ids: spare.pop().unwrap_or_default(),
            forced: false,
        });
        if !g.ids.insert(((ts - start) / IDS_SPAN_US) as usize, id) {
            return Outcome::Duplicate;
        }
        // After a restart, a replay meets the events of windows that were
        // closed, final, before it: they are in those rows already. They
        // still go to the longer windows that are not (which the replay is
        // rebuilding), and still move the watermark, as the first pass did.
        let restored_closed = self.restored_closed;
        let lateness = self.cfg.allowed_lateness_us;
        // Seeded: the longer windows already hold this base window's final
        // row.
        let base_done = self.seeded && restored_closed.is_some_and(|closed| self.cfg.closed_at(start, closed));
        for r in self.rollups.iter_mut().filter(|_| !base_done) {
            let rstart = r.rollup.window_start(ts);
            if restored_closed.is_some_and(|closed| r.rollup.closed_at(rstart, lateness, closed)) {
                continue;
            }
            let key = r.rollup.key(campaign, ad_format, country, device) as usize;
            let spare = &mut r.spare;
            let w = r.open.entry(rstart).or_insert_with(|| {
                let (slots, cells) = spare.pop().unwrap_or_default();
                OpenWindow {
                    first_offset: offset,
                    max_ts_before,
                    held_before,
                    slots,
                    cells,
                    forced: false,
                    dirty: false,
                }
            });
            if key >= w.slots.len() {
                w.slots.resize(key + 1, 0);
            }
            let cell = match w.slots[key] {
                0 => {
                    w.cells.push(Cell { key: key as u32, ..Cell::default() });
                    w.slots[key] = w.cells.len() as u32;
                    let last = w.cells.len() - 1;
                    &mut w.cells[last]
                }
                slot => &mut w.cells[slot as usize - 1],
            };
            match event_type {
                EventType::Impression => cell.totals.impressions += 1,
                EventType::Click => cell.totals.clicks += 1,
            }
            cell.totals.revenue_micros += revenue_micros;
            cell.version = cell.version.max(offset as u64 + 1);
            cell.changed = true;
            w.dirty = true;
        }

        self.handle_watermark(ts, msg_ts);
        if self.max_ts != max_ts_before {
            let (before, now) =
                (max_ts_before.map(|m| self.cfg.window_start(m)), self.max_ts.map(|m| self.cfg.window_start(m)));
            if before.is_some_and(|b| now.is_some_and(|n| b < n)) {
                self.fire_epoch += 1;
            }
            self.close_windows(out);
        }
        if restored_closed.is_some_and(|closed| self.cfg.closed_at(start, closed)) {
            return Outcome::AlreadyEmitted;
        }
        // A window created now for a time the watermark already passed
        // fires at once, so its first event is already an update.
        let fired = fired_before.unwrap_or_else(|| self.cfg.ended_at(start, max_ts_before));
        if fired {
            Outcome::Updated
        } else {
            Outcome::Counted
        }
    }

    /// Moves the clock for a counted event at `ts` whose message has Kafka
    /// timestamp `msg_ts`, by the rule of the module docs ("The
    /// watermark"): first the held event, if any, is corroborated by this
    /// one or dropped; then this event moves the watermark, or is held.
    fn handle_watermark(&mut self, ts: i64, msg_ts: Option<i64>) {
        let bound = self.cfg.max_ahead_us;
        if let Some(mut h) = self.held.take() {
            let near = |t: i64| t >= h.ts.saturating_sub(bound);
            if near(ts) || msg_ts.is_some_and(near) {
                h.support = h.support.saturating_add(1);
                if h.support >= CORROBORATING_EVENTS {
                    self.max_ts = self.max_ts.max(Some(h.ts));
                } else {
                    self.held = Some(h);
                }
            }
        }
        let ahead = match self.max_ts {
            Some(wm) => ts > wm.saturating_add(bound),
            None => msg_ts.is_some_and(|k| ts > k.saturating_add(bound)),
        };
        if !ahead {
            self.max_ts = self.max_ts.max(Some(ts));
        } else if let Some(h) = self.held.as_mut() {
            h.ts = h.ts.min(ts);
        } else {
            self.held = Some(Held { ts, support: 0 });
        }
    }

    /// Drops windows past their allowed lateness, emitting their final rows.
    fn close_windows(&mut self, out: &mut Vec<WindowRow>) {
        let Some(wm) = self.max_ts else { return };
        while let Some(entry) = self.gate.first_entry() {
            if !self.cfg.closed_at(*entry.key(), wm) {
                break;
            }
            let mut g = entry.remove();
            if self.spare_ids.len() < SPARE_ID_SETS {
                g.ids.clear();
                self.spare_ids.push(g.ids);
            }
        }
        let lateness = self.cfg.allowed_lateness_us;
        for (i, r) in self.rollups.iter_mut().enumerate() {
            r.close_windows_until(i as u8, wm, lateness, out);
        }
    }

    /// Fires every window in memory now, whatever the watermark: used when
    /// the partition has been idle for `--idle-timeout`, at shutdown and
    /// when a drain reaches the end of the topic, so the freshest numbers
    /// are downstream. The windows stay in memory, so later events for them
    /// follow the lateness rules, and the checkpoint still points at them,
    /// so a restart rebuilds them in full.
    pub fn fire_all(&mut self) {
        for g in self.gate.values_mut() {
            g.forced = true;
        }
        // Only windows with something unwritten: the flag lasts until the
        // next emission, which writes exactly those.
        for w in self.rollups.iter_mut().flat_map(|r| r.open.values_mut()) {
            w.forced |= w.dirty;
        }
    }

    /// Whether [`emit_updates`](Self::emit_updates) would emit anything.
    pub fn has_updates(&self) -> bool {
        self.rollups
            .iter()
            .any(|r| r.open.iter().any(|(&start, w)| w.dirty && (w.forced || r.rollup.ended_at(start, self.max_ts))))
    }

    /// Appends the rows of fired windows that changed since they were last
    /// emitted (not final).
    pub fn emit_updates(&mut self, out: &mut Vec<WindowRow>) {
        let max_ts = self.max_ts;
        for (i, r) in self.rollups.iter_mut().enumerate() {
            let rollup = r.rollup;
            for (&start, w) in r.open.iter_mut() {
                if w.dirty && (w.forced || rollup.ended_at(start, max_ts)) {
                    emit(i as u8, &rollup, start, w, false, out);
                }
            }
        }
    }

    /// What to commit, and where a restart must resume so that replay
    /// rebuilds every window in memory exactly: the first offset of the
    /// oldest base window (gate) still open, and of the oldest window of
    /// any rollup. `None` before the first message.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let next = self.next_offset?;
        // `None` orders below every `Some`, so this is the later of the two.
        let closed_max_ts = self.max_ts.max(self.restored_closed);
        let gate =
            self.gate.values().map(|g| (g.first_offset, (g.max_ts_before, g.held_before))).min_by_key(|&(o, _)| o);
        let oldest = gate
            .into_iter()
            .chain(
                self.rollups
                    .iter()
                    .flat_map(|r| r.open.values())
                    .map(|w| (w.first_offset, (w.max_ts_before, w.held_before))),
            )
            .min_by_key(|&(o, _)| o);
        let (resume_offset, (max_ts_at_resume, held_at_resume)) = oldest.unwrap_or((next, (self.max_ts, self.held)));
        // The commit offset is the latest of these, and the base clock the
        // one before it (unknown for an old checkpoint's commit offset).
        let (offset, base) = [
            (gate.map_or(next, |(o, _)| o), Some(gate.map_or((self.max_ts, self.held), |(_, m)| m))),
            (resume_offset, Some((max_ts_at_resume, held_at_resume))),
            (self.restored_commit.unwrap_or(i64::MIN), self.restored_base),
        ]
        .into_iter()
        .reduce(|best, c| if c.0 > best.0 { c } else { best })
        .unwrap_or((next, None));
        Some(Checkpoint {
            offset,
            resume_offset,
            max_ts_at_resume,
            closed_max_ts,
            base_at: base.map(|b| b.0),
            held_at_resume,
            held_at_base: base.and_then(|b| b.1),
        })
    }
}

/// Emits the window's changed cells (every cell when final), in the order
/// their keys first had events (downstream does not depend on row order;
/// the consoles sort what they print).
fn emit(idx: u8, rollup: &Rollup, start: i64, w: &mut OpenWindow, is_final: bool, out: &mut Vec<WindowRow>) {
    for cell in w.cells.iter_mut() {
        if !is_final && !cell.changed {
            continue;
        }
        cell.changed = false;
        out.push(WindowRow {
            rollup: idx,
            window_start_us: start,
            window_end_us: start + rollup.size_us,
            key: rollup.decode(cell.key),
            totals: cell.totals,
            version: 2 * cell.version + u64::from(is_final),
            is_final,
        });
    }
    w.dirty = false;
    w.forced = false;
}
