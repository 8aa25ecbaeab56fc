//! The operability side of a `run`: the `/metrics` + `/healthz` server and
//! the probes that keep `/healthz` current while nothing else reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{RunConfig, SinkKind};
use crate::io::kafka::{fetch, PipelineConsumer};
use crate::obs::{metrics, Stats};

/// The monitoring of a `run`: the metrics/health endpoint and the probes
/// that keep `/healthz` current.
pub struct Monitoring {
    stats: Arc<Stats>,
    clickhouse: Option<clickhouse::Client>,
    period: Duration,
}

impl Monitoring {
    /// Binds `--metrics-addr` (unless `off`).
    pub async fn start(config: &RunConfig, stats: Arc<Stats>) -> anyhow::Result<Monitoring> {
        if let Some(addr) = config.metrics_addr {
            metrics::serve(addr, stats.clone(), &config.kafka.topic, config.unhealthy_after).await?;
        }
        let clickhouse = match config.sink {
            SinkKind::ClickHouse => Some(crate::io::clickhouse::client(&config.clickhouse)?),
            SinkKind::Console => None,
        };
        // A few probes per threshold, so /healthz turns within ~1/3 of it.
        let period = (config.unhealthy_after / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
        Ok(Monitoring { stats, clickhouse, period })
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
    health: Arc<Stats>,
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
            let kafka = tokio::task::spawn_blocking(move || fetch::probe_metadata(&c, &t, timeout)).await;
            match kafka {
                Ok(Ok(())) => health.health.kafka.ok(),
                Ok(Err(e)) => health.health.kafka.failed(&e),
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
