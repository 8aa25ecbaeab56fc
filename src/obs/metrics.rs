//! `GET /metrics` (Prometheus text format) and `GET /healthz` for `run`, on
//! `--metrics-addr`.
//!
//! The consume loop never calls into the metrics registry per event: it
//! bumps the plain atomics of [`Stats`], and each scrape copies them into the
//! registry (`metrics` + `metrics-exporter-prometheus`) just before
//! rendering. Counters are set to the atomics' absolute values; per-partition
//! gauges come from the map the consume loop refreshes once a second, and a
//! partition that was revoked stops being set, so its series disappear
//! (gauges not set by the latest scrape are dropped). Only the ClickHouse
//! insert latency is recorded as it happens, once per batch.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::engine::event::{AdFormat, EventType};
use crate::engine::parse::RejectReason;
use crate::obs::http::Routes;
use crate::obs::stats::Stats;

const INSERT_SECONDS: &str = "adstream_clickhouse_insert_duration_seconds";

/// Buckets of the insert latency histogram, seconds.
const INSERT_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The process-wide recorder (the `metrics` facade has one global recorder).
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_millis(500)))
            .set_buckets_for_metric(Matcher::Full(INSERT_SECONDS.into()), &INSERT_BUCKETS)
            // The learner's Redis publish latency, and any later `*_duration_seconds`.
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), &INSERT_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows adstream's counters only");
        }
        describe();
        handle
    })
}

/// Records one successful sink write (a no-op until the server started).
pub fn record_insert(elapsed: Duration) {
    metrics::histogram!(INSERT_SECONDS).record(elapsed.as_secs_f64());
}

fn describe() {
    describe_counter!("adstream_events_consumed_total", "Messages read from Kafka (before validation).");
    describe_counter!("adstream_events_counted_total", "Valid events counted into a window.");
    describe_counter!("adstream_events_rejected_total", "Messages that failed validation, by reason.");
    describe_counter!("adstream_events_late_total", "Events whose window had closed (written to ad_late_events).");
    describe_counter!("adstream_late_updates_total", "Events counted into a window that had already fired.");
    describe_counter!(
        "adstream_duplicates_dropped_total",
        "Redelivered events (same event_id and window) not counted."
    );
    describe_counter!("adstream_replay_skipped_total", "Replayed events of windows already final downstream.");
    describe_counter!("adstream_dlq_records_written_total", "Rejected messages acknowledged by the dead-letter topic.");
    describe_counter!(
        "adstream_window_rows_written_total",
        "Window rows (window x campaign x format x partition) written."
    );
    describe_counter!("adstream_batches_written_total", "Batches written to the sink.");
    describe_counter!("adstream_clickhouse_insert_failures_total", "Failed sink writes (transient ones are retried).");
    describe_counter!(
        "adstream_clickhouse_permanent_errors_total",
        "Sink writes ClickHouse refused for good (wrong credentials, missing table or column, type mismatch): not retried, adstream exits."
    );
    describe_counter!("adstream_offset_commits_total", "Offset commits to Kafka after a durable batch.");
    describe_gauge!("adstream_open_windows", "Windows held in memory.");
    describe_gauge!("adstream_open_cells", "Cells (window × key) held in memory: what the windows' memory grows with.");
    describe_gauge!("adstream_dedup_ids", "Event ids held for deduplication.");
    describe_gauge!(
        "adstream_campaigns_interned",
        "Campaign ids interned: campaigns in an open window of some partition (ids are reused after)."
    );
    describe_gauge!(
        "adstream_campaigns_open",
        "Campaigns in open windows, summed over partitions (rejections by the per-window limit: adstream_events_rejected_total{reason=\"too_many_campaigns\"})."
    );
    describe_gauge!("adstream_dedup_bytes", Unit::Bytes, "Heap bytes of the deduplication sets.");
    describe_gauge!("adstream_consumer_lag", "Messages behind the partition's high watermark.");
    describe_gauge!(
        "adstream_watermark_seconds",
        Unit::Seconds,
        "Partition watermark (newest corroborated event time), Unix seconds."
    );
    describe_gauge!("adstream_dependency_up", "1 while the service answers, 0 while it fails.");
    describe_histogram!(INSERT_SECONDS, Unit::Seconds, "Duration of successful sink writes (one per batch).");
}

/// Copies [`Stats`] into the registry.
fn sync(stats: &Stats, topic: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    counter!("adstream_events_consumed_total").absolute(g(&stats.consumed));
    for f in AdFormat::ALL {
        for t in EventType::ALL {
            counter!("adstream_events_counted_total", "ad_format" => f.as_str(), "event_type" => t.as_str())
                .absolute(g(&stats.counted_by_kind[f.index()][t.index()]));
        }
    }
    for r in RejectReason::ALL {
        counter!("adstream_events_rejected_total", "reason" => r.as_str()).absolute(g(&stats.rejected[r.index()]));
    }
    counter!("adstream_events_late_total").absolute(g(&stats.late));
    counter!("adstream_late_updates_total").absolute(g(&stats.late_updates));
    counter!("adstream_duplicates_dropped_total").absolute(g(&stats.duplicates));
    counter!("adstream_replay_skipped_total").absolute(g(&stats.replay_skipped));
    counter!("adstream_dlq_records_written_total").absolute(g(&stats.dlq_written));
    counter!("adstream_window_rows_written_total").absolute(g(&stats.rows_written));
    counter!("adstream_batches_written_total").absolute(g(&stats.batches_written));
    counter!("adstream_clickhouse_insert_failures_total").absolute(g(&stats.write_failures));
    counter!("adstream_clickhouse_permanent_errors_total").absolute(g(&stats.permanent_write_failures));
    counter!("adstream_offset_commits_total").absolute(g(&stats.commits));
    gauge!("adstream_open_windows").set(g(&stats.open_windows) as f64);
    gauge!("adstream_open_cells").set(g(&stats.open_cells) as f64);
    gauge!("adstream_dedup_ids").set(g(&stats.dedup_ids) as f64);
    gauge!("adstream_campaigns_interned").set(g(&stats.campaigns_interned) as f64);
    gauge!("adstream_campaigns_open").set(g(&stats.campaigns_open) as f64);
    gauge!("adstream_dedup_bytes").set(g(&stats.dedup_bytes) as f64);
    if let Ok(parts) = stats.partitions.lock() {
        for (p, pg) in parts.iter() {
            let labels = [("topic", topic.to_string()), ("partition", p.to_string())];
            if let Some(lag) = pg.lag {
                gauge!("adstream_consumer_lag", &labels).set(lag as f64);
            }
            if let Some(wm) = pg.watermark_us {
                gauge!("adstream_watermark_seconds", &labels).set(wm as f64 / 1e6);
            }
        }
    }
    for (name, d) in [("kafka", &stats.health.kafka), ("clickhouse", &stats.health.clickhouse)] {
        gauge!("adstream_dependency_up", "dependency" => name).set(if d.down().is_some() { 0.0 } else { 1.0 });
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the runtime
/// ends. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    topic: &str,
    unhealthy_after: Duration,
) -> anyhow::Result<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "--metrics-addr {addr}: the port is already in use, probably by another `adstream run` on this host \
             (each process needs its own): give this one another port (--metrics-addr {}:{} or any free one with \
             {}:0; ADSTREAM_METRICS_ADDR), or turn it off with --metrics-addr off",
            addr.ip(),
            addr.port().wrapping_add(1),
            addr.ip()
        ),
        Err(e) => Err(e).with_context(|| {
            format!("--metrics-addr {addr}: cannot listen (choose another address with --metrics-addr / ADSTREAM_METRICS_ADDR, or `off`)")
        })?,
    };
    let bound = listener.local_addr()?;
    handle();
    let (health, topic) = (stats.clone(), topic.to_string());
    let routes = Routes {
        metrics: Box::new(move || {
            sync(&stats, &topic);
            handle().render()
        }),
        health: Box::new(move || health.health.status(unhealthy_after)),
        index: "adstream: GET /metrics, GET /healthz\n",
        not_found: "not found: try /metrics or /healthz\n",
        own: Box::new(|_, _| None),
    };
    super::http::serve(listener, routes, "metrics endpoint");
    tracing::info!("metrics on http://{bound}/metrics, health on http://{bound}/healthz");
    Ok(bound)
}
