//! `adstream learn`'s step around the pure [`Learner`] ([`LearnLoop::poll`],
//! driven by `cmd::learn`, which holds the lease, restores and stops).
//! Every `--poll-interval` it
//!
//! 1. reads each source partition's progress on the segment rollup
//!    ([`LearnStore::progress`]) and computes the **frontier**: the newest
//!    window closed on every partition that is not idle (a partition that
//!    wrote nothing for `--idle-after` is left out, as Flink's
//!    `withIdleness` leaves an idle split out of the watermark; if every
//!    partition is idle, the newest window any of them closed), and the
//!    **settled** line: the newest window closed on *every* partition.
//!    "Every" includes each partition `run` registered in
//!    `ad_source_partitions` (all of its topic's, before it writes a row)
//!    that has written nothing yet: it is idle, and closed nothing, so a
//!    partition whose first rows come after the others' holds the settled
//!    line back and its rows are learned as differences;
//! 2. reads the windows from the oldest one still open to revision up to
//!    the frontier, learns the new ones in order (progressive validation
//!    first) and the differences of the revised ones;
//! 3. writes the new windows' quality and predictions, then the snapshot
//!    of the whole learner (model, counters, ledger), to ClickHouse: the
//!    snapshot is the commit point, so a learner killed at any moment
//!    restarts from the last one and relearns exactly what came after;
//! 4. publishes the predictions of every segment seen lately to Redis (one
//!    MULTI/EXEC, see [`crate::io::redis`]) and to `GET /ctr`.
//!
//! One learner per model writes ([`crate::io::redis::lease`]): it holds a
//! lease in Redis, renewed at every poll and right before every snapshot;
//! without it, it waits as a hot standby, and when it gets it, it restores
//! the newest snapshot first. A learner that finds the lease gone or
//! someone else's stops writing at once and goes back to standby.
//!
//! ClickHouse errors: a refusal (schema, credentials) ends the process with
//! the one-line explanation; an outage is retried at the next poll, the
//! model unchanged (nothing is learned that is not then saved). Redis
//! errors never end the process: a failed publish is counted and the next
//! one publishes everything again; but the lease lives in Redis, so while
//! it is down learning pauses (`/healthz` says Redis is down and
//! `standby`), and resumes from the newest snapshot when it is back.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::LearnConfig;
use crate::engine::{AdFormat, Country, Device};
use crate::io::clickhouse::learn_store::{LearnStore, ModelRow, PredictionRow, QualityRow, SegmentRow, SettledRow};
use crate::io::redis::lease::Lease;
use crate::io::redis::served::Served;
use crate::io::redis::{Publication, Publisher};
use crate::learn::{Example, Learned, Learner, LetGo, Segment, Window};
use crate::obs::learn::LearnStats;

/// Base window of the segment rollup (`ad_metrics_segments_10s`), ms.
const WINDOW_MS: i64 = 10_000;
/// Most windows read (and learned) per poll, so a learner catching up on
/// days of history does it in steps, saving and publishing as it goes.
const MAX_WINDOWS_PER_POLL: i64 = 360;

/// Where learning may go, from the partitions' progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Newest window learnable (closed on every non-idle partition), ms.
    pub frontier_ms: Option<i64>,
    /// Newest window closed on every partition, ms.
    pub settled_ms: Option<i64>,
    /// Newest window closed on any partition, ms.
    pub newest_closed_ms: Option<i64>,
}

/// The frontier rule (see the module docs), over `(closed_ms, active)`
/// per partition; `closed_ms` is `None` for a partition that closed
/// nothing yet.
pub fn progress(parts: &[(Option<i64>, bool)]) -> Progress {
    let newest_closed_ms = parts.iter().filter_map(|p| p.0).max();
    // `None` orders below every `Some`, so a partition that closed nothing
    // makes the minimum `None`: it holds everything back.
    let oldest = |it: &mut dyn Iterator<Item = Option<i64>>| it.min().flatten();
    let any_active = parts.iter().any(|p| p.1);
    let frontier_ms =
        if any_active { oldest(&mut parts.iter().filter(|p| p.1).map(|p| p.0)) } else { newest_closed_ms };
    let settled_ms = oldest(&mut parts.iter().map(|p| p.0));
    Progress { frontier_ms, settled_ms, newest_closed_ms }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Rows of one query, grouped into windows (rows are ordered by window),
/// each with the number of its rows whose format, country or device this
/// build does not know: skipped (`run` never writes one).
fn group(rows: Vec<SegmentRow>) -> Vec<(Window, u64)> {
    let mut out: Vec<(Window, u64)> = Vec::new();
    for r in rows {
        let (start_us, end_us) = (r.start_ms * 1000, r.end_ms * 1000);
        if out.last().is_none_or(|(w, _)| w.start_us != start_us) {
            out.push((Window { start_us, end_us, examples: Vec::new() }, 0));
        }
        let Some((w, unknown)) = out.last_mut() else { continue };
        let (Some(f), Some(c), Some(d)) =
            (AdFormat::parse(&r.ad_format), Country::parse(&r.country), Device::parse(&r.device))
        else {
            *unknown += 1;
            continue;
        };
        w.examples.push(Example {
            segment: Segment { campaign_id: r.campaign_id, ad_format: f, country: c, device: d },
            impressions: r.impressions,
            clicks: r.clicks,
        });
    }
    out
}

/// What one poll did (counted into the stats only once it is saved).
#[derive(Debug, Default)]
pub struct LearnStep {
    pub learned: Vec<Learned>,
    pub revised: u64,
    /// Segments of revised windows whose counts went down (not learned).
    pub shrunk: u64,
    /// Rows of new windows with an unknown format, country or device.
    pub unknown: u64,
    /// Windows let go while a partition had not closed them.
    pub abandoned: u64,
    /// Every window let go (closed everywhere, or past the horizon).
    let_go: Vec<LetGo>,
}

/// What `run` writes cannot be learned (a one-line error; the process
/// ends).
#[derive(Debug)]
pub struct Misconfigured(String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// The lease is not (or no longer) this learner's: stop writing.
#[derive(Debug)]
pub struct LostLease(String);

impl std::fmt::Display for LostLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not the model's writer any more: {}", self.0)
    }
}

impl std::error::Error for LostLease {}

/// The learner's state between polls: what `cmd::learn`'s loop drives.
pub struct LearnLoop {
    pub cfg: LearnConfig,
    pub store: LearnStore,
    publisher: Publisher,
    pub lease: Lease,
    /// The fencing token of the lease while this learner holds it.
    pub token: Option<u64>,
    pub learner: Learner,
    pub stats: Arc<LearnStats>,
    /// Segments seen, with the start of the newest window they were in (µs).
    pub seen: HashMap<Segment, i64>,
    /// A publish is due (after a change, or after a failed one).
    pub publish_due: bool,
    /// The "no segment windows yet" line was logged.
    told_empty: bool,
    /// Every source partition that ever wrote the segment rollup or was
    /// registered by `run` ([`LearnStore::registered_partitions`]), with
    /// the start of its newest closed window (ms; `None`: nothing closed
    /// yet): one silent for longer than the revision horizon is no longer
    /// in [`LearnStore::progress`]'s answer, but still holds the settled
    /// line back (its buffered events may come). Bounded by the partitions
    /// of the source topics.
    known: HashMap<(String, i32), Option<i64>>,
    /// Snapshots saved since old ones were last deleted.
    saves_since_prune: u64,
    /// When the abandoned totals were last read.
    abandoned_read: Option<Instant>,
}

impl LearnLoop {
    /// The loop of a learner restored (or new), its stats synced, the
    /// segments of its last windows reseeded and every partition that
    /// ever wrote or was registered known.
    pub async fn start(
        cfg: LearnConfig,
        store: LearnStore,
        publisher: Publisher,
        lease: Lease,
        learner: Learner,
        stats: Arc<LearnStats>,
    ) -> anyhow::Result<Self> {
        let mut lp = LearnLoop {
            cfg,
            store,
            publisher,
            lease,
            token: None,
            learner,
            stats,
            seen: HashMap::new(),
            publish_due: false,
            told_empty: false,
            known: HashMap::new(),
            abandoned_read: None,
            saves_since_prune: 0,
        };
        lp.sync_stats();
        lp.reseed_seen().await?;
        // Every partition that ever wrote, once (one scan of the rollup's
        // progress): one silent since before this start still holds back.
        for p in lp.store.progress(0, 0).await? {
            lp.known.insert((p.topic, p.partition), (p.any_final == 1).then_some(p.closed_ms));
        }
        for (topic, partition) in lp.store.registered_partitions().await? {
            lp.known.entry((topic, partition)).or_insert(None);
        }
        lp.publish_due = lp.learner.learned_through().is_some();
        Ok(lp)
    }

    /// Renews the lease: `Err(LostLease)` unless it is still ours, with
    /// the same token (a new token means it lapsed in between, and someone
    /// else may have written).
    async fn renew(&mut self) -> anyhow::Result<()> {
        match self.lease.acquire().await {
            Ok(Some(t)) if Some(t) == self.token => {
                self.stats.redis.ok();
                Ok(())
            }
            Ok(Some(t)) => Err(LostLease(format!("the lease lapsed and was taken again (token {t})")).into()),
            Ok(None) => Err(LostLease("another learner holds the lease".into()).into()),
            Err(e) => {
                self.stats.redis.failed(&e.to_string().replace('\n', " "));
                Err(LostLease(format!("cannot renew the lease: Redis: {e}")).into())
            }
        }
    }

    pub async fn poll(&mut self) -> anyhow::Result<LearnStep> {
        self.renew().await?;
        let horizon_ms = i64::try_from(self.cfg.revise_horizon.as_millis()).unwrap_or(i64::MAX);
        let since_ms = self.learner.learned_through().map_or(0, |t| (t / 1000).saturating_sub(horizon_ms));
        let idle_ms = u64::try_from(self.cfg.idle_after.as_millis()).unwrap_or(u64::MAX);
        let parts = self.store.progress(since_ms, idle_ms).await?;
        // Read after the progress: `run` registers a topic's partitions
        // before it writes any row, so every partition with a row above
        // is registered here, and one that wrote nothing yet holds the
        // settled line back (closed nothing).
        for (topic, partition) in self.store.registered_partitions().await? {
            self.known.entry((topic, partition)).or_insert(None);
        }
        let mut listed = Vec::with_capacity(self.known.len().max(parts.len()));
        for p in &parts {
            let closed = (p.any_final == 1).then_some(p.closed_ms);
            let k = self.known.entry((p.topic.clone(), p.partition)).or_insert(closed);
            *k = (*k).max(closed);
            listed.push(((p.topic.as_str(), p.partition), (*k, p.active == 1)));
        }
        // The silent ones: idle, with what they closed before.
        let mut all: Vec<(Option<i64>, bool)> = listed.iter().map(|(_, v)| *v).collect();
        for ((topic, partition), closed) in &self.known {
            if !listed.iter().any(|((t, p), _)| t == topic && p == partition) {
                all.push((*closed, false));
            }
        }
        let p = progress(&all);
        if let Some(n) = p.newest_closed_ms {
            self.stats.newest_closed_ms.store(n, Relaxed);
        }
        let Some(frontier) = p.frontier_ms else {
            if self.learner.learned_through().is_none() {
                // `run --window 5s` writes its segments at 5 s (and 1 h):
                // the learner's 10 s windows never come. Say so.
                let rollups = self.store.segment_rollups().await?;
                let want = crate::io::clickhouse::learn_store::SEGMENT_ROLLUP;
                if !rollups.is_empty() && !rollups.iter().any(|r| r == want) {
                    return Err(Misconfigured(format!(
                        "database {} has the segment rollups {} but not {want}, the 10 s windows the learner learns \
                         from: run `adstream run` with --rollup {want} (with --window 5s, 10s is a multiple of it) \
                         beside its other rollups",
                        self.cfg.clickhouse.database,
                        rollups.join(" ")
                    ))
                    .into());
                }
            }
            if self.learner.learned_through().is_none() && !self.told_empty {
                self.told_empty = true;
                tracing::info!(
                    rollup = crate::io::clickhouse::learn_store::SEGMENT_ROLLUP,
                    database = %self.cfg.clickhouse.database,
                    "no closed segment windows yet: waiting for `adstream run` to write this rollup (one of its \
                     defaults; with --rollup, include campaign_id,ad_format,country,device:10s)"
                );
            }
            return Ok(LearnStep::default());
        };
        self.stats.frontier_ms.store(frontier, Relaxed);
        // The first window not learned yet: the oldest one after the newest
        // learned one (on a new model, the oldest there is), however far
        // after it; a gap of any length (a quiet night) is skipped.
        let through_ms = self.learner.learned_through().map(|t| t / 1000);
        let next_new = self.store.next_window(through_ms, frontier).await?;
        // Windows open to revision: after the settled line, through the
        // newest learned one (in the ledger, or passed while empty).
        let oldest_open = match (self.learner.settled_through(), through_ms) {
            (Some(s), Some(t)) => Some(s.div_euclid(1000) + 1).filter(|lo| *lo <= t),
            _ => self.learner.open_windows().next().map(|w| w / 1000),
        };
        let Some(lo) = [next_new, oldest_open].into_iter().flatten().min() else {
            // Nothing new and nothing open to revision: read through the
            // frontier.
            self.stats.read_through_ms.store(frontier, Relaxed);
            return Ok(LearnStep::default());
        };
        // A bounded step of new windows per poll (a new model on a long
        // history catches up step by step, saving and publishing as it goes).
        let hi = next_new.map_or(frontier, |n| frontier.min(n.saturating_add((MAX_WINDOWS_PER_POLL - 1) * WINDOW_MS)));
        if hi < lo {
            return Ok(LearnStep::default());
        }
        let rows = self.store.windows(lo, hi).await?;
        let mut step = LearnStep::default();
        let through = self.learner.learned_through();
        for (w, unknown) in group(rows) {
            if through.is_some_and(|t| w.start_us <= t) {
                if let Some(r) = self.learner.revise(&w) {
                    if r.examples > 0 {
                        step.revised += 1;
                        tracing::info!(
                            window_start_ms = w.start_us / 1000,
                            impressions = r.impressions,
                            clicks = r.clicks,
                            "learned window changed since it was learned: its difference learned"
                        );
                    }
                    step.shrunk += r.shrunk;
                }
                continue;
            }
            step.unknown += unknown;
            if w.examples.is_empty() {
                continue; // nothing known in it: not a window to learn
            }
            for e in &w.examples {
                self.seen.insert(e.segment.clone(), w.start_us);
            }
            step.learned.push(self.learner.learn_window(&w)?);
        }
        let settled = self.learner.settle(
            p.settled_ms.map(|s| s * 1000),
            p.frontier_ms.map_or(i64::MIN, |f| f.saturating_sub(horizon_ms).saturating_mul(1000)),
        );
        if settled.abandoned > 0 {
            tracing::warn!(
                windows = settled.abandoned,
                "learned windows older than --revise-horizon let go while a partition had not closed them: \
                 a later change to them will not be learned"
            );
        }
        step.abandoned = settled.abandoned;
        step.let_go = settled.windows;
        if !step.learned.is_empty() || step.revised > 0 || !step.let_go.is_empty() {
            self.save(&step).await?;
        }
        self.stats.read_through_ms.store(hi, Relaxed);
        Ok(step)
    }

    /// Quality and predictions of the new windows, then the snapshot (the
    /// commit point).
    async fn save(&mut self, step: &LearnStep) -> anyhow::Result<()> {
        let model = self.cfg.model.clone();
        let mut quality = Vec::with_capacity(step.learned.len());
        let mut predictions = Vec::new();
        for l in &step.learned {
            let q = &l.quality;
            quality.push(QualityRow {
                model: model.clone(),
                window_start: l.start_us / 1000,
                window_end: l.end_us / 1000,
                model_version: l.version,
                examples: q.examples,
                impressions: q.impressions,
                clicks: q.clicks,
                log_loss: q.log_loss,
                normalized_entropy: q.normalized_entropy,
                calibration: q.calibration,
                auc: q.auc,
            });
            for p in &l.predictions {
                predictions.push(PredictionRow {
                    model: model.clone(),
                    window_start: l.start_us / 1000,
                    window_end: l.end_us / 1000,
                    campaign_id: p.segment.campaign_id.clone(),
                    ad_format: p.segment.ad_format.as_str().to_string(),
                    country: p.segment.country.as_str().to_string(),
                    device: p.segment.device.as_str().to_string(),
                    model_version: l.version,
                    predicted_ctr: p.p * 100.0,
                    impressions: p.impressions,
                    clicks: p.clicks,
                    observed_ctr: (p.impressions > 0).then(|| p.clicks as f64 / p.impressions as f64 * 100.0),
                });
            }
        }
        let version = self.learner.version();
        let settled: Vec<SettledRow> = step
            .let_go
            .iter()
            .map(|w| SettledRow {
                model: model.clone(),
                window_start: w.start_us / 1000,
                window_end: w.end_us / 1000,
                reason: if w.closed { "closed" } else { "revise_horizon" }.to_string(),
                impressions: w.impressions,
                clicks: w.clicks,
                model_version: version,
            })
            .collect();
        // All at once; the snapshot, the commit point, only after them (a
        // learner killed in between rewrites the same rows).
        tokio::try_join!(
            self.store.write_quality(&quality),
            self.store.write_predictions(&predictions),
            self.store.write_settled(&settled)
        )?;
        let c = self.learner.model().counters();
        let row = ModelRow {
            model,
            version: self.learner.version(),
            learned_through: self.learner.learned_through().map_or(0, |t| t / 1000),
            windows: self.learner.windows(),
            revisions: self.learner.revisions(),
            examples: c.examples,
            impressions: c.impressions,
            clicks: c.clicks,
            snapshot: self.learner.to_bytes(),
        };
        // Only while the lease is ours: renewed right before the commit
        // point, for a whole --lease-ttl.
        self.renew().await?;
        self.store.save_snapshot(&row).await?;
        self.stats.snapshots.fetch_add(1, Relaxed);
        // Retention: the newest --keep-snapshots versions (restore reads
        // the newest); pruned every half of that many saves.
        self.saves_since_prune += 1;
        let keep = self.cfg.keep_snapshots;
        if self.saves_since_prune >= (keep / 2).max(1) {
            self.saves_since_prune = 0;
            if let Err(e) = self.store.prune_snapshots(row.version.saturating_sub(keep)).await {
                tracing::warn!(error = %format!("{e:#}"), "pruning old snapshots failed (retried later)");
            }
        }
        self.publish_due = true;
        self.sync_stats();
        if let Some(l) = step.learned.last() {
            if let Some(ll) = l.quality.log_loss {
                self.stats.last_log_loss.store(ll.to_bits(), Relaxed);
            }
        }
        Ok(())
    }

    pub fn sync_stats(&self) {
        let s = &self.stats;
        s.windows.store(self.learner.windows(), Relaxed);
        s.revisions.store(self.learner.revisions(), Relaxed);
        s.version.store(self.learner.version(), Relaxed);
        s.learned_through_ms.store(self.learner.learned_through().map_or(i64::MIN, |t| t / 1000), Relaxed);
        let c = self.learner.model().counters();
        s.impressions.store(c.impressions, Relaxed);
        s.clicks.store(c.clicks, Relaxed);
        s.examples.store(c.examples, Relaxed);
    }

    /// Predictions of every segment seen within `--serve-segments-seen`
    /// before the newest learned window, at the hour of the window after
    /// it, into the map of `/ctr`, then to Redis.
    pub async fn publish(&mut self) {
        let Some(through) = self.learner.learned_through() else { return };
        let keep_us = i64::try_from(self.cfg.serve_segments_seen.as_micros()).unwrap_or(i64::MAX);
        self.seen.retain(|_, last| *last >= through.saturating_sub(keep_us));
        let at = through + WINDOW_MS * 1000;
        let version = self.learner.version();
        let window_ms = through / 1000;
        let published_ms = now_ms();
        let mut segs: Vec<&Segment> = self.seen.keys().collect();
        segs.sort();
        let preds: Vec<(&str, &str, &str, &str, f64)> = segs
            .iter()
            .map(|s| {
                (
                    s.campaign_id.as_str(),
                    s.ad_format.as_str(),
                    s.country.as_str(),
                    s.device.as_str(),
                    self.learner.predict(s, at),
                )
            })
            .collect();
        for (c, f, co, d, p) in &preds {
            self.stats.served.insert((c, f, co, d), Served { ctr: *p, version, window_ms, published_ms });
        }
        self.stats.served.keep_version(version);
        let started = Instant::now();
        let r = self
            .publisher
            .publish(self.lease.owner(), &Publication { version, window_ms, published_ms, predictions: &preds })
            .await;
        match r {
            Ok(()) => {
                metrics::histogram!(crate::obs::learn::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
                self.stats.publishes.fetch_add(1, Relaxed);
                self.stats.redis.ok();
                self.publish_due = false;
            }
            Err(e) if e.to_string().contains(crate::io::redis::NOT_LEADER) => {
                // The next renewal finds out and stands by.
                self.stats.publish_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "publish refused: this learner is not the model's writer");
            }
            Err(e) => {
                self.stats.publish_failures.fetch_add(1, Relaxed);
                self.stats.redis.failed(&e.to_string().replace('\n', " "));
            }
        }
    }
}

impl LearnLoop {
    /// The totals of `ad_ctr_abandoned` into the stats, at most every 30 s
    /// (or when caught up with `--once`); a failure only leaves them stale.
    pub async fn read_abandoned(&mut self, caught_up: bool) {
        let due = self.abandoned_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
        if !(due || (self.cfg.once && caught_up)) {
            return;
        }
        self.abandoned_read = Some(Instant::now());
        if let Ok(Some(m)) = self.publisher.used_memory().await {
            self.stats.redis_used_memory.store(i64::try_from(m).unwrap_or(i64::MAX), Relaxed);
        }
        if let Ok(b) = self.store.model_table_bytes().await {
            self.stats.model_table_bytes.store(i64::try_from(b).unwrap_or(i64::MAX), Relaxed);
        }
        match self.store.abandoned().await {
            Ok((i, c)) => {
                self.stats.abandoned_impressions.store(i, Relaxed);
                self.stats.abandoned_clicks.store(c, Relaxed);
                if i != 0 || c != 0 {
                    tracing::warn!(
                        impressions = i,
                        clicks = c,
                        "segment rows the model never learned (written after their window was let go): see \
                         ad_ctr_abandoned"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "reading ad_ctr_abandoned failed"),
        }
    }

    /// After a restore: the segments of the last `--serve-segments-seen`
    /// before the newest learned window, so the first publish is whole.
    pub async fn reseed_seen(&mut self) -> anyhow::Result<()> {
        let Some(t) = self.learner.learned_through() else { return Ok(()) };
        let keep_ms = i64::try_from(self.cfg.serve_segments_seen.as_millis()).unwrap_or(i64::MAX);
        let rows = self.store.windows((t / 1000).saturating_sub(keep_ms).max(0), t / 1000).await?;
        // Windows in order: a segment ends at the newest one it was in.
        for (w, _) in group(rows) {
            for e in w.examples {
                self.seen.insert(e.segment, w.start_us);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_leaves_idle_partitions_out() {
        // All active: the slowest partition decides.
        let p = progress(&[(Some(30), true), (Some(10), true), (Some(20), true)]);
        assert_eq!((p.frontier_ms, p.settled_ms, p.newest_closed_ms), (Some(10), Some(10), Some(30)));
        // The slow one is idle: it no longer holds learning back, but
        // nothing is settled past it.
        let p = progress(&[(Some(30), true), (Some(10), false), (Some(20), true)]);
        assert_eq!((p.frontier_ms, p.settled_ms), (Some(20), Some(10)));
        // An active partition that closed nothing holds everything.
        let p = progress(&[(Some(30), true), (None, true)]);
        assert_eq!((p.frontier_ms, p.settled_ms), (None, None));
        // ...unless it is idle.
        let p = progress(&[(Some(30), true), (None, false)]);
        assert_eq!((p.frontier_ms, p.settled_ms), (Some(30), None));
        // Everything idle: the newest window any partition closed.
        let p = progress(&[(Some(30), false), (Some(10), false)]);
        assert_eq!((p.frontier_ms, p.settled_ms), (Some(30), Some(10)));
        assert_eq!(progress(&[]), Progress { frontier_ms: None, settled_ms: None, newest_closed_ms: None });
    }
}
