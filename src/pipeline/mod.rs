//! The stages of `adstream run` (wired by `cmd::run`): between the Kafka
//! source, the engine's [`Processor`] and a sink, they own offsets and
//! backpressure.
//!
//! Two threads of control:
//! - the **consume loop** ([`consume`], a blocking thread) polls Kafka,
//!   feeds the processor and cuts a batch every `--flush-interval`; when
//!   the writer falls behind it holds the batch and pauses the assigned
//!   partitions (backpressure); it also fires the windows of idle
//!   partitions;
//! - the **writer** ([`writer`]) writes each batch (retrying with backoff)
//!   and only then commits the batch's checkpoints to Kafka.
//!
//! So a committed offset never runs ahead of what ClickHouse holds, and
//! whatever was not committed is replayed on restart; idempotent writes
//! (see `sql/`) make that replay invisible in the results.
//!
//! `adstream learn`'s step ([`learn`]: the frontier, learning, saving,
//! publishing; its loop is `cmd::learn`) is the pipeline's last stage: it
//! reads what `run` wrote and needs no Kafka.
//!
//! [`Processor`]: crate::engine::Processor

mod consume;
mod learn;
mod monitoring;
mod writer;

pub use consume::{ConsumeLoop, ConsumeLoopParts, LoopSettings, ReplayProbe};
pub use learn::{LearnLoop, LostLease, Misconfigured};
pub use monitoring::Monitoring;
pub use writer::Writer;
