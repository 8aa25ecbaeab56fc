//! `adstream run`: wires the Kafka source, the [`Processor`] and a sink, and
//! owns offsets and backpressure.
//!
//! Two threads of control:
//! - the **consume loop** (a blocking thread) polls Kafka, feeds the
//!   processor and cuts a [`Batch`] every `--flush-interval`; when the sink
//!   falls behind (bounded channel full) it holds the batch and pauses the
//!   assigned partitions until there is room again, which is the
//!   backpressure; it also fires the windows of idle partitions;
//! - the **sink task** writes each batch (retrying with backoff) and only
//!   then commits the batch's checkpoints to Kafka.
//!
//! So a committed offset never runs ahead of what ClickHouse holds, and
//! whatever was not committed is replayed on restart; idempotent writes
//! (see `sql/`) make that replay invisible in the results.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use tokio::sync::mpsc;

use crate::cli::{RunArgs, SinkKind};
use crate::processor::Processor;
use crate::sink::{self, Batch, Sink};
use crate::source::kafka::{self, PipelineConsumer, RebalanceEvent};
use crate::source::producer::{self, ProduceConfig, ProduceStats};
use crate::source::queue::{MessageBatch, MessageQueue};
use crate::stats::{PartitionGauges, Stats};
use crate::window::{Checkpoint, WindowConfig};

/// Most messages taken from Kafka per batch. The clock is read once per
/// batch (everything timed in the loop is 100 ms or coarser; a full batch
/// takes well under a millisecond to process).
const BATCH_MESSAGES: usize = 1024;

/// How long shutdown waits for the final, synchronous offset commit.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long shutdown may keep retrying a failing sink before giving up
/// (uncommitted work is replayed by the next start, so giving up is safe).
pub(crate) const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(8);

pub async fn run(args: RunArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let cfg = args.window.config()?;
    let stats = Arc::new(Stats::new());
    let topic = args.kafka.topic.clone();

    let mut sink = match args.sink {
        SinkKind::Clickhouse => Sink::ClickHouse(Box::new(
            sink::clickhouse::ClickHouseSink::connect(&args.clickhouse, args.cluster.name(), &topic).await?,
        )),
        SinkKind::Console => Sink::Console(sink::console::ConsoleSink),
    };
    let kafka_args = args.kafka.clone();
    tokio::task::spawn_blocking(move || kafka::check_reachable(&kafka_args)).await??;
    let ops = crate::health::Ops::start(&args, stats.clone()).await?;
    let mut dlq = sink::dlq::DlqSink::connect(&args.kafka, &args.dlq_topic, stats.clone()).await?;

    // Self-feed: the bundled generator in this process, producing to the
    // topic we consume.
    let feed_done = Arc::new(AtomicBool::new(args.self_feed.is_none()));
    let feed = match args.self_feed {
        Some(rate) => {
            kafka::ensure_topic(&args.kafka, 3, 1).await?;
            let pc = ProduceConfig {
                kafka: args.kafka.clone(),
                generator: args.traffic.generator_config(rate)?,
                rate,
                count: args.self_feed_count,
                duration: None,
                out_jsonl: None,
                progress: false,
            };
            let (stop, done) = (stop.clone(), feed_done.clone());
            Some(std::thread::spawn(move || {
                let r = producer::produce(pc, stop, Arc::new(ProduceStats::default()));
                done.store(true, Ordering::SeqCst);
                r
            }))
        }
        None => None,
    };

    let consumer = Arc::new(kafka::consumer(&args.kafka, &args.group)?);
    let watermarks = if args.drain { Some(kafka::watermark_client(&args.kafka)?) } else { None };
    tracing::info!(
        brokers = %args.kafka.brokers, topic = %topic, group = %args.group,
        window_s = cfg.size_us as f64 / 1e6, lateness_s = cfg.allowed_lateness_us as f64 / 1e6,
        "consuming"
    );
    let (tx, mut rx) = mpsc::channel::<Batch>(8);
    let loop_ctx = LoopCtx {
        consumer: consumer.clone(),
        watermarks,
        topic: topic.clone(),
        cfg,
        max_event_bytes: args.max_event_bytes,
        flush_interval: args.flush_interval,
        idle_timeout: args.idle_timeout,
        drain: args.drain,
        stop: stop.clone(),
        feed_done: feed_done.clone(),
        stats: stats.clone(),
    };
    let consume = tokio::task::spawn_blocking(move || consume_loop(loop_ctx, tx));
    let _probes = ops.probe(consumer.clone(), &topic);

    let stats_task = {
        let (stats, interval) = (stats.clone(), args.stats_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!("stats: {}", stats.line());
            }
        })
    };

    // Sink task (this task): write, forward rejects to the dead-letter
    // topic, then commit.
    let mut last_commits: Vec<(i32, Checkpoint)> = Vec::new();
    let mut sink_result = Ok(());
    while let Some(batch) = rx.recv().await {
        if let Err(e) = write_with_retry(&mut sink, &batch, &stop, &stats).await {
            sink_result = Err(e);
            break;
        }
        if let Some(dlq) = dlq.as_mut() {
            if let Err(e) = dlq.write(&batch.rejected, &stop).await {
                sink_result = Err(e);
                break;
            }
        }
        if !batch.commits.is_empty() {
            if let Err(e) = kafka::commit(&consumer, &topic, &batch.commits, false) {
                tracing::warn!("offset commit: {e}");
            } else {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            last_commits = batch.commits;
        }
    }
    drop(rx);
    if let Some(dlq) = &dlq {
        dlq.finish();
    }
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
    stats_task.abort();
    if let Some(h) = feed {
        stop.store(true, Ordering::SeqCst);
        match h.join() {
            Ok(Ok(s)) => tracing::info!("self-feed: {} events delivered, {} failed", s.delivered, s.failed),
            Ok(Err(e)) => tracing::error!("self-feed: {e:#}"),
            Err(_) => tracing::error!("self-feed thread panicked"),
        }
    }
    consumer.unsubscribe();
    tracing::info!("final stats: {}", stats.line());
    sink_result?;
    loop_result
}

async fn write_with_retry(sink: &mut Sink, batch: &Batch, stop: &AtomicBool, stats: &Stats) -> anyhow::Result<()> {
    if !batch.has_output() {
        return Ok(());
    }
    let mut backoff = Duration::from_millis(100);
    let mut stopping_since: Option<Instant> = None;
    loop {
        let t0 = Instant::now();
        match sink.write(batch).await {
            Ok(()) => {
                let acked = Instant::now();
                for &(due, n) in &batch.due {
                    stats.visible_latency.record(acked.duration_since(due).as_micros() as u64, u64::from(n));
                }
                stats.insert_done(t0.elapsed(), batch.rows.len());
                return Ok(());
            }
            Err(e) => {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
                // Logged once per outage plus a reminder every 30 s.
                stats.health.clickhouse.failed(&format!("sink write failed, retrying with backoff: {e:#}"));
                if stop.load(Ordering::Relaxed) {
                    let since = *stopping_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SHUTDOWN_WRITE_GRACE {
                        bail!("sink still failing at shutdown: {e:#}; offsets were not committed past the last written batch, so a restart replays the rest");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

struct LoopCtx {
    consumer: Arc<PipelineConsumer>,
    /// For `--drain`'s end-of-topic check (see [`kafka::WatermarkClient`]).
    watermarks: Option<kafka::WatermarkClient>,
    topic: String,
    cfg: WindowConfig,
    max_event_bytes: usize,
    flush_interval: Duration,
    idle_timeout: Duration,
    drain: bool,
    stop: Arc<AtomicBool>,
    feed_done: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

fn consume_loop(ctx: LoopCtx, tx: mpsc::Sender<Batch>) -> anyhow::Result<()> {
    let consumer = &*ctx.consumer;
    let mut proc = Processor::new(ctx.cfg, ctx.max_event_bytes, ctx.stats.clone());
    let mut assigned: BTreeSet<i32> = BTreeSet::new();
    // Partitions whose first message lay beyond the committed offset: we
    // sought back once; the checkpoint is applied on the next message.
    let mut sought: HashMap<i32, Option<Checkpoint>> = HashMap::new();
    let mut last_flush = Instant::now();
    // Wall-clock time of each partition's last message, for --idle-timeout;
    // `idle` holds the partitions fired since their last message.
    let mut last_msg: HashMap<i32, Instant> = HashMap::new();
    let mut idle: BTreeSet<i32> = BTreeSet::new();
    let mut last_tick = Instant::now();
    // A batch the sink had no room for yet, and whether fetching is paused
    // because of it.
    let mut held: Option<Batch> = None;
    let mut paused = false;
    // Messages come in batches from a queue the assigned partitions are
    // forwarded to (see `source::queue`); the consumer's own poll serves
    // rebalances, commit results and client errors once per batch.
    let queue = MessageQueue::register(consumer)?;
    let mut msgs = MessageBatch::with_capacity(BATCH_MESSAGES);
    // Partitions whose remaining messages in the current batch must be
    // skipped: we sought back, so they will be fetched again.
    let mut skip: Vec<i32> = Vec::new();
    let mut now;
    let mut last_stamped: Option<(i32, Instant)> = None;
    let mut quiet = false;

    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            tracing::info!("stopping: emitting open windows and committing");
            break;
        }
        // With nothing assigned, messages cannot come: wait on the consumer
        // queue (for the assignment) instead of the message queue.
        let wait = if quiet { Duration::from_millis(100) } else { Duration::ZERO };
        let (consumer_wait, queue_wait) =
            if assigned.is_empty() { (wait, Duration::ZERO) } else { (Duration::ZERO, wait) };
        let polled = consumer.poll(consumer_wait);
        for ev in consumer.context().take_rebalances() {
            match ev {
                RebalanceEvent::Assigned(ps) => {
                    // librdkafka may keep a partition's pause across a
                    // revoke/assign, so state it either way.
                    set_paused(consumer, &ctx.topic, &ps, held.is_some());
                    assigned.extend(ps);
                }
                RebalanceEvent::Revoked(ps) => {
                    for p in ps {
                        assigned.remove(&p);
                        last_msg.remove(&p);
                        last_stamped = None;
                        idle.remove(&p);
                        sought.remove(&p);
                        proc.drop_partition(p);
                    }
                }
            }
        }
        let n = queue.consume(&mut msgs, queue_wait);
        quiet = n == 0 && polled.is_none();
        now = Instant::now();
        let mut on = |m: Polled<'_>| match m {
            Polled::Record { partition: p, offset, key, payload } => {
                if skip.contains(&p) {
                    return;
                }
                if last_stamped != Some((p, now)) {
                    last_msg.insert(p, now);
                    last_stamped = Some((p, now));
                }
                idle.remove(&p);
                if !proc.has_partition(p) && !init_partition(consumer, &ctx.topic, &mut proc, &mut sought, p, offset) {
                    skip.push(p);
                    return;
                }
                proc.process(p, offset, key, payload.unwrap_or(&[]));
            }
            // Logged once per outage plus a reminder every 30 s; the health
            // probe logs the recovery.
            Polled::Error(e) => ctx.stats.health.kafka.failed(&format!("consumer: {e}")),
        };
        match polled {
            // End-of-partition events are off by default; with
            // `--kafka-option enable.partition.eof=true` they are no error.
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => on(Polled::Error(e.to_string())),
            // Only before its partition was forwarded to the queue.
            Some(Ok(msg)) => on(Polled::Record {
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key(),
                payload: msg.payload(),
            }),
        }
        for m in msgs.iter() {
            on(match m.error() {
                None => {
                    Polled::Record { partition: m.partition(), offset: m.offset(), key: m.key(), payload: m.payload() }
                }
                Some(RDKafkaErrorCode::PartitionEOF) => continue,
                Some(code) => Polled::Error(format!("partition {}: {code}: {}", m.partition(), m.error_detail())),
            });
        }
        skip.clear();
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            last_tick = now;
            proc.publish_stats();
            fire_idle(&mut proc, &assigned, &last_msg, &mut idle, ctx.idle_timeout);
            publish_gauges(consumer, &ctx, &proc, &assigned);
        }
        if held.is_none() && now.duration_since(last_flush) >= ctx.flush_interval && proc.pending() {
            held = Some(proc.take_batch());
            now = Instant::now();
            last_flush = now;
        }
        // Backpressure: when the sink is behind (e.g. ClickHouse is down and
        // the writer is retrying), hold the batch and pause fetching instead
        // of blocking here, so the loop keeps serving rebalances and Kafka's
        // max.poll.interval, and memory stays bounded by one held batch plus
        // the channel.
        if let Some(batch) = held.take() {
            match tx.try_send(batch) {
                Ok(()) => {
                    if paused {
                        tracing::info!("sink caught up: resuming consumption");
                        set_paused(consumer, &ctx.topic, &assigned, false);
                        reposition(consumer, &ctx.topic, &proc, &assigned);
                        paused = false;
                    }
                }
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    held = Some(batch);
                    if !paused {
                        tracing::warn!("sink is behind: pausing consumption until it catches up");
                        set_paused(consumer, &ctx.topic, &assigned, true);
                        paused = true;
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => bail!("sink stopped"),
            }
        }
        let feed_done = ctx.feed_done.load(Ordering::SeqCst);
        // Drained: nothing came for a moment, and every assigned partition
        // is read to the broker's high watermark (read after the feed
        // finished). The cached watermark rules out the partitions that
        // are visibly behind without a round trip.
        if ctx.drain
            && quiet
            && feed_done
            && !assigned.is_empty()
            && assigned.iter().all(|&p| {
                let cached = kafka::cached_high_watermark(consumer, &ctx.topic, p);
                cached.zip(proc.next_offset(p)).is_none_or(|(high, next)| next >= high)
            })
            && assigned.iter().all(|&p| read_to_end(consumer, ctx.watermarks.as_ref(), &ctx.topic, &proc, p))
        {
            tracing::info!("drained: every assigned partition read to its end");
            break;
        }
    }
    if let Some(batch) = held.take() {
        if tx.blocking_send(batch).is_err() {
            bail!("sink stopped before the final batch");
        }
    }
    proc.fire_all();
    // The stats line at exit must not show the lag of up to a second ago
    // (the counters are published by take_batch).
    publish_gauges(consumer, &ctx, &proc, &assigned);
    if tx.blocking_send(proc.take_batch()).is_err() {
        bail!("sink stopped before the final batch");
    }
    Ok(())
}

/// Publishes each assigned partition's lag (from the high watermark of the
/// last fetch, no round trip) and watermark, and the total lag.
fn publish_gauges(consumer: &PipelineConsumer, ctx: &LoopCtx, proc: &Processor, assigned: &BTreeSet<i32>) {
    let gauges: std::collections::BTreeMap<i32, PartitionGauges> = assigned
        .iter()
        .map(|&p| {
            let high = kafka::cached_high_watermark(consumer, &ctx.topic, p);
            let lag = high.zip(proc.next_offset(p)).map(|(h, n)| (h - n).max(0));
            (p, PartitionGauges { lag, watermark_us: proc.watermark(p) })
        })
        .collect();
    let lag: i64 = gauges.values().filter_map(|g| g.lag).sum();
    ctx.stats.lag.store(lag as u64, Ordering::Relaxed);
    ctx.stats.set_partitions(gauges);
}

/// What one poll of the consumer or one message of a batch brought.
enum Polled<'a> {
    Record { partition: i32, offset: i64, key: Option<&'a [u8]>, payload: Option<&'a [u8]> },
    Error(String),
}

/// Pauses or resumes fetching `partitions` of `topic`. Pausing also drops
/// librdkafka's prefetched messages for them (they are fetched again on
/// resume), so a long sink outage costs no memory.
fn set_paused<'a>(
    consumer: &PipelineConsumer,
    topic: &str,
    partitions: impl IntoIterator<Item = &'a i32>,
    pause: bool,
) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let r = if pause { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    if let Err(e) = r {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::warn!("{} partitions {partitions:?}: {e}", if pause { "pausing" } else { "resuming" });
    }
}

/// Seeks each assigned partition that has processed messages to the one
/// after its last, after a resume. librdkafka resumes a paused partition
/// from its "application position", and its batch API sets that position
/// from every item it hands out, errors included (to the error's offset
/// plus one; end-of-partition events, which did the same, are switched
/// off). Had one come in before the pause, the resume would skip a
/// message: `clickhouse_outage_holds_offsets_and_memory_then_catches_up`
/// lost exactly one per partition that way. Our own position is exact, so
/// we state it.
fn reposition(consumer: &PipelineConsumer, topic: &str, proc: &Processor, assigned: &BTreeSet<i32>) {
    for &p in assigned {
        if let Some(next) = proc.next_offset(p) {
            if let Err(e) = consumer.seek(topic, p, Offset::Offset(next), Duration::from_secs(10)) {
                tracing::warn!(partition = p, "seek to {next} after resuming: {e}");
            }
        }
    }
}

/// Fires the windows of partitions that received nothing for
/// `idle_timeout`, once per quiet spell: without this a partition (or a
/// whole topic) that stops receiving events would hold its last windows
/// back forever, as its watermark only moves with new events.
fn fire_idle(
    proc: &mut Processor,
    assigned: &BTreeSet<i32>,
    last_msg: &HashMap<i32, Instant>,
    idle: &mut BTreeSet<i32>,
    idle_timeout: Duration,
) {
    for &p in assigned {
        let quiet = last_msg.get(&p).is_some_and(|t| t.elapsed() >= idle_timeout);
        if quiet && proc.has_partition(p) && idle.insert(p) {
            tracing::debug!(partition = p, "idle for {idle_timeout:?}: emitting its open windows");
            proc.fire_partition(p);
        }
    }
}

/// Whether everything in partition `p` up to the broker's high watermark has
/// been processed (or was covered by the committed checkpoint).
fn read_to_end(
    consumer: &PipelineConsumer,
    watermarks: Option<&kafka::WatermarkClient>,
    topic: &str,
    proc: &Processor,
    p: i32,
) -> bool {
    let timeout = Duration::from_secs(5);
    let wm = match watermarks {
        Some(c) => c.fetch_watermarks(topic, p, timeout),
        None => consumer.fetch_watermarks(topic, p, timeout),
    };
    let Ok((low, high)) = wm else { return false };
    if let Some(next) = proc.next_offset(p) {
        return next >= high;
    }
    low >= high || kafka::committed_checkpoint(consumer, topic, p).ok().flatten().is_some_and(|cp| cp.offset >= high)
}

/// Sets up partition `p` on its first message. Returns whether `offset` may
/// be processed now (false: we sought back to the committed offset, or the
/// committed offset could not be read yet and the message will come again).
fn init_partition(
    consumer: &PipelineConsumer,
    topic: &str,
    proc: &mut Processor,
    sought: &mut HashMap<i32, Option<Checkpoint>>,
    p: i32,
    offset: i64,
) -> bool {
    if let Some(cp) = sought.remove(&p) {
        if let Some(c) = cp {
            if offset > c.offset {
                tracing::warn!(partition = p, "offsets {}..{offset} are no longer in the topic (retention?)", c.offset);
            }
        }
        proc.init_partition(p, cp);
        return true;
    }
    let cp = match kafka::committed_checkpoint(consumer, topic, p) {
        Ok(cp) => cp,
        Err(e) => {
            // Without the checkpoint a replay could overwrite final rows
            // with partial ones: do not guess, read it again.
            tracing::warn!(partition = p, "reading committed offset: {e}; retrying");
            let _ = consumer.seek(topic, p, Offset::Offset(offset), Duration::from_secs(10));
            return false;
        }
    };
    if let Some(c) = cp {
        if c.max_ts_at_offset.is_none() && c.closed_max_ts.is_none() && c.offset > 0 {
            tracing::warn!(
                partition = p,
                "committed offset {} carries no adstream checkpoint; starting fresh from it",
                c.offset
            );
        }
        if offset > c.offset {
            if let Err(e) = consumer.seek(topic, p, Offset::Offset(c.offset), Duration::from_secs(10)) {
                tracing::warn!(partition = p, "seek to committed offset {}: {e}", c.offset);
            } else {
                sought.insert(p, cp);
                return false;
            }
        }
    }
    tracing::info!(partition = p, offset, checkpoint = ?cp, "partition started");
    proc.init_partition(p, cp);
    true
}
