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

mod checkpoint;
mod dedup;
mod partition;
pub(crate) mod span;
#[cfg(test)]
mod tests;

pub use checkpoint::Checkpoint;
pub use partition::PartitionWindows;

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
        span::window_start(self.size_us, ts)
    }

    /// Whether the window starting at `start` has fired (its end passed)
    /// once the watermark is `wm`.
    fn ended_at(&self, start: i64, wm: Option<i64>) -> bool {
        span::ended_at(self.size_us, start, wm)
    }

    /// Whether the window starting at `start` is closed once the watermark
    /// is `wm`.
    pub fn closed_at(&self, start: i64, wm: i64) -> bool {
        span::closed_at(self.size_us, self.allowed_lateness_us, start, wm)
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
