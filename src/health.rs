//! Liveness of the two services `run` depends on, for `GET /healthz` and for
//! the log: each [`Dependency`] remembers since when it has been failing, and
//! logs a failure once, then a reminder every [`REMINDER`], then one line when
//! it recovers. An outage therefore costs a handful of log lines, not one per
//! retry.
//!
//! Who reports: the sink task reports every ClickHouse write; the probes of
//! [`spawn_probes`] ask Kafka for the topic's metadata every few seconds, and
//! ClickHouse for `SELECT 1` when no write was attempted lately (a quiet topic
//! writes nothing, yet an operator wants to know ClickHouse is gone before
//! the next window is due).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;

use crate::source::kafka::PipelineConsumer;

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

    fn reported_within(&self, d: Duration) -> bool {
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

/// The operability side of a `run`: the metrics/health endpoint and the
/// probes that keep `/healthz` current.
pub struct Ops {
    stats: Arc<crate::stats::Stats>,
    clickhouse: Option<clickhouse::Client>,
    period: Duration,
}

impl Ops {
    /// Binds `--metrics-addr` (unless `off`).
    pub async fn start(args: &crate::cli::RunArgs, stats: Arc<crate::stats::Stats>) -> anyhow::Result<Ops> {
        if let Some(addr) = args.metrics_addr.0 {
            crate::metrics::serve(addr, stats.clone(), &args.kafka.topic, args.unhealthy_after).await?;
        }
        let clickhouse = match args.sink {
            crate::cli::SinkKind::Clickhouse => Some(crate::sink::clickhouse::client(&args.clickhouse)?),
            crate::cli::SinkKind::Console => None,
        };
        // A few probes per threshold, so /healthz turns within ~1/3 of it.
        let period = (args.unhealthy_after / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
        Ok(Ops { stats, clickhouse, period })
    }

    /// Starts the probes; they stop when the returned guard is dropped.
    pub fn probe(&self, consumer: Arc<PipelineConsumer>, topic: &str) -> ProbeGuard {
        let done = Arc::new(AtomicBool::new(false));
        let task = spawn_probes(
            self.stats.clone(),
            consumer,
            topic.to_string(),
            self.clickhouse.clone(),
            self.period,
            done.clone(),
        );
        ProbeGuard { done, task }
    }
}

/// Stops the probes on drop.
pub struct ProbeGuard {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Probes Kafka (topic metadata through the pipeline's own consumer) every
/// `period`, and ClickHouse (`SELECT 1`) when nothing was written to it for
/// `period`. Runs until `done` is set.
pub fn spawn_probes(
    health: Arc<crate::stats::Stats>,
    consumer: Arc<PipelineConsumer>,
    topic: String,
    clickhouse: Option<clickhouse::Client>,
    period: Duration,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !done.load(Ordering::Relaxed) {
            tick.tick().await;
            let (c, t) = (consumer.clone(), topic.clone());
            let timeout = period.max(Duration::from_secs(1));
            let kafka = tokio::task::spawn_blocking(move || c.client().fetch_metadata(Some(&t), timeout)).await;
            match kafka {
                Ok(Ok(md)) if md.brokers().is_empty() => health.health.kafka.failed("no broker in the metadata"),
                Ok(Ok(_)) => health.health.kafka.ok(),
                Ok(Err(e)) => health.health.kafka.failed(&format!("metadata request: {e}")),
                Err(_) => {}
            }
            if let Some(ch) = &clickhouse {
                if !health.health.clickhouse.reported_within(period) {
                    match tokio::time::timeout(timeout, ch.query("SELECT 1").fetch_one::<u8>()).await {
                        Ok(Ok(_)) => health.health.clickhouse.ok(),
                        Ok(Err(e)) => health.health.clickhouse.failed(&format!("SELECT 1: {e}")),
                        Err(_) => health.health.clickhouse.failed(&format!("SELECT 1: no answer within {timeout:?}")),
                    }
                }
            }
        }
    })
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
