//! [`Pacer`]: holds a send loop to a target rate.

/// Paces a send loop at `rate` events per second against its start (not
/// per event, so sleep granularity does not drift the average); a rate of 0
/// never waits.
pub struct Pacer {
    rate: f64,
    started: std::time::Instant,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Pacer { rate, started: std::time::Instant::now() }
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether event number `sent` (from 0) is due; if not, sleeps a little
    /// (at most 50 ms, so stop flags stay responsive) and returns false.
    pub fn ready(&self, sent: u64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let due = std::time::Duration::from_secs_f64(sent as f64 / self.rate);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(std::time::Duration::from_millis(50)));
            return false;
        }
        true
    }
}
