//! The consume loop (a blocking thread): polls Kafka, feeds the
//! [`Processor`], cuts a [`Batch`] every `--flush-interval` and hands it to
//! the writer through a bounded channel. It is a struct with named states
//! ([`Flow`]): when the writer falls behind (channel full) it holds the
//! batch and pauses the assigned partitions until there is room again,
//! which is the backpressure. It also fires the windows of idle partitions
//! and, with `--drain`, ends at the end of the topic.
//!
//! # Where a partition starts, and when it must not
//! A partition's replay is exact when it starts at its checkpoint's resume
//! offset (the commit metadata, see `engine::window`) or at offset 0 (the
//! whole partition, from a fresh state, decides as the first pass did).
//! Anywhere else it would rebuild windows from part of their messages and,
//! versions being offsets, replace exact rows downstream with smaller
//! ones. That happens when the group's offsets were reset
//! (`kafka-consumer-groups --reset-offsets` drops the metadata), expired,
//! committed without an adstream checkpoint (another tool, an older
//! format), or when retention deleted the resume point. Then, if
//! `ad_window_parts` holds rows of the partition, the run stops with one
//! line naming the cause and the fix ([`ReplayProbe`]); with no rows there
//! is nothing to overwrite and the partition starts where it is. A seek
//! that fails is an error too, never a warning: reading on from the wrong
//! place is exactly this failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use tokio::sync::mpsc;

use crate::engine::processor::SeedRow;
use crate::engine::window::{Checkpoint, Totals};
use crate::engine::{Batch, Processor};
use crate::io::kafka::fetch::{self, set_paused, Fetched};
use crate::io::kafka::queue::{MessageBatch, MessageQueue};
use crate::io::kafka::{self, Committed, PipelineConsumer, RebalanceEvent, WatermarkClient};
use crate::obs::{PartitionGauges, Stats};
use crate::shutdown::Shutdown;

/// Most messages taken from Kafka per batch. The clock is read once per
/// batch (everything timed in the loop is 100 ms or coarser; a full batch
/// takes well under a millisecond to process).
const BATCH_MESSAGES: usize = 1024;

/// Asks ClickHouse whether a partition already has rows downstream (see
/// the module docs). `None` for the console sink: nothing to overwrite.
pub struct ReplayProbe {
    pub client: clickhouse::Client,
    pub database: String,
    pub handle: tokio::runtime::Handle,
    /// A query in flight is abandoned at shutdown (the loop must see it).
    pub shutdown: Shutdown,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct SeedRowOwned {
    campaign_id: String,
    ad_format: String,
    country: String,
    device: String,
    start_ms: i64,
    impressions: u64,
    clicks: u64,
    revenue: i64,
    version: u64,
    is_final: bool,
}

impl ReplayProbe {
    /// The rows of rollup `source` of `topic`/`p` with windows starting in
    /// `[lo_us, hi_us)`, as merged (FINAL).
    fn seed_rows(
        &self,
        topic: &str,
        p: i32,
        source: &str,
        lo_us: i64,
        hi_us: i64,
    ) -> anyhow::Result<Vec<SeedRowOwned>> {
        let q = self
            .client
            .query(
                "SELECT campaign_id, ad_format, country, device, toInt64(toUnixTimestamp64Milli(window_start)) AS start_ms, \
                 impressions, clicks, revenue, version, is_final FROM ad_window_parts FINAL \
                 WHERE rollup_name = ? AND topic = ? AND partition = ? \
                 AND toInt64(toUnixTimestamp64Milli(window_start)) >= ? AND toInt64(toUnixTimestamp64Milli(window_start)) < ?",
            )
            .bind(source)
            .bind(topic)
            .bind(p)
            .bind(lo_us.div_euclid(1000))
            .bind(hi_us.div_euclid(1000));
        self.block(q.fetch_all::<SeedRowOwned>())
    }

    /// Runs a query from the blocking consume loop, abandoning it at
    /// shutdown.
    fn block<T>(&self, f: impl std::future::Future<Output = clickhouse::error::Result<T>>) -> anyhow::Result<T> {
        self.handle.block_on(async {
            tokio::select! {
                r = f => Ok(r?),
                () = self.shutdown.triggered() => bail!("shutting down"),
            }
        })
    }

    /// Rows of `topic`/`p` in `ad_window_parts` (raw, unmerged: only zero
    /// matters).
    fn rows(&self, topic: &str, p: i32) -> anyhow::Result<u64> {
        let q = self
            .client
            .query("SELECT count() FROM ad_window_parts WHERE topic = ? AND partition = ?")
            .bind(topic)
            .bind(p);
        self.block(q.fetch_one::<u64>())
    }
}

/// What the loop needs to know, fixed for its lifetime.
pub struct LoopSettings {
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
    sought: HashMap<i32, Checkpoint>,
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

pub struct ConsumeLoop {
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
    probe: Option<ReplayProbe>,
    /// An error that stops the loop after the current message.
    fatal: Option<anyhow::Error>,
}

/// What a [`ConsumeLoop`] is built from.
pub struct ConsumeLoopParts {
    pub processor: Processor,
    pub consumer: Arc<PipelineConsumer>,
    /// For `--drain`'s end-of-topic check (see [`WatermarkClient`]).
    pub watermarks: Option<WatermarkClient>,
    pub settings: LoopSettings,
    pub shutdown: Shutdown,
    /// Set once the self-feed (if any) is done: `--drain` waits for it.
    pub feed_done: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// To the writer (bounded: a full channel is backpressure).
    pub batches: mpsc::Sender<Batch>,
    /// `None` with the console sink.
    pub probe: Option<ReplayProbe>,
}

impl ConsumeLoop {
    pub fn new(parts: ConsumeLoopParts) -> Self {
        let ConsumeLoopParts {
            processor: proc,
            consumer,
            watermarks,
            settings,
            shutdown,
            feed_done,
            stats,
            batches: tx,
            probe,
        } = parts;
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
            probe,
            fatal: None,
        }
    }

    /// Runs until shutdown or (with `--drain`) the end of the topic, then
    /// writes what is open and hands over the final batch.
    pub fn run(mut self) -> anyhow::Result<()> {
        let consumer = self.consumer.clone();
        // Messages come in batches from a queue the assigned partitions are
        // forwarded to (see `io::kafka::queue`); the consumer's own poll
        // serves rebalances, commit results and client errors once per batch.
        let queue = fetch::message_queue(&consumer)?;
        let mut msgs = MessageBatch::with_capacity(BATCH_MESSAGES);
        let exit = loop {
            if let Some(exit) = self.pass(&consumer, &queue, &mut msgs)? {
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
        self.proc.set_clock(crate::clock::now());
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
    fn pass(
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
        let polled = fetch::poll(consumer, consumer_wait);
        self.rebalance(consumer);
        let n = queue.consume(msgs, queue_wait);
        self.quiet = n == 0 && polled.is_empty();
        // The clocks, read once per pass and handed to the engine, which
        // reads none itself.
        let clock = crate::clock::now();
        let now = clock.instant;
        self.proc.set_clock(clock);
        if let Some(f) = polled.fetched() {
            self.process_fetched(consumer, now, f);
        }
        for m in msgs.iter() {
            if let Some(f) = fetch::fetched(&m) {
                self.process_fetched(consumer, now, f);
            }
        }
        self.parts.skip.clear();
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
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
        for ev in fetch::rebalances(consumer) {
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

    /// A fetched record into the processor (its partition set up on its
    /// first one); a fetch error into Kafka's health.
    fn process_fetched(&mut self, consumer: &PipelineConsumer, now: Instant, fetched: Fetched<'_>) {
        match fetched {
            Fetched::Record { partition: p, offset, time_us, key, payload } => {
                if self.fatal.is_some() || self.parts.skip.contains(&p) {
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
            Fetched::Error(e) => self.stats.health.kafka.failed(&format!("consumer: {e}")),
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
        let wm = fetch::fetch_watermarks(self.watermarks.as_ref(), consumer, topic, p, timeout);
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
    fn reposition(&mut self) {
        for &p in &self.parts.assigned {
            if let Some(next) = self.proc.next_offset(p) {
                if let Err(e) = fetch::seek(&self.consumer, &self.settings.topic, p, next) {
                    self.fatal.get_or_insert(seek_failed(&self.settings.topic, p, next, &e));
                }
            }
        }
    }

    /// Sets up partition `p` on its first message. Returns whether `offset`
    /// may be processed now (false: we sought back to the committed offset,
    /// or the committed offset could not be read yet and the message will
    /// come again, or the partition cannot start here: `self.fatal`).
    fn init_partition(&mut self, consumer: &PipelineConsumer, p: i32, offset: i64) -> bool {
        let topic = self.settings.topic.clone();
        let sought = self.parts.sought.remove(&p);
        let committed = match sought {
            Some(c) => Committed::Checkpoint(c),
            None => match kafka::committed(consumer, &topic, p) {
                Ok(c) => c,
                Err(e) => {
                    // Without the checkpoint a replay could overwrite final
                    // rows with partial ones: do not guess, read it again.
                    tracing::warn!(partition = p, "reading committed offset: {e}; retrying");
                    self.seek(consumer, p, offset);
                    return false;
                }
            },
        };
        // Longer windows still open resume before the committed offset:
        // read on from the commit with them seeded from downstream, or
        // else replay them from their start.
        if let (None, Committed::Checkpoint(c)) = (sought, committed) {
            if offset > c.resume_offset && offset == c.offset && self.start_seeded(p, c) {
                return true;
            }
            if offset > c.resume_offset {
                if self.seek(consumer, p, c.resume_offset) {
                    self.parts.sought.insert(p, c);
                }
                return false;
            }
        }
        const GONE: &str = "raise the topic's retention.ms (and the broker's offsets.retention.minutes) above \
                             adstream's longest stop; to go on, start over in a new --database";
        let cause = match committed {
            _ if offset == 0 => None,
            Committed::Checkpoint(c) if offset <= c.resume_offset => None,
            Committed::Checkpoint(c) => Some((
                format!(
                    "offsets {}..{offset} were deleted from the topic (retention) before adstream read them",
                    if c.offset < offset { c.offset } else { c.resume_offset }
                ),
                GONE,
            )),
            Committed::Foreign(o) => Some((
                format!(
                    "its committed offset {o} carries no adstream checkpoint (reset with kafka-consumer-groups \
                     --reset-offsets, or committed by another tool or an older adstream)"
                ),
                "commit the offsets adstream committed last back with their metadata, or reset the group \
                 --to-earliest while offset 0 is still in the topic, or start over in a new --database",
            )),
            Committed::Never => Some((
                format!(
                    "the group has no committed offset for it (expired, or a new group) and the topic starts at \
                     offset {offset}, not 0"
                ),
                GONE,
            )),
        };
        if let (Some((cause, fix)), Some(probe)) = (&cause, &self.probe) {
            match probe.rows(&topic, p) {
                Ok(0) => {}
                Ok(n) => {
                    self.fatal.get_or_insert(anyhow!(
                        "partition {p} of {topic:?}: {cause}; {}.ad_window_parts holds {n} rows of it that a replay \
                         from offset {offset} would overwrite with sums of fewer messages. Fix: {fix}",
                        probe.database
                    ));
                    return false;
                }
                Err(e) => {
                    tracing::warn!(partition = p, "asking ClickHouse for the partition's rows: {e:#}; retrying");
                    if let Committed::Checkpoint(c) = committed {
                        self.parts.sought.insert(p, c);
                    }
                    self.seek(consumer, p, offset);
                    return false;
                }
            }
        }
        if let Some((cause, _)) = cause {
            tracing::warn!(partition = p, "{cause}; nothing of it is downstream, so it starts at offset {offset}");
        }
        let cp = match committed {
            Committed::Never => None,
            Committed::Foreign(o) => Some(Checkpoint::at(o, None, None)),
            Committed::Checkpoint(c) => Some(c),
        };
        tracing::info!(partition = p, offset, checkpoint = ?cp, "partition started");
        self.proc.init_partition(p, cp);
        true
    }

    /// Starts `p` at its commit offset with its open longer windows seeded
    /// from its final base rows in ClickHouse (see
    /// `engine::window::PartitionWindows::restore_seeded`), so a restart
    /// re-reads the open base windows only, not the open hour. False when
    /// that cannot be done exactly (console sink, no base rollup with every
    /// dimension of the longer ones, an older checkpoint, ClickHouse not
    /// answering): the caller replays from the resume offset instead.
    fn start_seeded(&mut self, p: i32, c: Checkpoint) -> bool {
        let (Some(probe), Some(source), Some(_), Some(closed)) =
            (&self.probe, self.proc.seed_source(), c.base_at, c.closed_max_ts)
        else {
            return false;
        };
        let cfg = self.proc.config();
        let longest = self.proc.rollups().iter().map(|r| r.size_us).max().unwrap_or(cfg.size_us);
        let lo = closed.saturating_sub(cfg.allowed_lateness_us).saturating_sub(longest);
        let rows = match probe.seed_rows(&self.settings.topic, p, &source, lo, closed) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(
                    partition = p,
                    "reading its base rows back: {e:#}; replaying its longer windows instead"
                );
                return false;
            }
        };
        let closed_rows = rows.iter().filter(|r| cfg.closed_at(r.start_ms.saturating_mul(1000), closed));
        if closed_rows.clone().any(|r| !r.is_final) {
            tracing::warn!(partition = p, "a closed base window's row is not final downstream; replaying instead");
            return false;
        }
        let seeds: Vec<SeedRow<'_>> = closed_rows
            .map(|r| SeedRow {
                base_start_us: r.start_ms.saturating_mul(1000),
                campaign: &r.campaign_id,
                ad_format: &r.ad_format,
                country: &r.country,
                device: &r.device,
                totals: Totals { impressions: r.impressions, clicks: r.clicks, revenue_micros: r.revenue },
                counted_through: r.version.saturating_sub(1) / 2,
            })
            .collect();
        let n = seeds.len();
        if !self.proc.init_partition_seeded(p, c, &seeds) {
            return false;
        }
        tracing::info!(partition = p, offset = c.offset, checkpoint = ?c, seeded_rows = n, "partition started");
        true
    }

    /// Seeks `p` to `offset`; a failure stops the loop (`self.fatal`):
    /// reading on from where the consumer happens to be is how a replay
    /// goes wrong. Returns whether it succeeded.
    fn seek(&mut self, consumer: &PipelineConsumer, p: i32, offset: i64) -> bool {
        match fetch::seek(consumer, &self.settings.topic, p, offset) {
            Ok(()) => true,
            Err(e) => {
                self.fatal.get_or_insert(seek_failed(&self.settings.topic, p, offset, &e));
                false
            }
        }
    }
}

/// The error of a failed seek: the run stops, nothing of the partition
/// past its last commit is committed, and a restart starts it again.
fn seek_failed(topic: &str, p: i32, offset: i64, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "partition {p} of {topic:?}: seek to offset {offset} failed: {e}; stopping rather than reading on from the \
         wrong place (nothing past the last commit was committed). Fix: restart adstream; if it recurs, check the \
         brokers (--brokers / ADSTREAM_BROKERS)"
    )
}
