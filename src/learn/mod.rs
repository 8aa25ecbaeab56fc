//! Predicted CTR, learned online from the exact windows: the pure pieces.
//! [`features`] (what an example is and how it is hashed), [`ftrl`] (the
//! logistic regression and its FTRL-Proximal update), [`snapshot`] (the
//! model as versioned bytes) and [`quality`] (progressive validation of a
//! window). Like [`crate::engine`] it does no I/O and imports no I/O crate
//! (tokio, rdkafka, hyper, clickhouse, redis, clap): `tests/architecture.rs`
//! checks it.

pub mod features;
pub mod ftrl;
pub mod learner;
pub mod quality;
pub mod snapshot;

pub use features::{hour_of_day, Context, Features, Slots};
pub use ftrl::{Counters, Ftrl, Params, ParamsError};
pub use learner::{Example, Learned, Learner, LearnerError, LetGo, Prediction, Revised, Segment, Settled, Window};
pub use quality::{Quality, Report};
pub use snapshot::SnapshotError;

#[cfg(test)]
mod tests;
