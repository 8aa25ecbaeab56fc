//! Everything that talks to the outside: Kafka (consumer, batch queue,
//! producer, dead-letter topic), ClickHouse (client, schema, sink, report,
//! the learner's store), Redis (the served predictions) and the console.

pub mod backoff;
pub mod clickhouse;
pub mod console;
pub mod kafka;
pub mod redis;
#[cfg(test)]
pub(crate) mod silent;
mod sink;
pub mod tls;

pub use sink::Sink;
