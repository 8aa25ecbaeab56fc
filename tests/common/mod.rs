//! Shared plumbing for the end-to-end tests: names, the adstream binary, a
//! ClickHouse client, and the SQL oracle.
//!
//! The tests need a real Kafka broker and a real ClickHouse engine; the
//! README's test command (`scripts/test.sh`) starts both. They honour
//! `ADSTREAM_BROKERS` and `ADSTREAM_CLICKHOUSE_URL`, so they also run
//! against your own Kafka and a real clickhouse-server.
//!
//! One file a concern, all re-exported here (`use common::*` reaches
//! everything): [`services`] (where the services are, stopping and starting
//! them), [`process`] (spawning adstream, runners, memory, polling),
//! [`kafka`] (producing, topics, offsets), [`clickhouse`] (queries, rows
//! compared), [`oracle`] (the independent oracle and its lateness rule),
//! [`pipeline`] (`run` processes, catching up, draining, the oracle check).
//! [`learn`], the learner tests' own setting, is not re-exported: those
//! tests `use common::learn::*`.

#![allow(dead_code)]

mod clickhouse;
mod kafka;
pub mod learn;
mod oracle;
mod pipeline;
mod process;
mod services;

// Each test binary uses some of these only.
#[allow(unused_imports)]
pub use clickhouse::*;
#[allow(unused_imports)]
pub use kafka::*;
#[allow(unused_imports)]
pub use oracle::*;
#[allow(unused_imports)]
pub use pipeline::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use services::*;
