//! The process's clocks: read here, and nowhere in the engine or the model,
//! which take the time as data ([`crate::engine::Now`]) so that they stay
//! deterministic (`tests/architecture.rs` keeps clocks out of them).

use std::time::Instant;

use crate::engine::Now;

/// Both clocks, now.
pub fn now() -> Now {
    Now { instant: Instant::now(), epoch_us: now_micros() }
}

/// The wall clock now, in µs since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
