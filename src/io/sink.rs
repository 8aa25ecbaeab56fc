//! The sink the pipeline writes batches to.

use crate::engine::Batch;
use crate::io::clickhouse::retry::ClickHouseError;
use crate::io::{clickhouse, console};

/// The configured sink.
pub enum Sink {
    ClickHouse(Box<clickhouse::ClickHouseSink>),
    Console(console::ConsoleSink),
}

impl Sink {
    /// Registers the source topic's partitions where the learner reads
    /// them (ClickHouse only), before any row is written.
    pub async fn register_partitions(&self, partitions: &[i32]) -> anyhow::Result<()> {
        match self {
            Sink::ClickHouse(s) => Ok(s.register_partitions(partitions).await?),
            Sink::Console(_) => Ok(()),
        }
    }

    /// Writes a batch durably (for the console: prints it). The error says
    /// whether retrying may cure it ([`ClickHouseError::is_retriable`]).
    pub async fn write(&mut self, batch: &Batch) -> Result<(), ClickHouseError> {
        match self {
            Sink::ClickHouse(s) => s.write(batch).await,
            Sink::Console(s) => {
                s.write(batch);
                Ok(())
            }
        }
    }
}
