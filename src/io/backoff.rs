//! The one retry policy of the writers (ClickHouse sink, dead-letter
//! topic): exponential backoff from 100 ms to 5 s, retrying for as long as
//! the process runs, and giving up [`SHUTDOWN_WRITE_GRACE`] after shutdown
//! was asked for (uncommitted work is replayed by the next start, so giving
//! up then is safe).

use std::time::Duration;

use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// How long shutdown may keep retrying a failing writer before giving up.
pub const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(8);

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    stopping_since: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST, stopping_since: None }
    }
}

impl Backoff {
    /// Whether to stop retrying: shutdown was asked for more than
    /// [`SHUTDOWN_WRITE_GRACE`] ago.
    pub fn gives_up(&mut self, stop: &Shutdown) -> bool {
        if !stop.is_triggered() {
            return false;
        }
        self.stopping_since.get_or_insert_with(Instant::now).elapsed() > SHUTDOWN_WRITE_GRACE
    }

    /// Sleeps for the current delay, then doubles it (up to 5 s). Returns
    /// early when shutdown is asked for, so the grace period starts then.
    pub async fn wait(&mut self, stop: &Shutdown) {
        let d = self.next;
        self.next = (self.next * 2).min(MAX);
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.triggered(), if self.stopping_since.is_none() => {}
        }
    }

    /// Completes [`SHUTDOWN_WRITE_GRACE`] after shutdown was asked for (or
    /// after the grace already started): the moment to abandon a write
    /// still in flight, so that SIGTERM is honoured even while a server
    /// holds a request without answering.
    pub async fn given_up(&mut self, stop: &Shutdown) {
        stop.triggered().await;
        let since = *self.stopping_since.get_or_insert_with(Instant::now);
        tokio::time::sleep_until(since + SHUTDOWN_WRITE_GRACE).await;
    }

    /// The delay [`wait`](Self::wait) would sleep next.
    pub fn delay(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_to_five_seconds_and_gives_up_only_after_the_grace() {
        let stop = Shutdown::new();
        let mut b = Backoff::default();
        let mut delays = Vec::new();
        for _ in 0..8 {
            delays.push(b.delay());
            b.wait(&stop).await;
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(!b.gives_up(&stop), "no shutdown: retry forever");
        stop.trigger();
        assert!(!b.gives_up(&stop), "the grace starts now");
        tokio::time::advance(SHUTDOWN_WRITE_GRACE + Duration::from_millis(1)).await;
        assert!(b.gives_up(&stop));
    }
}
