//! adstream: ad events from Kafka → event-time windows → ClickHouse.
//!
//! The flow, from `main`: [`cli`] parses flags and converts them into plain
//! [`config`]; `run` is `pipeline::run`, which wires the Kafka source
//! (`io::kafka`) through the pure [`engine`] (parse + windows) into a sink
//! (`io::clickhouse` or `io::console`), and owns offsets and backpressure;
//! `obs` holds the counters, health and the metrics server. [`generator`]
//! is the traffic model behind `generate`, `demo` and `run --self-feed`.
//! [`learn`] is a CTR model learned online from windows (pure; not wired in
//! yet).

pub mod cli;
mod config;
mod demo;
pub mod engine;
pub mod generator;
mod io;
pub mod learn;
mod obs;
mod pipeline;
mod shutdown;

/// Internals the integration tests in `tests/` drive directly (the sink and
/// its schema, against a real ClickHouse). Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::config::ClickHouseConfig;
    pub use crate::io::clickhouse::schema_cluster::SHARDING;
    pub use crate::io::clickhouse::ClickHouseSink;
}
