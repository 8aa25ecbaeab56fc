//! The geometry of a tumbling window, in one place: windows of `size_us`
//! are epoch-aligned and half-open, `[start, start + size_us)`; a window
//! *ends* (fires) when the watermark reaches its end, and *closes* (its rows
//! final, later events late) when the watermark reaches its end plus the
//! allowed lateness. [`WindowConfig`](super::WindowConfig) (the base window)
//! and [`Rollup`](super::Rollup) (every rollup's windows) both ask here.

/// The start of the window of `size_us` that holds event time `ts`.
pub fn window_start(size_us: i64, ts: i64) -> i64 {
    ts.div_euclid(size_us) * size_us
}

/// Whether the window of `size_us` starting at `start` has ended (fired)
/// once the watermark is `wm` (never before the first event).
pub fn ended_at(size_us: i64, start: i64, wm: Option<i64>) -> bool {
    wm.is_some_and(|m| start.saturating_add(size_us) <= m)
}

/// Whether the window of `size_us` starting at `start` is closed once the
/// watermark is `wm`: its end plus `lateness_us` passed.
pub fn closed_at(size_us: i64, lateness_us: i64, start: i64, wm: i64) -> bool {
    start.saturating_add(size_us).saturating_add(lateness_us) <= wm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_open_epoch_aligned_windows_end_then_close() {
        assert_eq!((window_start(10, 0), window_start(10, 9), window_start(10, 10)), (0, 0, 10));
        assert_eq!(window_start(10, -1), -10, "before the epoch too");
        assert!(!ended_at(10, 0, None) && !ended_at(10, 0, Some(9)) && ended_at(10, 0, Some(10)));
        assert!(!closed_at(10, 5, 0, 14) && closed_at(10, 5, 0, 15));
        assert!(!closed_at(10, 5, i64::MAX - 3, i64::MAX - 1), "saturates, never wraps");
    }
}
