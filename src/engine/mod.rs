//! The pure, synchronous engine: message bytes in, window rows, late and
//! rejected records and counters out. It does no I/O and imports no I/O
//! crate (tokio, rdkafka, hyper, clickhouse, clap): `tests/architecture.rs`
//! checks it.

pub(crate) mod batch;
pub(crate) mod campaigns;
pub(crate) mod event;
pub(crate) mod flat_json;
pub(crate) mod money;
pub(crate) mod parse;
pub(crate) mod processor;
pub(crate) mod rollup;
mod segment;
pub(crate) mod time;
pub(crate) mod window;

pub use batch::{Batch, Counts, Now};
pub use event::{AdFormat, Country, Device, Event, EventType};
pub use parse::{parse_event, Reject, RejectReason, DEFAULT_MAX_EVENT_BYTES};
pub use processor::Processor;
pub use rollup::{Dims, Rollup, SegmentKey};
pub use segment::Segment;
pub use window::WindowConfig;
