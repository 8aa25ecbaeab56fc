//! Where results go. A [`Batch`] is everything the consume loop produced
//! since the last flush, plus the checkpoints that may be committed to Kafka
//! once the batch is durable.

pub mod clickhouse;
pub mod console;
pub mod dlq;
pub mod retry;

use std::sync::Arc;

use crate::event::{AdFormat, EventType, Names};
use crate::parse::{Reject, RejectReason};
use crate::window::{Checkpoint, WindowRow};

/// A window row with its source partition and campaign name resolved.
#[derive(Debug, Clone)]
pub struct OutRow {
    pub partition: i32,
    /// `row.campaign` is an interned id: its name is in [`Batch::names`].
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
    /// When it was rejected, µs since the epoch (wall clock).
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
            rejected_at_us: crate::time::now_micros(),
        }
    }

    /// The first [`REJECT_RAW_LIMIT`] bytes, as stored in ClickHouse.
    pub fn raw_prefix(&self) -> &[u8] {
        &self.raw[..self.raw.len().min(REJECT_RAW_LIMIT)]
    }
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
}

impl Batch {
    /// The campaign name of a row of this batch.
    pub fn campaign(&self, r: &OutRow) -> &str {
        campaign_name(&self.names, r.row.campaign)
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

/// The configured sink.
pub enum Sink {
    ClickHouse(Box<clickhouse::ClickHouseSink>),
    Console(console::ConsoleSink),
}

impl Sink {
    /// Writes a batch durably (for the console: prints it).
    pub async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        match self {
            Sink::ClickHouse(s) => s.write(batch).await,
            Sink::Console(s) => {
                s.write(batch);
                Ok(())
            }
        }
    }
}
