//! Liveness of the two services `run` depends on, for `GET /healthz` and for
//! the log: each [`Dependency`] remembers since when it has been failing, and
//! logs a failure once, then a reminder every [`REMINDER`], then one line when
//! it recovers. An outage therefore costs a handful of log lines, not one per
//! retry.
//!
//! Who reports: the sink task reports every ClickHouse write; the probes of
//! `pipeline::monitoring` ask Kafka for the topic's metadata every few seconds, and
//! ClickHouse for `SELECT 1` when no write was attempted lately (a quiet topic
//! writes nothing, yet an operator wants to know ClickHouse is gone before
//! the next window is due).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a continuing failure is logged again.
pub const REMINDER: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    /// First failure since the last success.
    down_since: Option<Instant>,
    /// Failures since the last success.
    failures: u64,
    last_error: String,
    last_logged: Option<Instant>,
    /// Lines logged about this dependency (for tests).
    lines: u64,
    /// Last report of either kind (probes stay quiet while writes report).
    last_report: Option<Instant>,
}

/// One external service, as seen by its users in this process.
pub struct Dependency {
    name: &'static str,
    state: Mutex<State>,
}

impl Dependency {
    pub fn new(name: &'static str) -> Self {
        Dependency { name, state: Mutex::new(State::default()) }
    }

    /// A request succeeded. Logs once if this ends an outage.
    pub fn ok(&self) {
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(since) = s.down_since.take() {
            tracing::info!(
                "{}: reachable again after {:.0} s ({} failed attempts)",
                self.name,
                since.elapsed().as_secs_f64(),
                s.failures
            );
        }
        s.failures = 0;
        s.last_logged = None;
        s.last_report = Some(Instant::now());
    }

    /// A request failed with `error` (one line, no secrets). Logged at the
    /// first failure of an outage and then every [`REMINDER`].
    pub fn failed(&self, error: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        let now = Instant::now();
        let since = *s.down_since.get_or_insert(now);
        s.failures += 1;
        s.last_error = error.to_string();
        s.last_report = Some(now);
        let due = s.last_logged.is_none_or(|t| now.duration_since(t) >= REMINDER);
        if due {
            s.last_logged = Some(now);
            s.lines += 1;
            if s.failures == 1 {
                tracing::warn!("{}: {error} (retrying; repeats are logged every {} s)", self.name, REMINDER.as_secs());
            } else {
                tracing::warn!(
                    "{}: still failing after {:.0} s and {} attempts: {error}",
                    self.name,
                    now.duration_since(since).as_secs_f64(),
                    s.failures
                );
            }
        }
    }

    /// How long it has been failing, with the last error; `None` if fine.
    pub fn down(&self) -> Option<(Duration, String)> {
        let s = self.state.lock().ok()?;
        s.down_since.map(|t| (t.elapsed(), s.last_error.clone()))
    }

    pub fn reported_within(&self, d: Duration) -> bool {
        self.state.lock().ok().and_then(|s| s.last_report).is_some_and(|t| t.elapsed() < d)
    }
}

/// The health of a `run` process.
pub struct Health {
    pub kafka: Dependency,
    pub clickhouse: Dependency,
}

impl Default for Health {
    fn default() -> Self {
        Health { kafka: Dependency::new("Kafka"), clickhouse: Dependency::new("ClickHouse") }
    }
}

impl Health {
    /// `Ok(summary)` while every dependency answered within `unhealthy_after`,
    /// else `Err(reason)` naming each one down for longer than that.
    pub fn status(&self, unhealthy_after: Duration) -> Result<String, String> {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        for d in [&self.kafka, &self.clickhouse] {
            match d.down() {
                Some((for_, err)) if for_ >= unhealthy_after => problems.push(format!(
                    "{} unreachable for {:.0} s (threshold {} s): {err}",
                    d.name,
                    for_.as_secs_f64(),
                    unhealthy_after.as_secs()
                )),
                Some((for_, err)) => notes.push(format!("{} failing for {:.0} s: {err}", d.name, for_.as_secs_f64())),
                None => notes.push(format!("{} ok", d.name)),
            }
        }
        if problems.is_empty() {
            Ok(format!("ok: {}", notes.join("; ")))
        } else {
            Err(format!("unhealthy: {}", problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_only_after_the_threshold_and_healthy_again_on_success() {
        let h = Health::default();
        assert!(h.status(Duration::from_secs(30)).is_ok());
        h.clickhouse.failed("connection refused");
        let ok = h.status(Duration::from_secs(30)).unwrap();
        assert!(ok.contains("ClickHouse failing"), "{ok}");
        let bad = h.status(Duration::ZERO).unwrap_err();
        assert!(bad.contains("ClickHouse unreachable") && bad.contains("connection refused"), "{bad}");
        assert!(!bad.contains("Kafka"), "{bad}");
        h.clickhouse.ok();
        assert!(h.status(Duration::ZERO).is_ok());
    }

    #[test]
    fn an_outage_is_logged_once_then_reminded() {
        let d = Dependency::new("X");
        for _ in 0..1000 {
            d.failed("boom");
        }
        {
            let s = d.state.lock().unwrap();
            assert_eq!((s.failures, s.lines), (1000, 1), "one line for 1000 failures within {REMINDER:?}");
        }
        d.state.lock().unwrap().last_logged = Some(Instant::now() - REMINDER);
        d.failed("boom");
        assert_eq!(d.state.lock().unwrap().lines, 2, "a reminder once REMINDER has passed");
        d.ok();
        assert!(d.down().is_none());
    }
}
