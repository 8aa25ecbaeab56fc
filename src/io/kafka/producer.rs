//! The Kafka producer of `adstream generate` and `run --self-feed` (whose
//! driver, the generator at a target rate, is `cmd::generate`).
//!
//! Delivery is confirmed per message by librdkafka's delivery reports; only
//! delivered events count as sent, a failed delivery is counted and logged,
//! and `--out-jsonl` is written from the delivery reports, so the file holds
//! exactly the events that are in the topic.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::io::kafka::{client_config, QuietContext};
use crate::shutdown::Shutdown;

/// Counters shared between the send loop and the delivery-report thread.
#[derive(Default)]
pub struct ProduceStats {
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

struct DeliveryContext {
    quiet: QuietContext,
    stats: Arc<ProduceStats>,
    jsonl: Option<Mutex<BufWriter<File>>>,
    jsonl_error: AtomicBool,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        self.quiet.log(level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.quiet.error(error, reason)
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(msg) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                if let (Some(w), Some(payload)) = (&self.jsonl, msg.payload()) {
                    let ok = w
                        .lock()
                        .map(|mut w| w.write_all(payload).and_then(|_| w.write_all(b"\n")).is_ok())
                        .unwrap_or(false);
                    if !ok {
                        self.jsonl_error.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err((e, _)) => {
                let n = self.stats.failed.fetch_add(1, Ordering::Relaxed);
                if n < 10 || n.is_power_of_two() {
                    tracing::error!("delivery failed ({} so far): {e}", n + 1);
                }
            }
        }
    }
}

/// The generator's Kafka producer: idempotent, `acks=all`, batched; every
/// send confirmed by a delivery report, `--out-jsonl` written from them.
pub struct EventProducer {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    stats: Arc<ProduceStats>,
}

impl EventProducer {
    pub fn new(kafka: &KafkaConfig, out_jsonl: Option<&Path>, stats: Arc<ProduceStats>) -> anyhow::Result<Self> {
        let jsonl = match out_jsonl {
            Some(p) => Some(Mutex::new(BufWriter::with_capacity(1 << 20, create(p)?))),
            None => None,
        };
        let ctx = DeliveryContext {
            quiet: QuietContext::default(),
            stats: stats.clone(),
            jsonl,
            jsonl_error: AtomicBool::new(false),
        };
        let mut kcfg = client_config(kafka)?;
        kcfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "300000");
        crate::io::kafka::apply_options(&mut kcfg, kafka)?;
        let producer: ThreadedProducer<DeliveryContext> =
            kcfg.create_with_context(ctx).context("creating Kafka producer")?;
        Ok(EventProducer { producer, topic: kafka.topic.clone(), stats })
    }

    /// Enqueues one event, waiting while librdkafka's queue is full;
    /// `false` if `stop` came while it waited (the event is not sent). An
    /// event that cannot be enqueued is counted failed and logged.
    pub fn send(&self, key: &[u8], payload: &[u8], stop: &Shutdown) -> bool {
        loop {
            match self.producer.send(BaseRecord::to(&self.topic).key(key).payload(payload)) {
                Ok(()) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if stop.is_triggered() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("could not enqueue event: {e}");
                    return true;
                }
            }
        }
    }

    /// Waits for every delivery report (a message is only "sent" once
    /// acked) and closes `--out-jsonl`: `(delivered, failed)` of the `sent`
    /// events.
    pub fn finish(self, sent: u64) -> anyhow::Result<(u64, u64)> {
        let flushed = self.producer.flush(Duration::from_secs(60));
        let stats = &self.stats;
        let delivered = stats.delivered.load(Ordering::Relaxed);
        let failed = stats.failed.load(Ordering::Relaxed)
            + sent.saturating_sub(delivered + stats.failed.load(Ordering::Relaxed));
        if let Err(e) = flushed {
            tracing::error!("flush: {e}; {} events unconfirmed", sent.saturating_sub(delivered));
        }
        if let Some(w) = &self.producer.context().jsonl {
            let ok = w.lock().map(|mut w| w.flush().is_ok()).unwrap_or(false);
            anyhow::ensure!(
                ok && !self.producer.context().jsonl_error.load(Ordering::Relaxed),
                "writing --out-jsonl failed"
            );
        }
        Ok((delivered, failed))
    }
}

fn create(p: &Path) -> anyhow::Result<File> {
    File::create(p).with_context(|| format!("creating {}", p.display()))
}
