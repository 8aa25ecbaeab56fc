//! Observability: the counters ([`Stats`]), dependency health and the
//! `/metrics` + `/healthz` server.

pub mod health;
pub mod metrics;
pub mod panic;
pub mod stats;

pub use stats::{PartitionGauges, Stats};
