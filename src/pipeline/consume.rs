//! The consume loop (a blocking thread): polls Kafka, feeds the
//! [`Processor`], cuts a [`Batch`] every `--flush-interval` and hands it to
//! the writer through a bounded channel. It is a struct with named states
//! ([`Flow`]): when the writer falls behind (channel full) it holds the
//! batch and pauses the assigned partitions until there is room again,
//! which is the backpressure. It also fires the windows of idle partitions
//! and, with `--drain`, ends at the end of the topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use tokio::sync::mpsc;

use crate::engine::window::Checkpoint;
use crate::engine::{Batch, Processor};
use crate::io::kafka::queue::{MessageBatch, MessageQueue};
use crate::io::kafka::{self, PipelineConsumer, RebalanceEvent, WatermarkClient};
use crate::obs::{PartitionGauges, Stats};
use crate::shutdown::Shutdown;

/// Most messages taken from Kafka per batch. The clock is read once per
/// batch (everything timed in the loop is 100 ms or coarser; a full batch
/// takes well under a millisecond to process).
const BATCH_MESSAGES: usize = 1024;

/// What the loop needs to know, fixed for its lifetime.
pub(super) struct LoopSettings {
    pub topic: String,
    pub flush_interval: Duration,
    pub idle_timeout: Duration,
    pub drain: bool,
}

/// Whether batches flow to the writer.
enum Flow {
    /// Fetching; batches go out as they are cut.
    Running,
    /// The writer had no room: this batch waits, and every assigned
    /// partition is paused (librdkafka drops their prefetched messages, so
    /// a long outage costs no memory).
    Paused(Box<Batch>),
}

/// Why the loop ended.
enum Exit {
    Shutdown,
    Drained,
}

/// Per-partition bookkeeping beside the processor's state.
#[derive(Default)]
struct Partitions {
    assigned: BTreeSet<i32>,
    /// Partitions whose first message lay beyond the committed offset: we
    /// sought back once; the checkpoint is applied on the next message.
    sought: HashMap<i32, Option<Checkpoint>>,
    /// Wall-clock time of each partition's last message, for
    /// `--idle-timeout`; `idle` holds the partitions fired since then.
    last_msg: HashMap<i32, Instant>,
    idle: BTreeSet<i32>,
    /// The last (partition, batch time) stamped into `last_msg`, so a
    /// batch stamps each partition once.
    last_stamped: Option<(i32, Instant)>,
    /// Partitions whose remaining messages in the current batch are
    /// skipped: we sought back, so they will be fetched again.
    skip: Vec<i32>,
}

pub(super) struct ConsumeLoop {
    consumer: Arc<PipelineConsumer>,
    /// For `--drain`'s end-of-topic check (see [`WatermarkClient`]).
    watermarks: Option<WatermarkClient>,
    settings: LoopSettings,
    shutdown: Shutdown,
    feed_done: Arc<AtomicBool>,
    stats: Arc<Stats>,
    tx: mpsc::Sender<Batch>,
    proc: Processor,
    parts: Partitions,
    flow: Flow,
    last_flush: Instant,
    last_tick: Instant,
    /// The last pass brought nothing: the next one may wait.
    quiet: bool,
}

/// What one poll of the consumer or one message of a batch brought.
enum Polled<'a> {
    Record { partition: i32, offset: i64, time_us: Option<i64>, key: Option<&'a [u8]>, payload: Option<&'a [u8]> },
    Error(String),
}

impl ConsumeLoop {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        proc: Processor,
        consumer: Arc<PipelineConsumer>,
        watermarks: Option<WatermarkClient>,
        settings: LoopSettings,
        shutdown: Shutdown,
        feed_done: Arc<AtomicBool>,
        stats: Arc<Stats>,
        tx: mpsc::Sender<Batch>,
    ) -> Self {
        let now = Instant::now();
        ConsumeLoop {
            proc,
            consumer,
            watermarks,
            settings,
            shutdown,
            feed_done,
            stats,
            tx,
            parts: Partitions::default(),
            flow: Flow::Running,
            last_flush: now,
            last_tick: now,
            quiet: false,
        }
    }

    /// Runs until shutdown or (with `--drain`) the end of the topic, then
    /// writes what is open and hands over the final batch.
    pub(super) fn run(mut self) -> anyhow::Result<()> {
        let consumer = self.consumer.clone();
        // Messages come in batches from a queue the assigned partitions are
        // forwarded to (see `io::kafka::queue`); the consumer's own poll
        // serves rebalances, commit results and client errors once per batch.
        let queue = MessageQueue::register(&consumer, consumer.context().queue_slot())?;
        let mut msgs = MessageBatch::with_capacity(BATCH_MESSAGES);
        let exit = loop {
            if let Some(exit) = self.step(&consumer, &queue, &mut msgs)? {
                break exit;
            }
        };
        match exit {
            Exit::Shutdown => tracing::info!("stopping: emitting open windows and committing"),
            Exit::Drained => tracing::info!("drained: every assigned partition read to its end"),
        }
        if let Flow::Paused(batch) = std::mem::replace(&mut self.flow, Flow::Running) {
            if self.tx.blocking_send(*batch).is_err() {
                bail!("sink stopped before the final batch");
            }
        }
        self.proc.fire_all();
        let batch = self.proc.take_batch();
        self.stats.add(&batch.counts);
        self.stats.set_footprint(&batch.footprint);
        // The stats line at exit must not show the lag of up to a second ago.
        self.publish_gauges();
        if self.tx.blocking_send(batch).is_err() {
            bail!("sink stopped before the final batch");
        }
        Ok(())
    }

    /// One pass: rebalances, a batch of messages, the once-a-second chores,
    /// a flush when due, backpressure, and the drain check.
    fn step(
        &mut self,
        consumer: &PipelineConsumer,
        queue: &MessageQueue<'_>,
        msgs: &mut MessageBatch,
    ) -> anyhow::Result<Option<Exit>> {
        if self.shutdown.is_triggered() {
            return Ok(Some(Exit::Shutdown));
        }
        // With nothing assigned, messages cannot come: wait on the consumer
        // queue (for the assignment) instead of the message queue.
        let wait = if self.quiet { Duration::from_millis(100) } else { Duration::ZERO };
        let (consumer_wait, queue_wait) =
            if self.parts.assigned.is_empty() { (wait, Duration::ZERO) } else { (Duration::ZERO, wait) };
        let polled = consumer.poll(consumer_wait);
        self.rebalance(consumer);
        let n = queue.consume(msgs, queue_wait);
        self.quiet = n == 0 && polled.is_none();
        let now = Instant::now();
        match polled {
            // End-of-partition events are off by default; with
            // `--kafka-option enable.partition.eof=true` they are no error.
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => self.on(consumer, now, Polled::Error(e.to_string())),
            // Only before its partition was forwarded to the queue.
            Some(Ok(msg)) => self.on(
                consumer,
                now,
                Polled::Record {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    time_us: msg.timestamp().to_millis().map(|ms| ms.saturating_mul(1000)),
                    key: msg.key(),
                    payload: msg.payload(),
                },
            ),
        }
        for m in msgs.iter() {
            let polled = match m.error() {
                None => Polled::Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    time_us: m.timestamp_us(),
                    key: m.key(),
                    payload: m.payload(),
                },
                Some(RDKafkaErrorCode::PartitionEOF) => continue,
                Some(code) => Polled::Error(format!("partition {}: {code}: {}", m.partition(), m.error_detail())),
            };
            self.on(consumer, now, polled);
        }
        self.parts.skip.clear();
        if now.duration_since(self.last_tick) >= Duration::from_secs(1) {
            self.last_tick = now;
            self.stats.add(&self.proc.take_counts());
            self.fire_idle();
            self.publish_gauges();
        }
        let out = match std::mem::replace(&mut self.flow, Flow::Running) {
            Flow::Paused(batch) => Some((*batch, true)),
            Flow::Running
                if now.duration_since(self.last_flush) >= self.settings.flush_interval && self.proc.pending() =>
            {
                let batch = self.proc.take_batch();
                self.stats.add(&batch.counts);
                self.stats.set_footprint(&batch.footprint);
                self.last_flush = Instant::now();
                Some((batch, false))
            }
            Flow::Running => None,
        };
        if let Some((batch, paused)) = out {
            self.hand_over(batch, paused)?;
        }
        Ok(self.drained().then_some(Exit::Drained))
    }

    /// Serves the rebalances the consumer context queued.
    fn rebalance(&mut self, consumer: &PipelineConsumer) {
        for ev in consumer.context().take_rebalances() {
            match ev {
                RebalanceEvent::Assigned(ps) => {
                    // librdkafka may keep a partition's pause across a
                    // revoke/assign, so state it either way.
                    let paused = matches!(self.flow, Flow::Paused(_));
                    set_paused(consumer, &self.settings.topic, &ps, paused);
                    self.parts.assigned.extend(ps);
                }
                RebalanceEvent::Revoked(ps) => {
                    for p in ps {
                        self.parts.assigned.remove(&p);
                        self.parts.last_msg.remove(&p);
                        self.parts.last_stamped = None;
                        self.parts.idle.remove(&p);
                        self.parts.sought.remove(&p);
                        self.proc.drop_partition(p);
                    }
                }
            }
        }
    }

    fn on(&mut self, consumer: &PipelineConsumer, now: Instant, m: Polled<'_>) {
        match m {
            Polled::Record { partition: p, offset, time_us, key, payload } => {
                if self.parts.skip.contains(&p) {
                    return;
                }
                if self.parts.last_stamped != Some((p, now)) {
                    self.parts.last_msg.insert(p, now);
                    self.parts.last_stamped = Some((p, now));
                }
                self.parts.idle.remove(&p);
                if !self.proc.has_partition(p) && !self.init_partition(consumer, p, offset) {
                    self.parts.skip.push(p);
                    return;
                }
                self.proc.process(p, offset, time_us, key, payload.unwrap_or(&[]));
            }
            // Logged once per outage plus a reminder every 30 s; the health
            // probe logs the recovery.
            Polled::Error(e) => self.stats.health.kafka.failed(&format!("consumer: {e}")),
        }
    }

    /// Backpressure: when the writer is behind (e.g. ClickHouse is down and
    /// it is retrying), hold the batch and pause fetching instead of
    /// blocking here, so the loop keeps serving rebalances and Kafka's
    /// max.poll.interval, and memory stays bounded by one held batch plus
    /// the channel.
    fn hand_over(&mut self, batch: Batch, paused: bool) -> anyhow::Result<()> {
        match self.tx.try_send(batch) {
            Ok(()) if paused => {
                tracing::info!("sink caught up: resuming consumption");
                set_paused(&self.consumer, &self.settings.topic, &self.parts.assigned, false);
                self.reposition();
            }
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => {
                if !paused {
                    tracing::warn!("sink is behind: pausing consumption until it catches up");
                    set_paused(&self.consumer, &self.settings.topic, &self.parts.assigned, true);
                }
                self.flow = Flow::Paused(Box::new(batch));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => bail!("sink stopped"),
        }
        Ok(())
    }

    /// Publishes each assigned partition's lag (from the high watermark of
    /// the last fetch, no round trip) and watermark, and the total lag.
    fn publish_gauges(&self) {
        let gauges: BTreeMap<i32, PartitionGauges> = self
            .parts
            .assigned
            .iter()
            .map(|&p| {
                let high = kafka::cached_high_watermark(&self.consumer, &self.settings.topic, p);
                let lag = high.zip(self.proc.next_offset(p)).map(|(h, n)| (h - n).max(0));
                (p, PartitionGauges { lag, watermark_us: self.proc.watermark(p) })
            })
            .collect();
        let lag: i64 = gauges.values().filter_map(|g| g.lag).sum();
        self.stats.lag.store(lag as u64, Ordering::Relaxed);
        self.stats.set_partitions(gauges);
    }

    /// Fires the windows of partitions that received nothing for
    /// `--idle-timeout`, once per quiet spell: without this a partition (or
    /// a whole topic) that stops receiving events would hold its last
    /// windows back forever, as its watermark only moves with new events.
    fn fire_idle(&mut self) {
        let timeout = self.settings.idle_timeout;
        for &p in &self.parts.assigned {
            let quiet = self.parts.last_msg.get(&p).is_some_and(|t| t.elapsed() >= timeout);
            if quiet && self.proc.has_partition(p) && self.parts.idle.insert(p) {
                tracing::debug!(partition = p, "idle for {timeout:?}: emitting its open windows");
                self.proc.fire_partition(p);
            }
        }
    }

    /// `--drain`: nothing came for a moment, the self-feed (if any) is done,
    /// and every assigned partition is read to the broker's high watermark
    /// (read after the feed finished). The cached watermark rules out the
    /// partitions that are visibly behind without a round trip.
    fn drained(&self) -> bool {
        let (consumer, topic) = (&*self.consumer, &self.settings.topic);
        self.settings.drain
            && self.quiet
            && self.feed_done.load(Ordering::SeqCst)
            && !self.parts.assigned.is_empty()
            && self.parts.assigned.iter().all(|&p| {
                let cached = kafka::cached_high_watermark(consumer, topic, p);
                cached.zip(self.proc.next_offset(p)).is_none_or(|(high, next)| next >= high)
            })
            && self.parts.assigned.iter().all(|&p| self.read_to_end(p))
    }

    /// Whether everything in partition `p` up to the broker's high
    /// watermark has been processed (or was covered by the committed
    /// checkpoint).
    fn read_to_end(&self, p: i32) -> bool {
        let (consumer, topic) = (&*self.consumer, &self.settings.topic);
        let timeout = Duration::from_secs(5);
        let wm = match &self.watermarks {
            Some(c) => c.fetch_watermarks(topic, p, timeout),
            None => consumer.fetch_watermarks(topic, p, timeout),
        };
        let Ok((low, high)) = wm else { return false };
        if let Some(next) = self.proc.next_offset(p) {
            return next >= high;
        }
        low >= high
            || kafka::committed_checkpoint(consumer, topic, p).ok().flatten().is_some_and(|cp| cp.offset >= high)
    }

    /// Seeks each assigned partition that has processed messages to the one
    /// after its last, after a resume. librdkafka resumes a paused partition
    /// from its "application position", and its batch API sets that
    /// position from every item it hands out, errors included (to the
    /// error's offset plus one; end-of-partition events, which did the same,
    /// are switched off). Had one come in before the pause, the resume would
    /// skip a message: `clickhouse_outage_holds_offsets_and_memory_then_catches_up`
    /// lost exactly one per partition that way. Our own position is exact,
    /// so we state it.
    fn reposition(&self) {
        for &p in &self.parts.assigned {
            if let Some(next) = self.proc.next_offset(p) {
                if let Err(e) =
                    self.consumer.seek(&self.settings.topic, p, Offset::Offset(next), Duration::from_secs(10))
                {
                    tracing::warn!(partition = p, "seek to {next} after resuming: {e}");
                }
            }
        }
    }

    /// Sets up partition `p` on its first message. Returns whether `offset`
    /// may be processed now (false: we sought back to the committed offset,
    /// or the committed offset could not be read yet and the message will
    /// come again).
    fn init_partition(&mut self, consumer: &PipelineConsumer, p: i32, offset: i64) -> bool {
        let topic = &self.settings.topic;
        if let Some(cp) = self.parts.sought.remove(&p) {
            if let Some(c) = cp {
                if offset > c.resume_offset {
                    tracing::warn!(
                        partition = p,
                        "offsets {}..{offset} are no longer in the topic (retention?)",
                        c.resume_offset
                    );
                }
            }
            tracing::info!(partition = p, offset, checkpoint = ?cp, "partition started");
            self.proc.init_partition(p, cp);
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
            if c.max_ts_at_resume.is_none() && c.closed_max_ts.is_none() && c.offset > 0 {
                tracing::warn!(
                    partition = p,
                    "committed offset {} carries no adstream checkpoint; starting fresh from it",
                    c.offset
                );
            }
            // Longer windows still open resume before the committed offset.
            if offset > c.resume_offset {
                if let Err(e) = consumer.seek(topic, p, Offset::Offset(c.resume_offset), Duration::from_secs(10)) {
                    tracing::warn!(partition = p, "seek to resume offset {}: {e}", c.resume_offset);
                } else {
                    self.parts.sought.insert(p, cp);
                    return false;
                }
            }
        }
        tracing::info!(partition = p, offset, checkpoint = ?cp, "partition started");
        self.proc.init_partition(p, cp);
        true
    }
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
