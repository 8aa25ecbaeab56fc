//! The writer (an async task): writes each batch to the sink (retrying
//! with backoff), forwards its rejects to the dead-letter topic, and only
//! then commits the batch's checkpoints to Kafka. So a committed offset
//! never runs ahead of what ClickHouse holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use tokio::sync::mpsc;

use crate::engine::window::Checkpoint;
use crate::engine::Batch;
use crate::io::backoff::{Backoff, SHUTDOWN_WRITE_GRACE};
use crate::io::kafka::dlq::DlqSink;
use crate::io::kafka::{self, PipelineConsumer};
use crate::io::Sink;
use crate::obs::{metrics, Stats};
use crate::shutdown::Shutdown;

pub struct Writer {
    pub sink: Sink,
    pub dlq: Option<DlqSink>,
    pub consumer: Arc<PipelineConsumer>,
    pub topic: String,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
}

impl Writer {
    /// Drains `rx` until the consume loop hangs up or a write fails for
    /// good. Returns the checkpoints committed last, for the final
    /// synchronous commit.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Batch>) -> (Vec<(i32, Checkpoint)>, anyhow::Result<()>) {
        let mut last_commits = Vec::new();
        let mut result = Ok(());
        while let Some(batch) = rx.recv().await {
            if let Err(e) = self.write(&batch).await {
                // The consume loop must stop too, even on a quiet topic.
                self.shutdown.trigger();
                result = Err(e);
                break;
            }
            if let Some(dlq) = self.dlq.as_mut() {
                if let Err(e) = dlq.write(&batch.rejected, &self.shutdown).await {
                    result = Err(e);
                    break;
                }
            }
            if !batch.commits.is_empty() {
                if let Err(e) = kafka::commit(&self.consumer, &self.topic, &batch.commits, false) {
                    tracing::warn!("offset commit: {e}");
                } else {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                }
                last_commits = batch.commits;
            }
        }
        drop(rx);
        if let Some(dlq) = &self.dlq {
            dlq.finish();
        }
        (last_commits, result)
    }

    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if !batch.has_output() {
            return Ok(());
        }
        let mut backoff = Backoff::default();
        loop {
            let t0 = Instant::now();
            // A write in flight at shutdown gets the same grace as a failing
            // one, then is abandoned (its batch not committed): a server that
            // holds the request cannot hold SIGTERM up.
            let written = tokio::select! {
                r = self.sink.write(batch) => r,
                () = backoff.given_up(&self.shutdown) => {
                    bail!("sink write still unanswered {SHUTDOWN_WRITE_GRACE:?} after shutdown; offsets were not committed past the last written batch, so a restart replays the rest")
                }
            };
            match written {
                Ok(()) => {
                    let acked = Instant::now();
                    for &(due, n) in &batch.due {
                        self.stats.visible_latency.record(acked.duration_since(due).as_micros() as u64, u64::from(n));
                    }
                    self.stats.insert_done(t0.elapsed(), batch.rows.len());
                    metrics::record_insert(t0.elapsed());
                    return Ok(());
                }
                Err(e) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    if !e.is_retriable() {
                        // Not retried: the run stops without committing this
                        // batch, and the error is the process's one exit line.
                        self.stats.permanent_write_failures.fetch_add(1, Ordering::Relaxed);
                        return Err(e.into());
                    }
                    // Logged once per outage plus a reminder every 30 s.
                    self.stats.health.clickhouse.failed(&format!("sink write failed, retrying with backoff: {e:#}"));
                    if backoff.gives_up(&self.shutdown) {
                        bail!("sink still failing at shutdown: {e:#}; offsets were not committed past the last written batch, so a restart replays the rest");
                    }
                    backoff.wait(&self.shutdown).await;
                }
            }
        }
    }
}
