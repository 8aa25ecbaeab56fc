//! What the engine hands out: a [`Batch`] is everything the processor
//! produced since the last flush (window rows, late and rejected records,
//! its counters), plus the checkpoints that may be committed to Kafka once
//! the batch is durable.

use std::sync::Arc;

use crate::engine::event::{AdFormat, Country, Device, EventType, Names};
use crate::engine::parse::{Reject, RejectReason};
use crate::engine::rollup::{Dims, Rollup};
use crate::engine::window::{Checkpoint, WindowRow};

/// A window row with its source partition and campaign name resolved.
#[derive(Debug, Clone)]
pub struct OutRow {
    pub partition: i32,
    /// `row.key.campaign` is an interned id: its name is in [`Batch::names`].
    pub row: WindowRow,
}

/// An event that arrived after its window closed.
#[derive(Debug, Clone)]
pub struct LateRecord {
    pub partition: i32,
    pub offset: i64,
    pub event_id: String,
    pub event_time_us: i64,
    pub window_start_us: i64,
    pub campaign: Arc<str>,
    pub ad_format: AdFormat,
    pub country: Country,
    pub device: Device,
    pub event_type: EventType,
    pub revenue_micros: i64,
    pub watermark_us: i64,
    pub reason: &'static str,
}

/// Most bytes of a rejected message kept in ClickHouse for inspection (the
/// dead-letter topic gets the whole message).
pub const REJECT_RAW_LIMIT: usize = 4096;

/// A message that failed validation.
#[derive(Debug, Clone)]
pub struct RejectRecord {
    pub partition: i32,
    pub offset: i64,
    pub reason: RejectReason,
    pub detail: String,
    /// The message key, verbatim, if it had one.
    pub key: Option<Vec<u8>>,
    /// The whole message, verbatim: the dead-letter topic must be able to
    /// replay it byte for byte.
    pub raw: Vec<u8>,
    /// When it was rejected, µs since the epoch (wall clock): the caller's
    /// clock ([`Processor::set_clock`](crate::engine::Processor::set_clock)), 0 if it never said.
    pub rejected_at_us: i64,
}

impl RejectRecord {
    pub fn new(partition: i32, offset: i64, key: Option<&[u8]>, reject: Reject, payload: &[u8]) -> Self {
        RejectRecord {
            partition,
            offset,
            reason: reject.reason,
            detail: reject.detail,
            key: key.map(<[u8]>::to_vec),
            raw: payload.to_vec(),
            rejected_at_us: 0,
        }
    }

    /// The first [`REJECT_RAW_LIMIT`] bytes, as stored in ClickHouse.
    pub fn raw_prefix(&self) -> &[u8] {
        &self.raw[..self.raw.len().min(REJECT_RAW_LIMIT)]
    }
}

/// A reading of the caller's clocks. The engine reads no clock (so it is
/// deterministic, and tests and replays decide the same); the consume loop
/// reads them once per fetched batch of messages (`crate::clock::now`) and
/// hands them in with [`Processor::set_clock`](crate::engine::Processor::set_clock).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic: since when rows have been due (the latency metrics).
    pub instant: std::time::Instant,
    /// Wall clock, µs since the epoch: when a message was rejected.
    pub epoch_us: i64,
}

/// Events by fate since the last [`Batch`] (or the last
/// [`Processor::take_counts`](crate::engine::Processor::take_counts)): plain
/// data the caller adds to its own counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Messages processed (not below the resume point), before validation.
    pub consumed: u64,
    pub counted: u64,
    /// Events counted into a window that had already fired.
    pub late_updates: u64,
    pub duplicates: u64,
    /// Replayed events of windows already final downstream.
    pub replay_skipped: u64,
    /// Events whose window had closed.
    pub late: u64,
    /// Rejected messages by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Counted events by [`AdFormat::index`] × [`EventType::index`].
    pub by_kind: [[u64; EventType::ALL.len()]; AdFormat::ALL.len()],
}

impl Counts {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.consumed += other.consumed;
        self.counted += other.counted;
        self.late_updates += other.late_updates;
        self.duplicates += other.duplicates;
        self.replay_skipped += other.replay_skipped;
        self.late += other.late;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// What the engine's state is made of, as of the last [`Batch`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Windows in memory over all partitions and rollups.
    pub open_windows: usize,
    /// Window × key cells in memory over all partitions and rollups.
    pub open_cells: usize,
    /// Event ids held for deduplication, and their heap bytes.
    pub dedup_ids: usize,
    pub dedup_bytes: usize,
    /// Campaign ids interned (present in an open window of some partition).
    pub campaigns_interned: usize,
    /// Campaigns held, summed over partitions.
    pub campaigns_open: usize,
    /// The lowest partition watermark, µs.
    pub min_watermark_us: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<OutRow>,
    pub late: Vec<LateRecord>,
    pub rejected: Vec<RejectRecord>,
    /// Safe to commit once everything above is durable.
    pub commits: Vec<(i32, Checkpoint)>,
    /// When groups of `rows` became due (see `Stats::visible_latency`):
    /// `(instant, number of rows)`, in no particular relation to the order
    /// of `rows`.
    pub due: Vec<(std::time::Instant, u32)>,
    /// Campaign names by id, for `rows`.
    pub names: Names,
    /// The configured rollups: `rows[i].row.rollup` indexes this.
    pub rollups: Arc<[Rollup]>,
    /// Their names ([`Rollup::name`]), computed once by the processor.
    pub rollup_names: Arc<[String]>,
    /// Events by fate since the previous batch.
    pub counts: Counts,
    /// The state's size when the batch was cut.
    pub footprint: Footprint,
}

impl Batch {
    /// The campaign name of a row of this batch (`""` for a rollup
    /// without campaigns).
    pub fn campaign(&self, r: &OutRow) -> &str {
        r.row.key.campaign.map_or("", |c| campaign_name(&self.names, c))
    }

    /// The rows a console shows: those of the campaign × format rollup at
    /// the shortest window, or every row when no campaign × format rollup
    /// is configured.
    pub fn console_rows(&self) -> impl Iterator<Item = &OutRow> {
        let contract = self
            .rollups
            .iter()
            .enumerate()
            .filter(|(_, r)| r.dims == Dims::CAMPAIGN_FORMAT)
            .min_by_key(|(_, r)| r.size_us)
            .map(|(i, _)| i as u8);
        self.rows.iter().filter(move |r| contract.is_none_or(|c| r.row.rollup == c))
    }

    /// The name of the rollup a row belongs to (`campaign_id,ad_format:10s`),
    /// as stored in `rollup_name`.
    pub fn rollup_name(&self, r: &OutRow) -> &str {
        self.rollup_names.get(usize::from(r.row.rollup)).map_or("", String::as_str)
    }

    pub fn has_output(&self) -> bool {
        !(self.rows.is_empty() && self.late.is_empty() && self.rejected.is_empty())
    }
}

/// The name of interned campaign `id` in `names` (empty if unknown, which a
/// batch's own rows never are).
pub fn campaign_name(names: &[Arc<str>], id: u32) -> &str {
    names.get(id as usize).map_or("", |n| n)
}
