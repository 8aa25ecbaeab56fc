//! Observability: the counters ([`Stats`]), dependency health and the
//! `/metrics` + `/healthz` server; the learner's counters and its
//! `/ctr` + `/metrics` + `/healthz` server ([`learn`]); both servers are
//! one endpoint helper (`http`).

pub mod health;
mod http;
pub mod learn;
pub mod metrics;
pub mod panic;
pub mod stats;

pub use stats::{PartitionGauges, Stats};
