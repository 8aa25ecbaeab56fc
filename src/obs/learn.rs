//! The learner's observability: its counters ([`LearnStats`], plain
//! atomics the learn loop bumps, copied into the registry at each scrape)
//! and its HTTP endpoint: `/metrics`, `/healthz`, and `/ctr`, answered from
//! the served predictions ([`crate::io::redis::served`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::StatusCode;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};

use super::health::Dependency;
use super::http::{reply, Routes};
use crate::io::redis::served::{CtrError, ServedPredictions};

pub const PUBLISH_SECONDS: &str = "adstream_learn_redis_publish_duration_seconds";

/// The learner's counters and state for `/metrics`, `/healthz` and `/ctr`.
pub struct LearnStats {
    pub windows: AtomicU64,
    pub revisions: AtomicU64,
    pub examples: AtomicU64,
    pub impressions: AtomicU64,
    pub clicks: AtomicU64,
    pub abandoned: AtomicU64,
    /// Impressions and clicks the model never learned (`ad_ctr_abandoned`).
    pub abandoned_impressions: AtomicI64,
    pub abandoned_clicks: AtomicI64,
    pub shrunk: AtomicU64,
    /// Segment rows with a format, country or device this build does not know.
    pub unknown: AtomicU64,
    pub snapshots: AtomicU64,
    /// Redis `used_memory` and `ad_ctr_model` bytes on disk, read every
    /// 30 s (-1: not yet).
    pub redis_used_memory: AtomicI64,
    pub model_table_bytes: AtomicI64,
    /// 1 while this learner holds the model's lease (0: standby).
    pub leader: AtomicU64,
    /// Its fencing token (the last one it held).
    pub lease_token: AtomicU64,
    pub publishes: AtomicU64,
    pub publish_failures: AtomicU64,
    pub version: AtomicU64,
    /// Start of the newest learned window, Unix ms (i64::MIN: none).
    pub learned_through_ms: AtomicI64,
    /// Start of the newest window closed on any partition, Unix ms.
    pub newest_closed_ms: AtomicI64,
    /// The frontier: start of the newest window closed on every partition
    /// that is not idle, the newest the learner may learn, Unix ms.
    pub frontier_ms: AtomicI64,
    /// Through where the learner read the windows (learned or found
    /// nothing to learn), Unix ms.
    pub read_through_ms: AtomicI64,
    /// f64 bits of the last window's log loss (NaN: none yet).
    pub last_log_loss: AtomicU64,
    pub clickhouse: Dependency,
    pub redis: Dependency,
    /// What `GET /ctr` answers from.
    pub served: Arc<ServedPredictions>,
}

impl Default for LearnStats {
    fn default() -> Self {
        LearnStats {
            windows: AtomicU64::new(0),
            revisions: AtomicU64::new(0),
            examples: AtomicU64::new(0),
            impressions: AtomicU64::new(0),
            clicks: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            abandoned_impressions: AtomicI64::new(0),
            abandoned_clicks: AtomicI64::new(0),
            shrunk: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            redis_used_memory: AtomicI64::new(-1),
            model_table_bytes: AtomicI64::new(-1),
            leader: AtomicU64::new(0),
            lease_token: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            version: AtomicU64::new(0),
            learned_through_ms: AtomicI64::new(i64::MIN),
            newest_closed_ms: AtomicI64::new(i64::MIN),
            frontier_ms: AtomicI64::new(i64::MIN),
            read_through_ms: AtomicI64::new(i64::MIN),
            last_log_loss: AtomicU64::new(f64::NAN.to_bits()),
            clickhouse: Dependency::new("ClickHouse"),
            redis: Dependency::new("Redis"),
            served: Arc::default(),
        }
    }
}

impl LearnStats {
    /// Event-time lag of the model behind the newest closed window, seconds.
    pub fn lag_seconds(&self) -> Option<f64> {
        let (t, c) = (self.learned_through_ms.load(Relaxed), self.newest_closed_ms.load(Relaxed));
        (t != i64::MIN && c != i64::MIN).then(|| (c - t).max(0) as f64 / 1e3)
    }

    /// Event-time lag of the learner behind the frontier (the newest
    /// window it may learn), seconds: 0 once it read through it. Grows only
    /// when the learner falls behind (or stalls), not when a partition is
    /// slow.
    pub fn frontier_lag_seconds(&self) -> Option<f64> {
        let f = self.frontier_ms.load(Relaxed);
        let done = self.read_through_ms.load(Relaxed).max(self.learned_through_ms.load(Relaxed));
        (f != i64::MIN).then(|| if done == i64::MIN { f64::INFINITY } else { (f - done).max(0) as f64 / 1e3 })
    }

    /// `Ok(summary)` while ClickHouse and Redis answered within
    /// `unhealthy_after` and the learner is less than `max_lag` behind the
    /// frontier, else `Err(reason)`; either names what fails.
    pub fn health(&self, unhealthy_after: Duration, max_lag: Duration) -> Result<String, String> {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        if let Some(l) = self.frontier_lag_seconds().filter(|l| *l > max_lag.as_secs_f64()) {
            problems.push(format!(
                "learning is {l:.0} s of event time behind the closed frontier (more than --max-lag {:.0} s)",
                max_lag.as_secs_f64()
            ));
        }
        for (name, d) in [("ClickHouse", &self.clickhouse), ("Redis", &self.redis)] {
            match d.down() {
                Some((f, e)) if f >= unhealthy_after => {
                    problems.push(format!("{name} down for {:.0} s: {e}", f.as_secs_f64()))
                }
                Some((f, e)) => notes.push(format!("{name} down for {:.0} s: {e}", f.as_secs_f64())),
                None => notes.push(format!("{name} ok")),
            }
        }
        let role = match self.leader.load(Relaxed) {
            1 => format!("writer (lease token {})", self.lease_token.load(Relaxed)),
            _ => "standby".to_string(),
        };
        let model = format!(
            "{role}, model v{}, {} windows learned, lag {}",
            self.version.load(Relaxed),
            self.windows.load(Relaxed),
            self.lag_seconds().map_or("n/a".into(), |l| format!("{l:.0} s"))
        );
        if problems.is_empty() {
            Ok(format!("ok: {}; {model}", notes.join("; ")))
        } else {
            Err(format!("unhealthy: {}; {}; {model}", problems.join("; "), notes.join("; ")))
        }
    }
}

fn describe() {
    describe_counter!("adstream_learn_windows_total", "Windows learned (each once).");
    describe_counter!(
        "adstream_learn_revisions_total",
        "Learned windows revised: a later change learned as its difference."
    );
    describe_counter!("adstream_learn_impressions_total", "Impressions learned, in total.");
    describe_counter!("adstream_learn_clicks_total", "Clicks learned, in total.");
    describe_counter!("adstream_learn_examples_total", "Aggregated examples (window x segment) learned.");
    describe_counter!(
        "adstream_learn_windows_abandoned_total",
        "Learned windows let go while a partition had not closed them (older than --revise-horizon)."
    );
    describe_gauge!(
        "adstream_learn_abandoned_impressions",
        "Impressions of the segment rollup the model never learned: written after their window was let go \
         (ad_ctr_abandoned has them per window and reason); read every 30 s."
    );
    describe_gauge!("adstream_learn_abandoned_clicks", "Clicks the model never learned (see _abandoned_impressions).");
    describe_counter!(
        "adstream_learn_rows_skipped_total",
        "Segment rows not learned, by reason: shrunk (a learned count went down), unknown_value (a format, \
         country or device this build does not know)."
    );
    describe_counter!("adstream_learn_snapshots_total", "Model snapshots saved to ClickHouse.");
    describe_counter!("adstream_learn_redis_publishes_total", "Model versions published to Redis.");
    describe_counter!(
        "adstream_learn_redis_publish_failures_total",
        "Failed Redis publishes (the next window republishes)."
    );
    describe_gauge!("adstream_learn_redis_used_memory_bytes", Unit::Bytes, "Redis INFO used_memory, every 30 s.");
    describe_gauge!(
        "adstream_learn_model_table_bytes",
        Unit::Bytes,
        "Bytes on disk of ad_ctr_model (active parts), every 30 s."
    );
    describe_gauge!("adstream_learn_resident_memory_bytes", Unit::Bytes, "This learner's resident set (VmRSS).");
    describe_gauge!("adstream_learn_leader", "1 while this learner holds the model's lease and writes; 0: standby.");
    describe_gauge!("adstream_learn_lease_token", "Fencing token of the lease this learner holds (or last held).");
    describe_gauge!("adstream_learn_model_version", "Model version (steps that changed the model).");
    describe_gauge!(
        "adstream_learn_lag_seconds",
        Unit::Seconds,
        "Event time between the newest closed window and the newest learned one."
    );
    describe_gauge!(
        "adstream_learn_frontier_lag_seconds",
        Unit::Seconds,
        "Event time between the frontier (the newest window closed on every active partition) and the newest \
         window the learner read; /healthz is 503 past --max-lag."
    );
    describe_gauge!("adstream_learn_last_log_loss", "Progressive log loss per impression of the last learned window.");
    describe_gauge!("adstream_learn_served_segments", "Segments GET /ctr answers for.");
    describe_histogram!(PUBLISH_SECONDS, Unit::Seconds, "Duration of successful Redis publishes (MULTI/EXEC).");
}

fn sync(s: &LearnStats) {
    let g = |a: &AtomicU64| a.load(Relaxed);
    counter!("adstream_learn_windows_total").absolute(g(&s.windows));
    counter!("adstream_learn_revisions_total").absolute(g(&s.revisions));
    counter!("adstream_learn_impressions_total").absolute(g(&s.impressions));
    counter!("adstream_learn_clicks_total").absolute(g(&s.clicks));
    counter!("adstream_learn_examples_total").absolute(g(&s.examples));
    counter!("adstream_learn_windows_abandoned_total").absolute(g(&s.abandoned));
    for (reason, n) in [("shrunk", &s.shrunk), ("unknown_value", &s.unknown)] {
        counter!("adstream_learn_rows_skipped_total", "reason" => reason).absolute(g(n));
    }
    gauge!("adstream_learn_abandoned_impressions").set(s.abandoned_impressions.load(Relaxed) as f64);
    gauge!("adstream_learn_abandoned_clicks").set(s.abandoned_clicks.load(Relaxed) as f64);
    counter!("adstream_learn_snapshots_total").absolute(g(&s.snapshots));
    counter!("adstream_learn_redis_publishes_total").absolute(g(&s.publishes));
    counter!("adstream_learn_redis_publish_failures_total").absolute(g(&s.publish_failures));
    gauge!("adstream_learn_model_version").set(g(&s.version) as f64);
    gauge!("adstream_learn_leader").set(g(&s.leader) as f64);
    for (name, v) in [
        ("adstream_learn_redis_used_memory_bytes", s.redis_used_memory.load(Relaxed)),
        ("adstream_learn_model_table_bytes", s.model_table_bytes.load(Relaxed)),
        ("adstream_learn_resident_memory_bytes", rss_bytes().unwrap_or(-1)),
    ] {
        if v >= 0 {
            gauge!(name).set(v as f64);
        }
    }
    gauge!("adstream_learn_lease_token").set(g(&s.lease_token) as f64);
    if let Some(l) = s.lag_seconds() {
        gauge!("adstream_learn_lag_seconds").set(l);
    }
    if let Some(l) = s.frontier_lag_seconds().filter(|l| l.is_finite()) {
        gauge!("adstream_learn_frontier_lag_seconds").set(l);
    }
    let ll = f64::from_bits(g(&s.last_log_loss));
    if ll.is_finite() {
        gauge!("adstream_learn_last_log_loss").set(ll);
    }
    gauge!("adstream_learn_served_segments").set(s.served.len() as f64);
    for (name, d) in [("clickhouse", &s.clickhouse), ("redis", &s.redis)] {
        gauge!("adstream_dependency_up", "dependency" => name).set(if d.down().is_some() { 0.0 } else { 1.0 });
    }
}

/// This process's resident set, bytes (Linux: /proc/self/status VmRSS).
fn rss_bytes() -> Option<i64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: i64 =
        s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Binds `addr` and serves until the runtime ends; returns the bound
/// address.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<LearnStats>,
    unhealthy_after: Duration,
    max_lag: Duration,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("--metrics-addr {addr}: cannot listen (another process on this port? choose another with --metrics-addr / ADSTREAM_METRICS_ADDR, or `off`)")
    })?;
    let bound = listener.local_addr()?;
    super::metrics::handle();
    describe();
    let (health, served) = (stats.clone(), stats.served.clone());
    let routes = Routes {
        metrics: Box::new(move || {
            sync(&stats);
            super::metrics::handle().render()
        }),
        health: Box::new(move || health.health(unhealthy_after, max_lag)),
        index: "adstream learn: GET /ctr?campaign=&format=&country=&device=, /metrics, /healthz\n",
        not_found: "not found: try /ctr, /metrics or /healthz\n",
        own: Box::new(move |path, query| {
            (path == "/ctr").then(|| match served.ctr(query) {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(e) => {
                    let status = match e {
                        CtrError::BadRequest(_) => StatusCode::BAD_REQUEST,
                        CtrError::NotFound(_) => StatusCode::NOT_FOUND,
                    };
                    reply(status, "application/json", e.json())
                }
            })
        }),
    };
    super::http::serve(listener, routes, "learn endpoint");
    tracing::info!("predicted CTR on http://{bound}/ctr, metrics on /metrics, health on /healthz");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_redis_when_it_is_down() {
        let s = LearnStats::default();
        let lag = Duration::from_secs(600);
        assert!(s.health(Duration::from_secs(30), lag).unwrap().contains("Redis ok"));
        s.redis.failed("connection refused");
        let ok = s.health(Duration::from_secs(30), lag).unwrap();
        assert!(ok.contains("Redis down"), "{ok}");
        let bad = s.health(Duration::ZERO, lag).unwrap_err();
        assert!(bad.contains("Redis down") && bad.contains("connection refused"), "{bad}");
    }

    #[test]
    fn health_fails_when_learning_falls_behind_the_frontier() {
        let s = LearnStats::default();
        let (after, max_lag) = (Duration::from_secs(30), Duration::from_secs(600));
        s.learned_through_ms.store(0, Relaxed);
        s.frontier_ms.store(600_000, Relaxed);
        assert_eq!(s.frontier_lag_seconds(), Some(600.0));
        assert!(s.health(after, max_lag).is_ok());
        s.frontier_ms.store(7_200_000, Relaxed);
        let bad = s.health(after, max_lag).unwrap_err();
        assert!(bad.contains("7200 s of event time behind") && bad.contains("--max-lag"), "{bad}");
        // Read through the frontier with nothing to learn: caught up.
        s.read_through_ms.store(7_200_000, Relaxed);
        assert_eq!(s.frontier_lag_seconds(), Some(0.0));
        assert!(s.health(after, max_lag).is_ok());
    }
}
