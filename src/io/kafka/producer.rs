//! Drives the [`Generator`] into Kafka at a target rate: the engine of
//! `adstream generate` and of `run --self-feed`.
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
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::engine::time::now_micros;
use crate::generator::{Generator, GeneratorConfig, Pacer, Traffic};
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

/// What to produce and when to stop.
pub struct ProduceConfig {
    pub kafka: KafkaConfig,
    pub generator: GeneratorConfig,
    /// `--traffic` and `--campaigns`.
    pub traffic: Traffic,
    /// Events per second; 0 = unthrottled.
    pub rate: f64,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub out_jsonl: Option<std::path::PathBuf>,
    /// Print progress (`Sent N events | Rate: R events/sec | Failed: F`) on
    /// stdout: see [`Progress`].
    pub progress: bool,
}

/// Final figures of a produce run.
#[derive(Debug, Clone, Copy)]
pub struct ProduceSummary {
    pub delivered: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

/// Produces until `count`, `duration` or `stop`, then waits for every
/// outstanding delivery report. Blocking: run it on its own thread.
pub fn produce(cfg: ProduceConfig, stop: Shutdown, stats: Arc<ProduceStats>) -> anyhow::Result<ProduceSummary> {
    let jsonl = match &cfg.out_jsonl {
        Some(p) => Some(Mutex::new(BufWriter::with_capacity(1 << 20, create(p)?))),
        None => None,
    };
    let ctx = DeliveryContext {
        quiet: QuietContext::default(),
        stats: stats.clone(),
        jsonl,
        jsonl_error: AtomicBool::new(false),
    };
    let mut kcfg = client_config(&cfg.kafka)?;
    kcfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "300000");
    crate::io::kafka::apply_options(&mut kcfg, &cfg.kafka)?;
    let producer: ThreadedProducer<DeliveryContext> =
        kcfg.create_with_context(ctx).context("creating Kafka producer")?;

    let mut gen = Generator::new(cfg.generator).with_traffic(cfg.traffic);
    let (mut key, mut json) = (Vec::with_capacity(64), Vec::with_capacity(512));
    let pacer = Pacer::new(cfg.rate);
    let mut progress = cfg.progress.then(Progress::new);
    let mut sent = 0u64;
    'outer: loop {
        if stop.is_triggered()
            || cfg.count.is_some_and(|c| sent >= c)
            || cfg.duration.is_some_and(|d| pacer.elapsed() >= d)
        {
            break;
        }
        if !pacer.ready(sent) {
            continue;
        }
        gen.next_into(now_micros, &mut key, &mut json);
        loop {
            match producer.send(BaseRecord::to(&cfg.kafka.topic).key(&key).payload(&json)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if stop.is_triggered() {
                        break 'outer;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("could not enqueue event: {e}");
                    break;
                }
            }
        }
        sent += 1;
        stats.enqueued.store(sent, Ordering::Relaxed);
        if let Some(p) = progress.as_mut() {
            p.tick(sent, &stats);
        }
    }
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    // Wait for every delivery report: a message is only "sent" once acked.
    let flushed = producer.flush(Duration::from_secs(60));
    let elapsed = pacer.elapsed();
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let failed =
        stats.failed.load(Ordering::Relaxed) + sent.saturating_sub(delivered + stats.failed.load(Ordering::Relaxed));
    if let Err(e) = flushed {
        tracing::error!("flush: {e}; {} events unconfirmed", sent.saturating_sub(delivered));
    }
    if let Some(w) = &producer.context().jsonl {
        let ok = w.lock().map(|mut w| w.flush().is_ok()).unwrap_or(false);
        anyhow::ensure!(ok && !producer.context().jsonl_error.load(Ordering::Relaxed), "writing --out-jsonl failed");
    }
    Ok(ProduceSummary { delivered, failed, elapsed })
}

/// The live progress line. On a terminal it is one line rewritten in place
/// (`\r`) every second; in a pipe or file, where `\r` would pile up as
/// garbage, a plain line every 10 s instead.
struct Progress {
    tty: bool,
    every: Duration,
    last: Instant,
    last_count: u64,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(10) };
        Progress { tty, every, last: Instant::now(), last_count: 0, drawn: false }
    }

    fn tick(&mut self, sent: u64, stats: &ProduceStats) {
        if self.last.elapsed() < self.every {
            return;
        }
        let now = Instant::now();
        let rate = (sent - self.last_count) as f64 / now.duration_since(self.last).as_secs_f64();
        let line = format!(
            "Sent {} events | Rate: {} events/sec | Failed: {}",
            thousands(stats.delivered.load(Ordering::Relaxed)),
            thousands_f(rate),
            thousands(stats.failed.load(Ordering::Relaxed))
        );
        let mut out = std::io::stdout().lock();
        let _ = if self.tty { write!(out, "\r{line}\x1b[K") } else { writeln!(out, "{line}") };
        let _ = out.flush();
        self.drawn = self.tty;
        self.last = now;
        self.last_count = sent;
    }

    /// Ends the rewritten line so the summary starts on its own.
    fn finish(&mut self) {
        if self.drawn {
            println!();
        }
    }
}

fn create(p: &Path) -> anyhow::Result<File> {
    File::create(p).with_context(|| format!("creating {}", p.display()))
}

/// `12000` → `12,000`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `8312.44` → `8,312.4`.
pub fn thousands_f(x: f64) -> String {
    let x = if x.is_finite() && x >= 0.0 { x } else { 0.0 };
    let tenths = (x * 10.0).round() as u64;
    format!("{}.{}", thousands(tenths / 10), tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_000), "12,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands_f(8312.44), "8,312.4");
        assert_eq!(thousands_f(f64::NAN), "0.0");
    }
}
