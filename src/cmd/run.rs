//! `adstream run`: wires the Kafka source, the engine's
//! [`Processor`] and a sink through the pipeline's stages
//! ([`crate::pipeline`]: the consume loop, which owns backpressure, and the
//! writer, which owns offsets), with the optional in-process feed
//! (`--self-feed`, [`produce`]), the probes and metrics server, the stats
//! line, and the final, bounded offset commit at shutdown.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::generate::{produce, ProduceConfig};
use crate::config::{RunConfig, SinkKind};
use crate::engine::{Batch, Processor};
use crate::io::kafka::producer::ProduceStats;
use crate::io::kafka::{self, dlq::DlqSink};
use crate::io::{clickhouse::ClickHouseSink, console::ConsoleSink, Sink};
use crate::obs::Stats;
use crate::pipeline::{ConsumeLoop, ConsumeLoopParts, LoopSettings, Monitoring, ReplayProbe, Writer};
use crate::shutdown::Shutdown;

/// How long shutdown waits for the final, synchronous offset commit.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(config: RunConfig, shutdown: Shutdown) -> anyhow::Result<ExitCode> {
    wire(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn wire(cfg: RunConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::new());
    let topic = cfg.kafka.topic.clone();

    let sink = match cfg.sink {
        SinkKind::ClickHouse => {
            Sink::ClickHouse(Box::new(ClickHouseSink::connect(&cfg.clickhouse, cfg.cluster.as_deref(), &topic).await?))
        }
        SinkKind::Console => Sink::Console(ConsoleSink),
    };
    let kafka_cfg = cfg.kafka.clone();
    tokio::task::spawn_blocking(move || kafka::check_reachable(&kafka_cfg)).await??;
    let monitoring = Monitoring::start(&cfg, stats.clone()).await?;
    let dlq = DlqSink::connect(&cfg.kafka, &cfg.dlq_topic, stats.clone()).await?;

    // Self-feed: the bundled generator in this process, producing to the
    // topic we consume.
    let feed_done = Arc::new(AtomicBool::new(cfg.self_feed.is_none()));
    let feed = match &cfg.self_feed {
        Some(feed) => {
            kafka::ensure_topic(&cfg.kafka, 3, 1).await?;
            let pc = ProduceConfig {
                kafka: cfg.kafka.clone(),
                generator: feed.generator,
                traffic: feed.traffic,
                rate: feed.rate,
                count: feed.count,
                duration: None,
                out_jsonl: None,
                progress: false,
            };
            let (stop, done) = (shutdown.clone(), feed_done.clone());
            Some(std::thread::spawn(move || {
                let r = produce(pc, stop, Arc::new(ProduceStats::default()));
                done.store(true, Ordering::SeqCst);
                r
            }))
        }
        None => None,
    };

    // Every partition of the topic, registered before any row is written:
    // the learner settles a window only once each of them has closed it,
    // so one whose first rows come after the others' is not left out.
    if matches!(sink, Sink::ClickHouse(_)) {
        let (kc, t) = (cfg.kafka.clone(), topic.clone());
        match tokio::task::spawn_blocking(move || kafka::topic_partitions(&kc, &t)).await? {
            Ok(ids) if !ids.is_empty() => sink.register_partitions(&ids).await?,
            Ok(_) => tracing::warn!(
                topic = %topic,
                "the topic has no partitions yet: not registered for `adstream learn` (it learns of each partition \
                 from its first row)"
            ),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not register the topic's partitions for `adstream learn`")
            }
        }
    }
    let consumer = Arc::new(kafka::consumer(&cfg.kafka, &cfg.group)?);
    let watermarks = if cfg.drain { Some(kafka::watermark_client(&cfg.kafka)?) } else { None };
    tracing::info!(
        brokers = %cfg.kafka.brokers, topic = %topic, group = %cfg.group,
        window_s = cfg.window.size_us as f64 / 1e6, lateness_s = cfg.window.allowed_lateness_us as f64 / 1e6,
        "consuming"
    );
    let (tx, rx) = mpsc::channel::<Batch>(8);
    let settings = LoopSettings {
        topic: topic.clone(),
        flush_interval: cfg.flush_interval,
        idle_timeout: cfg.idle_timeout,
        drain: cfg.drain,
    };
    let proc = Processor::with_rollups(cfg.window, cfg.rollups.clone(), cfg.max_event_bytes)?;
    let probe = match cfg.sink {
        SinkKind::ClickHouse => Some(ReplayProbe {
            client: crate::io::clickhouse::client(&cfg.clickhouse)?.with_database(&cfg.clickhouse.database),
            database: cfg.clickhouse.database.clone(),
            handle: tokio::runtime::Handle::current(),
            shutdown: shutdown.clone(),
        }),
        SinkKind::Console => None,
    };
    let consume_loop = ConsumeLoop::new(ConsumeLoopParts {
        processor: proc,
        consumer: consumer.clone(),
        watermarks,
        settings,
        shutdown: shutdown.clone(),
        feed_done,
        stats: stats.clone(),
        batches: tx,
        probe,
    });
    let consume = tokio::task::spawn_blocking(move || consume_loop.run());
    let _probes = monitoring.probe(consumer.clone(), &topic);
    let _stats_line = StatsLine::spawn(stats.clone(), cfg.stats_interval);

    let writer = Writer {
        sink,
        dlq,
        consumer: consumer.clone(),
        topic: topic.clone(),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
    };
    let (last_commits, sink_result) = writer.run(rx).await;
    let loop_result = consume.await.context("consume loop panicked")?;
    // The final commit is synchronous so that it has landed before we leave
    // the group, but bounded: with the broker unreachable it would wait out
    // the session timeout, and an orchestrator's grace period is shorter.
    // A commit that does not land only means the tail is replayed.
    if sink_result.is_ok() && !last_commits.is_empty() {
        let (c, t, lc) = (consumer.clone(), topic.clone(), last_commits.clone());
        let commit = tokio::task::spawn_blocking(move || kafka::commit(&c, &t, &lc, true));
        match tokio::time::timeout(FINAL_COMMIT_TIMEOUT, commit).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!("final offset commit: {e} (the uncommitted tail is replayed idempotently on restart)")
            }
            Ok(Err(e)) => tracing::warn!("final offset commit: {e}"),
            Err(_) => tracing::warn!(
                "final offset commit: no answer within {FINAL_COMMIT_TIMEOUT:?} (the uncommitted tail is replayed idempotently on restart)"
            ),
        }
    }
    if let Some(h) = feed {
        shutdown.trigger();
        match h.join() {
            Ok(Ok(s)) => tracing::info!("self-feed: {} events delivered, {} failed", s.delivered, s.failed),
            Ok(Err(e)) => tracing::error!("self-feed: {e:#}"),
            Err(_) => tracing::error!("self-feed thread panicked"),
        }
    }
    kafka::leave_group(&consumer);
    tracing::info!("final stats: {}", stats.line());
    sink_result?;
    loop_result
}

/// Logs a stats line every `--stats-interval` while it lives (a drop guard
/// owns the task).
struct StatsLine(tokio::task::JoinHandle<()>);

impl StatsLine {
    fn spawn(stats: Arc<Stats>, interval: Duration) -> Self {
        StatsLine(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!("stats: {}", stats.line());
            }
        }))
    }
}

impl Drop for StatsLine {
    fn drop(&mut self) {
        self.0.abort();
    }
}
