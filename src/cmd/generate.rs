//! `adstream generate`: drives the [`Generator`] into Kafka at a target
//! rate ([`produce`], also the in-process feed of `run --self-feed`), or
//! with `--print-truth` prints the traffic model's truth without Kafka.
//!
//! Delivery is confirmed per message by librdkafka's delivery reports
//! ([`EventProducer`]); only delivered events count as sent, a failed
//! delivery is counted and logged, and `--out-jsonl` is written from the
//! delivery reports, so the file holds exactly the events that are in the
//! topic.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::now_micros;
use crate::config::{GenerateConfig, KafkaConfig};
use crate::generator::{Generator, GeneratorConfig, Pacer, Traffic};
use crate::io::kafka;
use crate::io::kafka::producer::{EventProducer, ProduceStats};
use crate::shutdown::Shutdown;

/// Some events were not delivered (the others were).
pub const DELIVERY_FAILED: u8 = 3;

pub async fn generate(config: GenerateConfig, stop: Shutdown) -> anyhow::Result<ExitCode> {
    if config.print_truth {
        // No Kafka: the model only. A closed pipe (| head) is not an error.
        if let Err(e) = config.traffic.write_truth(std::io::stdout().lock()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(anyhow::anyhow!("--print-truth: writing to stdout: {e}"));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let kafka_cfg = config.kafka.clone();
    tokio::task::spawn_blocking(move || kafka::check_reachable(&kafka_cfg)).await??;
    kafka::ensure_topic(&config.kafka, config.partitions, config.replication_factor).await?;
    let pc = ProduceConfig {
        kafka: config.kafka.clone(),
        generator: config.generator,
        traffic: config.traffic,
        rate: config.rate,
        count: config.count,
        duration: config.duration,
        out_jsonl: config.out_jsonl.clone(),
        progress: true,
    };
    let s = tokio::task::spawn_blocking(move || produce(pc, stop, Arc::new(ProduceStats::default()))).await??;
    let secs = s.elapsed.as_secs_f64();
    println!(
        "Done: {} events delivered in {secs:.2} s | Average rate: {} events/sec | Failed deliveries: {}",
        thousands(s.delivered),
        thousands_f(s.delivered as f64 / secs.max(1e-9)),
        thousands(s.failed)
    );
    if s.failed > 0 {
        return Ok(ExitCode::from(DELIVERY_FAILED));
    }
    Ok(ExitCode::SUCCESS)
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
pub fn produce(config: ProduceConfig, stop: Shutdown, stats: Arc<ProduceStats>) -> anyhow::Result<ProduceSummary> {
    let producer = EventProducer::new(&config.kafka, config.out_jsonl.as_deref(), stats.clone())?;
    let mut gen = Generator::new(config.generator).with_traffic(config.traffic);
    let (mut key, mut json) = (Vec::with_capacity(64), Vec::with_capacity(512));
    let pacer = Pacer::new(config.rate);
    let mut progress = config.progress.then(Progress::new);
    let mut sent = 0u64;
    loop {
        if stop.is_triggered()
            || config.count.is_some_and(|c| sent >= c)
            || config.duration.is_some_and(|d| pacer.elapsed() >= d)
        {
            break;
        }
        if !pacer.ready(sent) {
            continue;
        }
        gen.next_into(now_micros, &mut key, &mut json);
        if !producer.send(&key, &json, &stop) {
            break;
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
    let (delivered, failed) = producer.finish(sent)?;
    Ok(ProduceSummary { delivered, failed, elapsed: pacer.elapsed() })
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

/// `12000` → `12,000`.
fn thousands(n: u64) -> String {
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
fn thousands_f(x: f64) -> String {
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
