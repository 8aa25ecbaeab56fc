//! Event-time tumbling windows for one input partition. Pure and
//! synchronous: no I/O, no clocks, no Kafka; everything here is a function of
//! the sequence of `(offset, event)` it is fed (plus explicit [`fire_all`]
//! calls), which is what makes replay after a crash reproduce exactly the
//! same numbers.
//!
//! # The rules
//! - Windows are `[start, start + size)`, aligned to the Unix epoch. An event
//!   at exactly `start + size` belongs to the *next* window.
//! - The **watermark** of a partition is the max event time of its counted
//!   events, except those held as ahead of it (next section).
//! - A window **fires** once the watermark reaches its end (`end <=
//!   watermark`), or when the caller forces it ([`fire_all`]: idle partition,
//!   shutdown, drain). Firing emits its rows, marked not final.
//! - Until the watermark reaches `end + allowed lateness` the window stays in
//!   memory: an event that arrives for it after it fired is still counted and
//!   the changed rows are emitted again with a higher version
//!   ([`Outcome::Updated`]), so downstream converges on the exact total.
//! - Then the window **closes**: its rows are emitted a last time, marked
//!   final, and its state is dropped. An event for a closed window is
//!   **late** ([`Outcome::Late`]): not counted, but reported so the caller
//!   can write it, with its reason, to the late-events output. Nothing is
//!   dropped silently.
//! - An event whose `event_id` was already counted in the same base window
//!   *and the same second of event time* (`(ts - window start) / 1 s`) is a
//!   **duplicate** (a producer retry, which carries its original's
//!   timestamp) and is not counted again; the same id at another second is
//!   another event. (Ids are kept in one set per second, see `WindowIds`;
//!   the test oracle in `tests/common` applies this rule.) Ids are kept
//!   only while their window is in memory, so dedup memory is bounded by the
//!   events of the open windows, never by the stream: a 17-byte slot per id
//!   ([`ID_SLOT_BYTES`]) in hash tables between about half and 7/8 full, so
//!   19–39 heap bytes per id (≈ 30 MiB per million in flight, measured by
//!   `dedup_memory_per_million_events_in_flight`).
//! - The guard against a bad clock upstream (an event far ahead of its
//!   Kafka message timestamp, `max_future`) is the processor's: it compares
//!   two values stored with the message, so a replay decides the same, and
//!   a quiet gap of any length between valid events never trips it.
//!
//! # The watermark: one fast clock does not make on-time traffic late
//! The single place where this rule is written (the test oracle in
//! `tests/common` implements it independently). Let `W` be the partition's
//! watermark before an event and `B` be `--max-ahead` (default 60 s). Only
//! **counted** events move the clock (not late ones, duplicates or
//! rejected messages); for each, in offset order:
//! 1. If an event is **held** (below), this event either *supports* it —
//!    its event time, or its message's Kafka timestamp, is at least the
//!    held time − `B` — or not. Support adds one; at
//!    [`CORROBORATING_EVENTS`] (3) supports `W` becomes
//!    `max(W, held time)` and nothing is held any more. An event that does
//!    not support it drops the held event: the partition's traffic is
//!    elsewhere, and the held event never moves `W`.
//! 2. Then the event itself is **ahead** when `ts > W + B` (before the
//!    partition's first event: when `ts` is more than `B` ahead of its own
//!    Kafka timestamp). An event that is not ahead sets `W = max(W, ts)`.
//!    An ahead event is held (or, if one is held already and it supported
//!    it, lowers the held time to `min(held, ts)`).
//!
//! A held event is still counted in its own window (which stays in memory,
//! holding the checkpoint back, until the watermark passes it). So a device
//! with a fast clock, or a producer stamping CreateTime from the event, can
//! no longer move a partition's watermark an hour ahead and make its
//! on-time traffic late: that takes four consecutive counted events at or
//! near its time (the held one and three supporters). A real resumption
//! after a quiet spell, where every event is at or beyond the first, moves
//! `W` at its fourth event. The
//! decision depends on message contents, offsets and Kafka timestamps only
//! (the held state travels in the checkpoint), so a replay repeats it. A
//! message without a Kafka timestamp can support by its event time only,
//! and its `--max-future` guard (the processor's) measures from the
//! partition's watermark instead of the message timestamp.
//!
//! # Rollups
//! Every configured [`Rollup`] (a set of dimensions and a window size, a
//! multiple of the base window `--window`) has its own windows, fed in the
//! same pass. The fate of an event (late, duplicate, counted) is decided
//! once, by its **base** window, so all rollups agree: a 1 h row is the sum
//! of its 360 base rows, a campaign × format row the sum of its segments,
//! and a late event is late for all of them. A longer window closes when
//! its last base window does (same allowed lateness after its end).
//! Longer windows hold the full-replay resume point back (see below): with
//! a 1 h rollup that is up to an hour and the lateness of each partition.
//! A restart that can read the partition's final base rows back from
//! downstream does not go there: [`PartitionWindows::restore_seeded`].
//!
//! # Checkpoints and replay
//! Each partition's state is summarised by a [`Checkpoint`]: the offset to
//! resume from (the first offset of the oldest window still in memory) and
//! two event times. `max_ts_at_resume` is the watermark *before* that
//! offset, with the event held for corroboration then (`held_at_resume`),
//! so a replay classifies every event (counted, late, duplicate) exactly as
//! the first pass did. A held event's window stays in memory until the
//! watermark passes it, so it holds the checkpoint back that long (about
//! `--max-future` of the partition's event time at most: the processor
//! rejects anything further ahead of the message timestamp, or, without
//! one, of the watermark). `closed_max_ts` records how far windows were
//! already closed, so a replay does not re-open, and overwrite with a partial
//! sum, a window that is already final downstream. See
//! [`PartitionWindows::restore`]. The optional `bat=` token (the max event
//! time before the committed offset) lets a restart read on from the
//! committed offset instead, the longer windows seeded from downstream
//! ([`PartitionWindows::restore_seeded`]).
//!
//! [`fire_all`]: PartitionWindows::fire_all

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::engine::event::{AdFormat, Country, Device, EventType};
pub use crate::engine::rollup::{Rollup, SegmentKey};

/// Window geometry and tolerances, all in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    pub size_us: i64,
    pub allowed_lateness_us: i64,
    pub max_future_us: i64,
    /// How far ahead of its partition's watermark an event may be and still
    /// move it at once (`--max-ahead`); further ahead it must be
    /// corroborated first (see the module docs, "The watermark").
    pub max_ahead_us: i64,
}

/// `--max-ahead`'s default: 60 s.
pub const DEFAULT_MAX_AHEAD_US: i64 = 60_000_000;

/// Further counted events it takes to corroborate an event that is ahead
/// of its partition's watermark (see the module docs, "The watermark").
pub const CORROBORATING_EVENTS: u8 = 3;

impl WindowConfig {
    pub fn new(size_us: i64, allowed_lateness_us: i64, max_future_us: i64) -> Self {
        assert!(size_us > 0, "window size must be positive");
        WindowConfig {
            size_us,
            allowed_lateness_us: allowed_lateness_us.max(0),
            max_future_us: max_future_us.max(0),
            max_ahead_us: DEFAULT_MAX_AHEAD_US,
        }
    }

    /// The same with `--max-ahead` set.
    pub fn with_max_ahead(self, max_ahead_us: i64) -> Self {
        WindowConfig { max_ahead_us: max_ahead_us.max(0), ..self }
    }

    /// Start of the window containing `ts`.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_us) * self.size_us
    }

    /// Whether the window starting at `start` has fired (its end passed)
    /// once the watermark is `wm`.
    fn ended_at(&self, start: i64, wm: Option<i64>) -> bool {
        wm.is_some_and(|m| start.saturating_add(self.size_us) <= m)
    }

    /// Whether the window starting at `start` is closed once the watermark
    /// is `wm`.
    pub fn closed_at(&self, start: i64, wm: i64) -> bool {
        start.saturating_add(self.size_us).saturating_add(self.allowed_lateness_us) <= wm
    }
}

/// Totals of one window × key within one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub impressions: u64,
    pub clicks: u64,
    pub revenue_micros: i64,
}

/// One emitted row: a partition's contribution to a (window, key) cell of
/// one rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRow {
    /// Index of the rollup in the configured list.
    pub rollup: u8,
    pub window_start_us: i64,
    pub window_end_us: i64,
    /// The dimension values; `None` where the rollup leaves one out.
    pub key: SegmentKey,
    pub totals: Totals,
    /// `2 × (1 + the highest offset counted in this cell) + (1 if final)`.
    /// Deterministic, grows whenever the cell gains events, and the final
    /// row outranks every earlier one of the same cell; so downstream keeps
    /// the row with the highest version (ReplacingMergeTree) and replays are
    /// idempotent.
    pub version: u64,
    /// `true` when the window was closed (past the allowed lateness); `false`
    /// for an early emission that later events may still update.
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
    pub country: Country,
    pub device: Device,
    pub event_type: EventType,
    pub revenue_micros: i64,
    /// The event id reduced to 128 bits ([`crate::engine::event::event_key`]), for
    /// deduplication.
    pub id: u128,
    /// The Kafka timestamp of its message, µs (`None`: the message has
    /// none). Only corroborates an event ahead of the watermark.
    pub msg_ts: Option<i64>,
}

/// An event that was ahead of its partition's watermark, waiting for
/// corroboration (see the module docs, "The watermark"): the lowest event
/// time of the run of events that held it, and how many corroborated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub ts: i64,
    pub support: u8,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Added to a window that has not fired yet.
    Counted,
    /// Added to a window that already fired: its changed rows are emitted
    /// again (a late update within the allowed lateness).
    Updated,
    /// Its event id was already counted in this window.
    Duplicate,
    /// Its window was closed (watermark past end + allowed lateness) before
    /// it arrived.
    Late { window_start_us: i64, watermark_us: i64 },
    /// A replay after restart met an event of a window that was already
    /// closed, final, before the restart: it is already in that row.
    AlreadyEmitted,
}

/// A final base row downstream, seeding a longer window at a restart (see
/// [`PartitionWindows::restore_seeded`]). Dimensions the row leaves out may
/// hold any value: only rollups that keep them are seeded from it.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    pub base_start_us: i64,
    pub campaign: u32,
    pub ad_format: AdFormat,
    pub country: Country,
    pub device: Device,
    pub totals: Totals,
    /// 1 + the highest offset counted in it (`(version - 1) / 2` of a final
    /// row).
    pub counted_through: u64,
}

/// Where to resume a partition and what its clocks were there.
///
/// Two offsets: `offset`, committed to Kafka, is where the base windows
/// need the stream again (every event before it is in rows of closed base
/// windows), so the group's lag means what operators expect; `resume_offset`
/// (at or before it) is where a restart reads from, which also rebuilds the
/// longer windows still open (a 1 h rollup needs up to an hour back). It
/// travels in the commit metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The Kafka offset to commit.
    pub offset: i64,
    /// The next message to read after a restart (`<= offset`).
    pub resume_offset: i64,
    /// Max event time seen before `resume_offset` (None: no event yet).
    pub max_ts_at_resume: Option<i64>,
    /// Max event time seen overall; every window closed at that watermark
    /// (`end + lateness <= closed_max_ts`) has been emitted as final.
    pub closed_max_ts: Option<i64>,
    /// Max event time seen before `offset` (metadata token `bat=`), when
    /// known: with it a restart can read from `offset` and seed the longer
    /// windows from the final base rows downstream
    /// ([`PartitionWindows::restore_seeded`]). `None`: not recorded (older
    /// metadata), or a checkpoint whose `offset` has no known clock.
    pub base_at: Option<Option<i64>>,
    /// The event held for corroboration before `resume_offset`, if any
    /// (metadata token `held=TS:SUPPORT`, absent when none), so a replay
    /// moves the watermark exactly as the first pass did.
    pub held_at_resume: Option<Held>,
    /// The event held for corroboration before `offset` (metadata token
    /// `bheld=TS:SUPPORT`, written beside `bat=`), for a restart that reads
    /// on from `offset` ([`PartitionWindows::restore_seeded`]).
    pub held_at_base: Option<Held>,
}

impl Checkpoint {
    const PREFIX: &'static str = "adstream/2";

    /// Encodes the checkpoint as Kafka commit metadata (well under the
    /// broker's 4 KiB `offset.metadata.max.bytes`). The prefix carries the
    /// meaning of the clocks: `adstream/1` (watermark = max − lateness) is
    /// not read back as `/2`, so an upgrade starts those partitions fresh
    /// from the committed offset rather than misreading them.
    pub fn metadata(&self) -> String {
        fn t(v: Option<i64>) -> String {
            v.map_or_else(|| "-".to_string(), |v| v.to_string())
        }
        let mut m = format!("{} at={} closed={}", Self::PREFIX, t(self.max_ts_at_resume), t(self.closed_max_ts));
        if self.resume_offset != self.offset {
            // `from=` first: older readers take the fourth token as it.
            m.push_str(&format!(" from={}", self.resume_offset));
            if let Some(b) = self.base_at {
                m.push_str(&format!(" bat={}", t(b)));
            }
            if let Some(h) = self.held_at_base {
                m.push_str(&format!(" bheld={}:{}", h.ts, h.support));
            }
        }
        if let Some(h) = self.held_at_resume {
            m.push_str(&format!(" held={}:{}", h.ts, h.support));
        }
        m
    }

    /// A checkpoint that resumes where it commits.
    pub fn at(offset: i64, max_ts_at_resume: Option<i64>, closed_max_ts: Option<i64>) -> Self {
        Checkpoint {
            offset,
            resume_offset: offset,
            max_ts_at_resume,
            closed_max_ts,
            base_at: Some(max_ts_at_resume),
            held_at_resume: None,
            held_at_base: None,
        }
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
        // Optional tokens, in this order. `from=` absent (a checkpoint
        // without longer windows open, or written before rollups): resume
        // where committed. `held=` absent: no event held (or written before
        // the rule).
        let mut rest = parts.peekable();
        let resume_offset = match rest.next_if(|t| t.starts_with("from=")) {
            Some(f) => f.strip_prefix("from=")?.parse().ok().filter(|&r| r <= offset)?,
            None => offset,
        };
        // Optional trailing `key=value` tokens after `from=`; unknown keys
        // are ignored. `held=` absent: no event held (or written before the
        // rule). `bat=`/`bheld=`: the clock before the commit offset.
        let mut base_at = (resume_offset == offset).then_some(at);
        let (mut held, mut held_at_base) = (None, None);
        fn held_token(v: &str) -> Option<Held> {
            let (ts, support) = v.split_once(':')?;
            Some(Held { ts: ts.parse().ok()?, support: support.parse().ok()? })
        }
        for tok in rest {
            if let Some(v) = tok.strip_prefix("bat=") {
                base_at = Some(t(v)?);
            } else if let Some(v) = tok.strip_prefix("held=") {
                held = Some(held_token(v)?);
            } else if let Some(v) = tok.strip_prefix("bheld=") {
                held_at_base = Some(held_token(v)?);
            }
        }
        if resume_offset == offset {
            held_at_base = held;
        }
        Some(Checkpoint {
            offset,
            resume_offset,
            max_ts_at_resume: at,
            closed_max_ts: closed,
            base_at,
            held_at_resume: held,
            held_at_base,
        })
    }
}

/// Hashes a 128-bit event key into 64 bits with a per-process random key:
/// each half is xored with its own secret word and the two multiplied into
/// 128 bits, whose halves are folded together (foldhash's folded multiply).
/// Event ids come from client SDKs, so anyone can choose them: an unkeyed
/// fold (the xor and multiply this replaced) let 200,000 crafted ids land
/// in one bucket and made deduplication quadratic. Without the secret no
/// one can predict which ids collide; the cost stays one multiply.
pub struct IdHasher {
    h: u64,
    key: (u64, u64),
}

/// The process's secret for [`IdHasher`], drawn once from std's random
/// source (the one `HashMap`'s default SipHash keys come from).
fn id_hash_key() -> (u64, u64) {
    static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        // Odd, so neither half can be cancelled to zero by a known id.
        (s.hash_one(0x1d5_u64) | 1, s.hash_one(0x2e6_u64) | 1)
    })
}

impl Default for IdHasher {
    fn default() -> Self {
        IdHasher { h: 0, key: id_hash_key() }
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.h
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(b) ^ u128::from(self.h));
        }
    }

    fn write_u128(&mut self, v: u128) {
        let (k0, k1) = self.key;
        let p = u128::from((v as u64) ^ k0) * u128::from(((v >> 64) as u64) ^ k1 ^ self.h);
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// Heap bytes per slot of an [`IdSet`]: the key plus hashbrown's control byte.
const ID_SLOT_BYTES: usize = std::mem::size_of::<u128>() + 1;

/// Event time covered by one id set of a window.
const IDS_SPAN_US: i64 = 1_000_000;

/// The event ids of one window, in one set per second of event time. A
/// redelivery carries its original's timestamp, so it meets the same set;
/// and as events arrive roughly in time order, the sets being written hold
/// the last second or two of ids, which stay in cache, where one set for a
/// 60 s window grows to hundreds of thousands of ids and costs a cache miss
/// per event (measured: the scaling bench's 60 s windows).
#[derive(Debug, Default)]
struct WindowIds {
    sets: Vec<IdSet>,
}

impl WindowIds {
    /// Adds `id` to the set of second `slot`; false if it was there.
    fn insert(&mut self, slot: usize, id: u128) -> bool {
        if slot >= self.sets.len() {
            self.sets.resize_with(slot + 1, IdSet::default);
        }
        self.sets[slot].insert(id)
    }

    /// Empties the sets, keeping their capacity for reuse.
    fn clear(&mut self) {
        self.sets.iter_mut().for_each(IdSet::clear);
    }

    fn len(&self) -> usize {
        self.sets.iter().map(IdSet::len).sum()
    }

    fn bytes(&self) -> usize {
        self.sets.iter().map(|s| s.capacity() * ID_SLOT_BYTES).sum()
    }
}

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
    fn close_expired(&mut self, idx: u8, wm: i64, lateness: i64, out: &mut Vec<WindowRow>) {
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

        self.advance(ts, msg_ts);
        if self.max_ts != max_ts_before {
            let (before, now) =
                (max_ts_before.map(|m| self.cfg.window_start(m)), self.max_ts.map(|m| self.cfg.window_start(m)));
            if before.is_some_and(|b| now.is_some_and(|n| b < n)) {
                self.fire_epoch += 1;
            }
            self.close_expired(out);
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
    fn advance(&mut self, ts: i64, msg_ts: Option<i64>) {
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
    fn close_expired(&mut self, out: &mut Vec<WindowRow>) {
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
            r.close_expired(i as u8, wm, lateness, out);
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
    use crate::engine::rollup::Dims;
    use EventType::{Click, Impression};

    const S: i64 = 1_000_000;

    /// One partition with the campaign × format rollup at the base window.
    fn pw(cfg: WindowConfig) -> PartitionWindows {
        PartitionWindows::new(cfg, &[Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us)])
    }

    fn restored(cfg: WindowConfig, cp: &Checkpoint) -> PartitionWindows {
        PartitionWindows::restore(cfg, &[Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us)], cp)
    }

    /// Downstream: (rollup, window start, key) → (totals, version).
    type Table = BTreeMap<(u8, i64, SegmentKey), (Totals, u64)>;

    fn obs(ts: i64, campaign: u32, ad_format: AdFormat, event_type: EventType, revenue_micros: i64) -> Observation {
        // Distinct ids unless a test says otherwise.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Observation {
            ts,
            campaign,
            ad_format,
            country: Country::Us,
            device: Device::Ios,
            event_type,
            revenue_micros,
            id,
            msg_ts: None,
        }
    }

    fn cfg() -> WindowConfig {
        WindowConfig::new(10 * S, 5 * S, 3600 * S)
    }

    type Ev = (f64, u32, AdFormat, EventType, i64);

    /// Feeds (ts seconds, campaign, format, type, revenue) at offsets
    /// `first_offset..`, returning the final rows closed and the outcomes.
    fn feed(w: &mut PartitionWindows, first_offset: i64, events: &[Ev]) -> (Vec<WindowRow>, Vec<Outcome>) {
        let mut out = Vec::new();
        let mut outcomes = Vec::new();
        for (i, &(t, c, f, ty, r)) in events.iter().enumerate() {
            let ts = (t * S as f64).round() as i64;
            outcomes.push(w.observe(first_offset + i as i64, &obs(ts, c, f, ty, r), &mut out));
        }
        (out, outcomes)
    }

    fn updates(w: &mut PartitionWindows) -> Vec<WindowRow> {
        let mut out = Vec::new();
        w.emit_updates(&mut out);
        out
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
    fn fire_epoch_moves_when_the_watermark_passes_a_window_end() {
        let mut w = pw(cfg());
        let b = |t: f64| (t, 0, AdFormat::Banner, Impression, 0);
        feed(&mut w, 0, &[b(1.0), b(9.9)]);
        assert_eq!(w.fire_epoch(), 0, "window [0, 10) still open");
        feed(&mut w, 2, &[b(10.0)]);
        assert_eq!(w.fire_epoch(), 1, "watermark 10 s: [0, 10) fired");
        feed(&mut w, 3, &[b(5.0), b(19.9)]);
        assert_eq!(w.fire_epoch(), 1, "no window end passed");
        feed(&mut w, 5, &[b(45.0)]);
        assert_eq!(w.fire_epoch(), 2, "one jump past several ends is one firing moment");
        let mut r = restored(cfg(), &w.checkpoint().unwrap());
        assert_eq!(r.fire_epoch(), 0);
        // The checkpoint resumes at offset 5 (window [40, 50)) with the
        // watermark seen before it, 19.9 s: 45 passes the end 20, 50 the end 50.
        feed(&mut r, 5, &[b(45.0), b(46.0), b(50.0)]);
        assert_eq!(r.fire_epoch(), 2, "a restored partition counts from its checkpointed watermark");
    }

    #[test]
    fn event_exactly_on_the_boundary_goes_to_the_next_window() {
        let mut w = pw(cfg());
        feed(&mut w, 0, &[(9.999999, 0, AdFormat::Banner, Impression, 0), (10.0, 0, AdFormat::Banner, Impression, 0)]);
        w.fire_all();
        let out = updates(&mut w);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].window_start_us, 0);
        assert_eq!(out[1].window_start_us, 10 * S);
        assert_eq!(out[1].window_end_us, 20 * S);
        assert!(out.iter().all(|r| r.totals.impressions == 1 && !r.is_final));
    }

    #[test]
    fn window_fires_at_its_end_and_closes_after_the_allowed_lateness() {
        let mut w = pw(cfg());
        feed(&mut w, 0, &[(1.0, 0, AdFormat::Banner, Impression, 0), (9.999, 0, AdFormat::Banner, Impression, 0)]);
        assert!(!w.has_updates(), "watermark 9.999 < end 10");
        assert!(updates(&mut w).is_empty());
        let (closed, _) = feed(&mut w, 2, &[(10.0, 0, AdFormat::Banner, Click, 20_000)]);
        assert!(closed.is_empty());
        assert!(w.has_updates());
        let fired = updates(&mut w);
        assert_eq!(fired.len(), 1, "watermark 10 fires [0,10)");
        assert!(!fired[0].is_final);
        assert_eq!(fired[0].totals, Totals { impressions: 2, clicks: 0, revenue_micros: 0 });
        assert_eq!(fired[0].version, 2 * 2);
        assert!(updates(&mut w).is_empty(), "nothing changed since");
        let (closed, _) = feed(&mut w, 3, &[(14.999, 0, AdFormat::Banner, Impression, 0)]);
        assert!(closed.is_empty(), "still within the 5 s lateness");
        let (closed, _) = feed(&mut w, 4, &[(15.0, 0, AdFormat::Banner, Impression, 0)]);
        assert_eq!(closed.len(), 1, "watermark 15 = end + lateness closes [0,10)");
        assert!(closed[0].is_final);
        assert_eq!(closed[0].totals, fired[0].totals);
        assert_eq!(closed[0].version, 2 * 2 + 1, "the final row outranks the fired one");
        assert_eq!(w.open_windows(), 1);
    }

    #[test]
    fn late_event_within_lateness_updates_the_fired_window() {
        let mut w = pw(cfg());
        let (_, outcomes) =
            feed(&mut w, 0, &[(8.0, 0, AdFormat::Banner, Impression, 0), (13.0, 0, AdFormat::Banner, Impression, 0)]);
        assert_eq!(outcomes, vec![Outcome::Counted, Outcome::Counted]);
        let first = updates(&mut w);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].totals, Totals { impressions: 1, clicks: 0, revenue_micros: 0 });
        // 3.5 s behind the watermark, 1.5 s before lateness runs out.
        let (_, outcomes) = feed(&mut w, 2, &[(9.5, 0, AdFormat::Banner, Click, 50_000)]);
        assert_eq!(outcomes, vec![Outcome::Updated]);
        let second = updates(&mut w);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].totals, Totals { impressions: 1, clicks: 1, revenue_micros: 50_000 });
        assert!(second[0].version > first[0].version);
        let (closed, _) = feed(&mut w, 3, &[(16.0, 0, AdFormat::Banner, Impression, 0)]);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].totals, second[0].totals);
        assert!(closed[0].is_final && closed[0].version > second[0].version);
    }

    #[test]
    fn only_changed_cells_are_emitted_again() {
        let mut w = pw(cfg());
        feed(
            &mut w,
            0,
            &[
                (1.0, 0, AdFormat::Banner, Impression, 0),
                (1.0, 1, AdFormat::Banner, Impression, 0),
                (11.0, 0, AdFormat::Banner, Impression, 0),
            ],
        );
        assert_eq!(updates(&mut w).len(), 2);
        feed(&mut w, 3, &[(2.0, 1, AdFormat::Banner, Click, 5)]);
        let again = updates(&mut w);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].key.campaign, again[0].totals.clicks), (Some(1), 1));
    }

    #[test]
    fn events_behind_a_closed_window_are_late_not_lost() {
        let mut w = pw(cfg());
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
        assert_eq!(outcomes[2], Outcome::Late { window_start_us: 0, watermark_us: 16 * S });
    }

    #[test]
    fn a_gap_of_any_length_between_events_is_no_reason_to_refuse_one() {
        let mut w = pw(cfg());
        let hour = 3600.0;
        let (_, outcomes) = feed(
            &mut w,
            0,
            &[
                (100.0, 0, AdFormat::Banner, Impression, 0),
                (100.0 + 2.0 * hour, 0, AdFormat::Banner, Impression, 0),
                (100.0 + 27.0 * hour, 0, AdFormat::Banner, Impression, 0),
            ],
        );
        assert_eq!(outcomes, vec![Outcome::Counted; 3]);
        // Each resumption is ahead of the watermark; its fourth event moves it.
        assert_eq!(w.watermark(), Some(100 * S), "held, one supporter so far");
        let t = 100.0 + 27.0 * hour;
        let b = |t: f64| (t, 0, AdFormat::Banner, Impression, 0);
        let (_, outcomes) = feed(&mut w, 3, &[b(t + 1.0), b(t + 2.0), b(t + 3.0)]);
        assert_eq!(outcomes, vec![Outcome::Counted; 3]);
        assert_eq!(w.watermark(), Some(((100.0 + 2.0 * hour) as i64) * S), "corroborated: the lowest held time");
        feed(&mut w, 6, &[b(t + 4.0), b(t + 5.0), b(t + 6.0), b(t + 7.0)]);
        assert_eq!(w.watermark(), Some((t + 7.0) as i64 * S), "and the next run catches up");
    }

    #[test]
    fn a_redelivered_event_id_is_counted_once_while_its_window_is_in_memory() {
        let mut w = pw(cfg());
        let mut out = Vec::new();
        let click = |ts: i64, id: u128| Observation {
            ts,
            campaign: 0,
            ad_format: AdFormat::Banner,
            country: Country::Us,
            device: Device::Ios,
            event_type: Click,
            revenue_micros: 30_000,
            id,
            msg_ts: None,
        };
        assert_eq!(w.observe(0, &click(S, 7), &mut out), Outcome::Counted);
        assert_eq!(w.observe(1, &click(S, 7), &mut out), Outcome::Duplicate);
        assert_eq!(w.observe(2, &click(12 * S, 8), &mut out), Outcome::Counted);
        // After the window fired, within lateness: still recognised.
        assert_eq!(w.observe(3, &click(S, 7), &mut out), Outcome::Duplicate);
        assert_eq!(w.dedup_footprint().0, 2);
        w.fire_all();
        let rows = updates(&mut w);
        assert_eq!(rows[0].totals, Totals { impressions: 0, clicks: 1, revenue_micros: 30_000 });
        assert_eq!(rows[0].version, 2, "the duplicate did not bump the version");
        // Once the window closed, its ids are gone with it: a redelivery is late.
        w.observe(4, &click(20 * S, 9), &mut out);
        assert_eq!(w.observe(5, &click(S, 7), &mut out), Outcome::Late { window_start_us: 0, watermark_us: 20 * S });
        assert_eq!(w.dedup_footprint().0, 2, "ids 8 and 9");
        // A new window reuses the closed one's id set, emptied.
        assert_eq!(w.observe(6, &click(35 * S, 7), &mut out), Outcome::Counted, "a recycled id set starts empty");
        assert_eq!(w.observe(7, &click(35 * S, 7), &mut out), Outcome::Duplicate);
    }

    #[test]
    fn dedup_memory_per_million_events_in_flight() {
        let mut w = pw(WindowConfig::new(3600 * S, 0, 3600 * S));
        let mut out = Vec::new();
        let n = 1_000_000u64;
        for i in 0..n {
            // Generator-shaped ids: a constant run id and a sequence number.
            let id = (0xDEAD_BEEF_u128 << 64) | u128::from(i);
            let o = Observation {
                ts: S + i as i64,
                campaign: (i % 5) as u32,
                ad_format: AdFormat::Banner,
                country: Country::Us,
                device: Device::Ios,
                event_type: Impression,
                revenue_micros: 0,
                id,
                msg_ts: None,
            };
            assert_eq!(w.observe(i as i64, &o, &mut out), Outcome::Counted);
        }
        let (ids, bytes) = w.dedup_footprint();
        assert_eq!(ids as u64, n);
        let per_million_mb = bytes as f64 / ids as f64 * 1e6 / (1024.0 * 1024.0);
        println!("dedup: {ids} ids in flight take {bytes} bytes = {per_million_mb:.1} MiB per million events");
        assert!(per_million_mb < 40.0, "{per_million_mb} MiB per million");
    }

    #[test]
    fn keys_are_separate() {
        let mut w = pw(cfg());
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
        let (out, _) = feed(&mut w, 4, &[(30.0, 0, AdFormat::Banner, Impression, 0)]);
        let mut out: Vec<_> = out.into_iter().filter(|r| r.window_start_us == 0).collect();
        out.sort_by_key(|r| r.key);
        let keys: Vec<_> = out.iter().map(|r| (r.key.campaign, r.key.ad_format)).collect();
        assert_eq!(
            keys,
            vec![
                (Some(0), Some(AdFormat::Banner)),
                (Some(0), Some(AdFormat::Interstitial)),
                (Some(2), Some(AdFormat::RewardedVideo))
            ]
        );
        assert!(out.iter().all(|r| r.key.country.is_none() && r.key.device.is_none()), "not in this rollup");
        assert_eq!(out[0].totals, Totals { impressions: 1, clicks: 0, revenue_micros: 0 });
        assert_eq!(out[1].totals, Totals { impressions: 0, clicks: 1, revenue_micros: 7 });
        assert_eq!(out[2].totals, Totals { impressions: 1, clicks: 1, revenue_micros: 9 });
        assert_eq!(out[2].version, 2 * 3 + 1);
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
    fn checkpoint_points_at_the_oldest_window_in_memory() {
        let mut w = pw(cfg());
        assert_eq!(w.checkpoint(), None);
        w.skip(41);
        assert_eq!(w.checkpoint().unwrap().offset, 42);
        feed(&mut w, 42, &[(1.0, 0, AdFormat::Banner, Impression, 0), (12.0, 0, AdFormat::Banner, Impression, 0)]);
        let cp = w.checkpoint().unwrap();
        assert_eq!(cp, Checkpoint::at(42, None, Some(12 * S)), "[0,10) fired but not closed: still replayed");
        feed(&mut w, 44, &[(16.0, 0, AdFormat::Banner, Impression, 0)]);
        let cp = w.checkpoint().unwrap();
        assert_eq!(cp, Checkpoint::at(43, Some(S), Some(16 * S)));
    }

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_ignored() {
        let cp = Checkpoint::at(7, Some(-5), None);
        assert_eq!(Checkpoint::from_metadata(7, &cp.metadata()), Some(cp));
        assert_eq!(Checkpoint::from_metadata(7, ""), None);
        assert_eq!(Checkpoint::from_metadata(7, "adstream/2 at=x closed=-"), None);
        assert_eq!(Checkpoint::from_metadata(7, "adstream/1 at=1 closed=2"), None, "older clock meaning");
        assert_eq!(Checkpoint::from_metadata(7, "someone else"), None);
    }

    /// A deterministic pseudo-random jittered stream with some redelivered
    /// events (same id, same content), used to check that "crash anywhere,
    /// restore from the last checkpoint, replay" yields the same final rows
    /// and the same late set as one uninterrupted pass.
    fn jittered_stream(n: usize, seed: u64) -> Vec<Observation> {
        let mut x = seed;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut events: Vec<Observation> = Vec::with_capacity(n);
        for i in 0..n {
            if i > 10 && next() % 50 == 0 {
                let back = (next() % 10) as usize + 1;
                events.push(events[i - back]);
                continue;
            }
            let base = i as f64 * 0.05;
            let jitter = (next() % 8000) as f64 / 1000.0;
            let click = next() % 10 == 0;
            events.push(Observation {
                ts: ((base - jitter) * S as f64).round() as i64,
                campaign: (next() % 5) as u32,
                ad_format: AdFormat::ALL[(next() % 3) as usize],
                country: Country::ALL[(next() % 7) as usize],
                device: Device::ALL[(next() % 2) as usize],
                event_type: if click { Click } else { Impression },
                revenue_micros: if click { (next() % 1000) as i64 } else { 0 },
                id: u128::from(i as u64) | (7 << 64),
                msg_ts: None,
            });
        }
        events
    }

    fn upsert(table: &mut Table, rows: &mut Vec<WindowRow>) {
        for row in rows.drain(..) {
            let e = table.entry((row.rollup, row.window_start_us, row.key)).or_insert((row.totals, row.version));
            if row.version >= e.1 {
                *e = (row.totals, row.version);
            }
        }
    }

    /// Runs the stream through one partition with crashes (state lost,
    /// restored from the last commit) and idle firings at the given
    /// positions; "writes" every 37 events, then commits.
    fn run_with_crashes(events: &[Observation], crash_at: &[usize], fire_at: &[usize]) -> (Table, Vec<i64>, u64) {
        run_rollups_with_crashes(&[Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S)], events, crash_at, fire_at, None)
    }

    /// [`run_with_crashes`] over any rollups (base window 10 s). With
    /// `seed_from` (a base-size rollup with every dimension), a restart
    /// reads on from the commit offset with the longer windows seeded from
    /// that rollup's final rows downstream, as `run` does with ClickHouse.
    fn run_rollups_with_crashes(
        rollups: &[Rollup],
        events: &[Observation],
        crash_at: &[usize],
        fire_at: &[usize],
        seed_from: Option<u8>,
    ) -> (Table, Vec<i64>, u64) {
        // The "downstream": a ReplacingMergeTree keeping the highest version.
        let mut table: Table = BTreeMap::new();
        let mut late: std::collections::BTreeSet<i64> = Default::default();
        let mut dups = std::collections::BTreeSet::new();
        let mut committed: Option<Checkpoint> = None;
        let mut w = PartitionWindows::new(cfg(), rollups);
        let mut pos = 0usize;
        let mut crashes = crash_at.iter().copied().peekable();
        let mut out = Vec::new();
        let mut reread = 0usize;
        while pos < events.len() {
            if crashes.peek() == Some(&pos) {
                crashes.next();
                // Crash: lose in-memory state and the unwritten output,
                // resume at the committed checkpoint.
                out.clear();
                let seeded = match (committed, seed_from) {
                    (Some(cp), Some(src)) if cp.resume_offset < cp.offset => {
                        let seeds = table.iter().filter(|((r, _, _), (_, v))| *r == src && v % 2 == 1).map(
                            |(&(_, start, k), &(totals, v))| Seed {
                                base_start_us: start,
                                campaign: k.campaign.unwrap(),
                                ad_format: k.ad_format.unwrap(),
                                country: k.country.unwrap(),
                                device: k.device.unwrap(),
                                totals,
                                counted_through: (v - 1) / 2,
                            },
                        );
                        PartitionWindows::restore_seeded(cfg(), rollups, &cp, seeds).map(|w| (w, cp.offset))
                    }
                    _ => None,
                };
                (w, pos) = match seeded {
                    Some((w, at)) => {
                        reread += pos - at as usize;
                        (w, at as usize)
                    }
                    None => {
                        let at = committed.map_or(0, |cp| cp.resume_offset as usize);
                        reread += pos - at;
                        let w = committed.map_or_else(
                            || PartitionWindows::new(cfg(), rollups),
                            |cp| PartitionWindows::restore(cfg(), rollups, &cp),
                        );
                        (w, at)
                    }
                };
                continue;
            }
            if fire_at.contains(&pos) {
                w.fire_all();
            }
            match w.observe(pos as i64, &events[pos], &mut out) {
                Outcome::Late { .. } => {
                    late.insert(pos as i64);
                }
                Outcome::Duplicate => {
                    dups.insert(pos);
                }
                Outcome::Counted | Outcome::Updated | Outcome::AlreadyEmitted => {}
            }
            pos += 1;
            if pos.is_multiple_of(37) {
                w.emit_updates(&mut out);
                upsert(&mut table, &mut out);
                let cp = w.checkpoint();
                if let (Some(before), Some(now)) = (committed, cp) {
                    assert!(now.offset >= before.offset, "the committed offset never goes back: {before:?} → {now:?}");
                    assert!(now.resume_offset <= now.offset);
                }
                committed = cp;
            }
        }
        w.fire_all();
        w.emit_updates(&mut out);
        upsert(&mut table, &mut out);
        REREAD.with(|r| r.set(reread));
        (table, late.into_iter().collect(), dups.len() as u64)
    }

    thread_local! {
        /// Events read again after the crashes of the last run.
        static REREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn replay_from_any_checkpoint_reproduces_the_uninterrupted_result() {
        let events = jittered_stream(5_000, 0x9E3779B97F4A7C15);
        let (clean, clean_late, dups) = run_with_crashes(&events, &[], &[]);
        assert!(!clean_late.is_empty(), "the stream must exercise lateness");
        assert!(dups > 0, "the stream must exercise dedup");
        let total: u64 = clean.values().map(|(t, _)| t.impressions + t.clicks).sum();
        assert_eq!(
            total + clean_late.len() as u64 + dups,
            events.len() as u64,
            "every event counted once, late or dup"
        );
        let scenarios: Vec<(Vec<usize>, Vec<usize>)> = vec![
            (vec![100], vec![]),
            (vec![1_000, 1_001, 2_500], vec![999, 2_000]),
            (vec![37, 74, 4_999], vec![50]),
            ((1..40).map(|i| i * 123).collect(), (1..20).map(|i| i * 250).collect()),
            (vec![], (0..5_000).step_by(7).collect()),
        ];
        for (crashes, fires) in scenarios {
            let (t, l, _) = run_with_crashes(&events, &crashes, &fires);
            assert_eq!(t, clean, "crashes at {crashes:?}, fires at {fires:?}");
            assert_eq!(l, clean_late, "crashes at {crashes:?}, fires at {fires:?}");
        }
    }

    /// An oracle independent of the engine's code: lateness from the
    /// sequence (an event is late when the max event time before it has
    /// reached its 10 s window's end + lateness), duplicates by id among
    /// counted events, then plain sums per rollup.
    fn oracle(rollups: &[Rollup], events: &[Observation]) -> (Table, Vec<i64>) {
        let c = cfg();
        let mut max: Option<i64> = None;
        let mut counted = std::collections::HashSet::new();
        let mut late = Vec::new();
        let mut table: Table = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            let start = e.ts.div_euclid(c.size_us) * c.size_us;
            if max.is_some_and(|m| start + c.size_us + c.allowed_lateness_us <= m) {
                late.push(i as i64);
                continue;
            }
            max = max.max(Some(e.ts));
            if !counted.insert(e.id) {
                continue;
            }
            for (ri, r) in rollups.iter().enumerate() {
                let key = r.decode(r.key(e.campaign, e.ad_format, e.country, e.device));
                let cell = table.entry((ri as u8, r.window_start(e.ts), key)).or_default();
                match e.event_type {
                    Impression => cell.0.impressions += 1,
                    Click => cell.0.clicks += 1,
                }
                cell.0.revenue_micros += e.revenue_micros;
            }
        }
        (table, late)
    }

    fn totals_only(t: &Table) -> BTreeMap<(u8, i64, SegmentKey), Totals> {
        t.iter().map(|(k, (v, _))| (*k, *v)).collect()
    }

    #[test]
    fn rollups_agree_and_replay_exactly_on_a_jittered_stream() {
        const M: i64 = 60 * S;
        let rollups = [
            Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S),
            Rollup::new(Dims::SEGMENT, 10 * S),
            Rollup::new(Dims::CAMPAIGN_FORMAT, M),
            Rollup::new(Dims::SEGMENT, 2 * M),
            Rollup::new(Dims::parse("country").unwrap(), 30 * S),
            Rollup::new(Dims::default(), 2 * M),
        ];
        let events = jittered_stream(6_000, 0xD1B5_4A32_D192_ED03);
        let (clean, clean_late, dups) = run_rollups_with_crashes(&rollups, &events, &[], &[], None);
        let (want, want_late) = oracle(&rollups, &events);
        assert!(!want_late.is_empty() && dups > 0, "the stream must exercise lateness and dedup");
        assert_eq!(clean_late, want_late, "late events as the oracle decides them");
        assert_eq!(totals_only(&clean), totals_only(&want), "every rollup equals the oracle");
        // Agreement: each rollup's windows sum to the base rollup's.
        let base_total = |ri: u8| -> (u64, u64, i64) {
            clean
                .iter()
                .filter(|((r, _, _), _)| *r == ri)
                .fold((0, 0, 0), |a, (_, (t, _))| (a.0 + t.impressions, a.1 + t.clicks, a.2 + t.revenue_micros))
        };
        for ri in 1..rollups.len() as u8 {
            assert_eq!(base_total(ri), base_total(0), "rollup {}", rollups[ri as usize].name());
        }
        // And per long window: a 1 m row is the sum of its six 10 s rows.
        for ((_, start, key), (t, _)) in clean.iter().filter(|((r, _, _), _)| *r == 2) {
            let sum = clean
                .iter()
                .filter(|((r, s, k), _)| *r == 0 && *k == *key && *s >= *start && *s < start + M)
                .fold(0, |a, (_, (t, _))| a + t.impressions);
            assert_eq!(sum, t.impressions, "1 m window {start} {key:?}");
        }
        let scenarios: Vec<(Vec<usize>, Vec<usize>)> = vec![
            (vec![100], vec![]),
            (vec![1_000, 1_001, 2_500, 5_999], vec![999, 2_000]),
            ((1..45).map(|i| i * 131).collect(), (1..20).map(|i| i * 270).collect()),
            (vec![], (0..6_000).step_by(7).collect()),
        ];
        let mut reread = [0; 2];
        for (crashes, fires) in scenarios {
            for (i, seed_from) in [None, Some(1)].into_iter().enumerate() {
                let (t, l, _) = run_rollups_with_crashes(&rollups, &events, &crashes, &fires, seed_from);
                reread[i] += REREAD.with(|r| r.get());
                // Versions too: a seeded window's rows are the rows the
                // uninterrupted run wrote.
                let diff: Vec<_> = clean.iter().filter(|(k, v)| t.get(k) != Some(v)).take(3).collect();
                assert!(
                    diff.is_empty() && t.len() == clean.len(),
                    "crashes at {crashes:?}, fires at {fires:?}, seeded {seed_from:?}: {} rows vs {}, first \
                     differences {diff:?}",
                    t.len(),
                    clean.len()
                );
                assert_eq!(l, clean_late, "crashes at {crashes:?}, fires at {fires:?}, seeded {seed_from:?}");
            }
        }
        assert!(reread[1] * 2 < reread[0], "seeding re-reads less: {reread:?} (replayed, seeded)");
        println!(
            "events re-read over all crashes: {} replaying the longer windows, {} seeding them",
            reread[0], reread[1]
        );
    }

    /// Issue 18 item 7: after an idle flush (`fire_all`), a window that has
    /// not ended is written once, then again only when its end passes
    /// (or at the next idle flush), not on every flush.
    #[test]
    fn after_an_idle_flush_open_windows_are_not_rewritten_on_every_flush() {
        const M: i64 = 60 * S;
        let rollups = [Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S), Rollup::new(Dims::CAMPAIGN_FORMAT, M)];
        let mut w = PartitionWindows::new(cfg(), &rollups);
        let mut out = Vec::new();
        let b = |ts: i64| obs(ts, 0, AdFormat::Banner, Impression, 0);
        w.observe(0, &b(S), &mut out);
        w.fire_all(); // the partition was idle
        w.emit_updates(&mut out);
        assert_eq!(out.len(), 2, "the idle flush writes the 10 s and the 1 m window once");
        out.clear();
        // Traffic resumes inside the same minute: one event per flush.
        let mut per_window: BTreeMap<(u8, i64), usize> = BTreeMap::new();
        for (i, t) in (2..50).enumerate() {
            w.observe(1 + i as i64, &b(t * S), &mut out);
            w.emit_updates(&mut out);
            for r in out.drain(..) {
                *per_window.entry((r.rollup, r.window_start_us)).or_default() += 1;
            }
        }
        // Each 10 s window is written when its end passes (plus its final
        // row when it closes); the open minute not at all until it ends.
        assert_eq!(per_window.get(&(1, 0)), None, "the minute is not rewritten per flush: {per_window:?}");
        assert!(per_window.iter().filter(|((r, _), _)| *r == 0).all(|(_, &n)| n <= 2), "{per_window:?}");
        w.observe(100, &b(61 * S), &mut out);
        w.emit_updates(&mut out);
        let minute: Vec<_> = out.iter().filter(|r| r.rollup == 1 && r.window_start_us == 0).collect();
        assert_eq!(minute.len(), 1, "written once its end passed");
        assert_eq!(minute[0].totals.impressions, 49);
        // A second idle flush writes only what changed since the last write.
        out.clear();
        w.fire_all();
        w.emit_updates(&mut out);
        assert!(out.iter().all(|r| r.window_start_us != 0 || r.rollup == 0), "{out:?}");
    }

    /// Issue 18 item 2: ids crafted to collide under an unkeyed fold
    /// (`low ^ rotl(high, 32)` constant) cost about what random ids cost,
    /// all counted; measured in one run, best of three.
    #[test]
    fn crafted_event_ids_do_not_make_deduplication_quadratic() {
        const N: u64 = 200_000;
        let time = |ids: &dyn Fn(u64) -> u128| -> std::time::Duration {
            (0..3)
                .map(|_| {
                    let mut w = pw(cfg());
                    let mut out = Vec::new();
                    let t0 = std::time::Instant::now();
                    for i in 0..N {
                        let mut o = obs(S + (i as i64 % 1000), 0, AdFormat::Banner, Impression, 0);
                        o.id = ids(i);
                        assert_eq!(w.observe(i as i64, &o, &mut out), Outcome::Counted, "id {i}");
                    }
                    let took = t0.elapsed();
                    assert_eq!(w.dedup_footprint().0 as u64, N, "all counted");
                    took
                })
                .min()
                .unwrap_or_default()
        };
        let crafted = |i: u64| (u128::from(i) << 64) | u128::from(0x5555_5555_5555_5555 ^ i.rotate_left(32));
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let random: Vec<u128> = (0..N)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let hi = x;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (u128::from(hi) << 64) | u128::from(x)
            })
            .collect();
        let c = time(&crafted);
        let r = time(&|i| random[i as usize]);
        let ratio = c.as_secs_f64() / r.as_secs_f64();
        println!("dedup of {N} ids in one second: crafted {c:?}, random {r:?}, ratio {ratio:.2}");
        assert!(ratio <= 5.0, "crafted ids cost {ratio:.1}× random ones ({c:?} vs {r:?})");
    }

    /// Issue 18 item 8, the rule as documented: a duplicate is the same id
    /// in the same base window and the same second of event time.
    #[test]
    fn a_duplicate_is_the_same_id_in_the_same_second_of_its_window() {
        let mut w = pw(cfg());
        let mut out = Vec::new();
        let at = |ts: i64, id: u128| {
            let mut o = obs(ts, 0, AdFormat::Banner, Impression, 0);
            o.id = id;
            o
        };
        assert_eq!(w.observe(0, &at(S + 100, 7), &mut out), Outcome::Counted);
        assert_eq!(w.observe(1, &at(S + 100, 7), &mut out), Outcome::Duplicate, "a retry: same time");
        assert_eq!(w.observe(2, &at(S + 999_999, 7), &mut out), Outcome::Duplicate, "same second, other µs");
        assert_eq!(w.observe(3, &at(2 * S, 7), &mut out), Outcome::Counted, "another second of the window");
        assert_eq!(w.observe(4, &at(9 * S + 5, 7), &mut out), Outcome::Counted, "the window's last second");
        assert_eq!(w.observe(5, &at(11 * S, 7), &mut out), Outcome::Counted, "the next window, same second offset");
        assert_eq!(w.observe(6, &at(11 * S + 1, 7), &mut out), Outcome::Duplicate);
        w.fire_all();
        w.emit_updates(&mut out);
        let counted: u64 = out.iter().map(|r| r.totals.impressions).sum();
        assert_eq!(counted, 4);
    }

    /// Issue 18 item 1, the reported case: one partition, 900 on-time
    /// impressions 0.1 s apart (their Kafka timestamps 30–120 s after
    /// their event times, like batching SDKs), and after the first 300 one
    /// event 30 minutes ahead. All 901 are counted, none late.
    #[test]
    fn one_fast_clock_does_not_make_on_time_traffic_late() {
        let rollups = Rollup::defaults(10 * S);
        let mut w = PartitionWindows::new(cfg(), &rollups);
        let mut out = Vec::new();
        let t0 = 1_765_324_800 * S;
        let mut outcomes = Vec::new();
        let mut offset = 0;
        for i in 0..900i64 {
            let ts = t0 + i * S / 10;
            let mut o = obs(ts, 0, AdFormat::Banner, Impression, 0);
            o.msg_ts = Some(ts + 30 * S + (i * 7919 % 90) * S);
            outcomes.push(w.observe(offset, &o, &mut out));
            offset += 1;
            if i == 299 {
                let mut fast = obs(ts + 1800 * S, 0, AdFormat::Banner, Impression, 0);
                fast.msg_ts = Some(ts + 60 * S);
                outcomes.push(w.observe(offset, &fast, &mut out));
                offset += 1;
            }
        }
        let late = outcomes.iter().filter(|o| matches!(o, Outcome::Late { .. })).count();
        assert_eq!(late, 0, "{:?}", outcomes.iter().find(|o| matches!(o, Outcome::Late { .. })));
        assert_eq!(outcomes.len(), 901);
        assert!(w.watermark().is_some_and(|m| m < t0 + 100 * S), "the fast clock never moved it: {:?}", w.watermark());
        w.fire_all();
        w.emit_updates(&mut out);
        let counted: u64 = out.iter().filter(|r| r.rollup == 0).map(|r| r.totals.impressions).sum();
        assert_eq!(counted, 901, "the fast event is counted in its own window");
    }

    /// A stream with fast clocks at random places (and without Kafka
    /// timestamps for some messages) still replays exactly from any
    /// checkpoint: the held state travels in the checkpoint.
    #[test]
    fn fast_clocks_replay_exactly_from_any_checkpoint() {
        let mut events = jittered_stream(5_000, 0x2545_F491_4F6C_DD1D);
        let mut x = 77u64;
        for (i, e) in events.iter_mut().enumerate() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            e.msg_ts = (i % 5 != 0).then_some(e.ts + 30 * S);
            if x >> 58 == 0 {
                e.ts += 1800 * S; // about 1 in 64
            }
        }
        let (clean, clean_late, _) = run_with_crashes(&events, &[], &[]);
        let rollups = [Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S)];
        let (_, want_late) = oracle(&rollups, &events);
        assert!(
            clean_late.len() < want_late.len() / 4,
            "the max-watermark rule would call many late: {} vs {}",
            clean_late.len(),
            want_late.len()
        );
        for crashes in [vec![100], (1..40).map(|i| i * 123).collect(), vec![37, 74, 4_999]] {
            let (t, l, _) = run_with_crashes(&events, &crashes, &[]);
            assert_eq!(t, clean, "crashes at {crashes:?}");
            assert_eq!(l, clean_late, "crashes at {crashes:?}");
        }
        let mut w = pw(cfg());
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate().take(2_000) {
            w.observe(i as i64, e, &mut out);
        }
        let cp = w.checkpoint().unwrap();
        assert_eq!(Checkpoint::from_metadata(cp.offset, &cp.metadata()), Some(cp), "{}", cp.metadata());
        // Resuming where it commits, the held event before both offsets is one.
        let h = Some(Held { ts: -5, support: 2 });
        let held = Checkpoint { held_at_resume: h, held_at_base: h, ..Checkpoint::at(9, Some(1), None) };
        assert!(held.metadata().ends_with(" held=-5:2"), "{}", held.metadata());
        assert_eq!(Checkpoint::from_metadata(9, &held.metadata()), Some(held));
        assert_eq!(Checkpoint::from_metadata(9, "adstream/2 at=1 closed=- held=x:2"), None);
    }

    #[test]
    fn a_long_window_holds_the_checkpoint_back_until_it_closes() {
        let rollups = [Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S), Rollup::new(Dims::CAMPAIGN_FORMAT, 60 * S)];
        let mut w = PartitionWindows::new(cfg(), &rollups);
        let mut out = Vec::new();
        let b = |ts: i64| obs(ts, 0, AdFormat::Banner, Impression, 0);
        w.observe(0, &b(S), &mut out);
        w.observe(1, &b(30 * S), &mut out);
        assert_eq!(out.len(), 1, "[0, 10) closed at 30 s, [0, 60) still open");
        let cp = w.checkpoint().unwrap();
        assert_eq!((cp.offset, cp.resume_offset), (1, 0), "commit past [0, 10); the minute still needs offset 0");
        assert!(cp.metadata().contains(" from=0 bat="), "{}", cp.metadata());
        assert_eq!(Checkpoint::from_metadata(1, &cp.metadata()), Some(cp));
        assert_eq!(Checkpoint::from_metadata(1, "adstream/2 at=- closed=- from=5"), None, "resume after commit");
        w.observe(2, &b(65 * S), &mut out);
        let cp = w.checkpoint().unwrap();
        assert_eq!((cp.offset, cp.resume_offset), (2, 2), "the minute closed at 65 s");
        let minute: Vec<_> = out.iter().filter(|r| r.rollup == 1).collect();
        assert_eq!(minute.len(), 1);
        assert_eq!((minute[0].totals.impressions, minute[0].is_final), (2, true));
    }
}
