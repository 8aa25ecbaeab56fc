//! `adstream learn`: the learner's loop. It serves `/ctr`, `/metrics` and
//! `/healthz`, waits for the schema, restores the newest snapshot, then,
//! every `--poll-interval`, holds (or waits for) the model's lease and takes
//! one step of [`LearnLoop`] (frontier, learn, save, publish; see
//! [`crate::pipeline`]'s `learn` for the rules), going back to standby when
//! the lease is lost and to the newest snapshot after a failed step.

use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::config::LearnConfig;
use crate::io::backoff::{Backoff, SHUTDOWN_WRITE_GRACE};
use crate::io::clickhouse::learn_store::LearnStore;
use crate::io::clickhouse::retry;
use crate::io::redis::Publisher;
use crate::learn::Learner;
use crate::obs::learn::LearnStats;
use crate::pipeline::{LearnLoop, LostLease, Misconfigured};
use crate::shutdown::Shutdown;

/// Restores the learner from its newest snapshot, or starts a new one.
async fn restore(store: &LearnStore, cfg: &LearnConfig) -> anyhow::Result<Learner> {
    let Some(row) = store.latest_snapshot().await? else {
        tracing::info!(model = %cfg.model, "no snapshot of this model yet: learning from the first window");
        return Ok(Learner::new(cfg.params)?);
    };
    let l = Learner::from_bytes(&row.snapshot).map_err(|e| {
        anyhow::anyhow!(
            "the newest snapshot of model {:?} (version {}) in {}.ad_ctr_model is unreadable: {e}; \
             delete it (or start a new model with --model) to learn from scratch",
            cfg.model,
            row.version,
            cfg.clickhouse.database
        )
    })?;
    if l.model().params() != cfg.params {
        tracing::warn!(
            saved = ?l.model().params(),
            flags = ?cfg.params,
            "the saved model was learned with other FTRL parameters; it goes on with the saved ones \
             (start a new model with --model to use the new ones)"
        );
    }
    tracing::info!(
        model = %cfg.model,
        version = l.version(),
        learned_through_ms = l.learned_through().map(|t| t / 1000),
        windows = l.windows(),
        "model restored from its snapshot"
    );
    Ok(l)
}

/// Waits until the database has the learner's tables (it never creates
/// them, see [`LearnStore::new`]); `false` if stopped first. With `--once`,
/// a missing table is a one-line error.
async fn wait_for_schema(
    store: &LearnStore,
    cfg: &LearnConfig,
    stats: &LearnStats,
    stop: &Shutdown,
) -> anyhow::Result<bool> {
    let mut told = false;
    loop {
        match store.missing_tables().await {
            Ok(m) if m.is_empty() => return Ok(true),
            Ok(m) => {
                let line = format!(
                    "database {} lacks {}: run `adstream migrate --database {}` (with --cluster NAME on a cluster) \
                     or start `adstream run`, which applies the schema; learn never creates tables",
                    cfg.clickhouse.database,
                    m.join(", "),
                    cfg.clickhouse.database
                );
                if cfg.once {
                    anyhow::bail!(line);
                }
                stats.clickhouse.failed(&line);
                if !told {
                    told = true;
                    tracing::warn!("{line}; waiting");
                }
            }
            Err(e) if !e.is_retriable() || cfg.once => return Err(e.into()),
            Err(e) => stats.clickhouse.failed(&format!("{e:#}").replace('\n', " ")),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = stop.triggered() => return Ok(false),
        }
    }
}

pub async fn learn(config: LearnConfig, stop: Shutdown) -> anyhow::Result<ExitCode> {
    run_learner(config, stop).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_learner(cfg: LearnConfig, stop: Shutdown) -> anyhow::Result<()> {
    let client = crate::io::redis::client_with(cfg.redis_url.expose(), &cfg.redis_auth)?;
    let stats = Arc::new(LearnStats::default());
    if let Some(addr) = cfg.metrics_addr {
        crate::obs::learn::serve(addr, stats.clone(), cfg.unhealthy_after, cfg.max_lag).await?;
    }
    let store = LearnStore::new(&cfg.clickhouse, &cfg.model)?;
    if !wait_for_schema(&store, &cfg, &stats, &stop).await? {
        return Ok(());
    }
    stats.clickhouse.ok();
    let learner = restore(&store, &cfg).await?;
    let publisher = Publisher::new(client, &cfg.redis_prefix, cfg.redis_ttl, cfg.redis_timeout)?;
    let lease = publisher.lease(crate::io::redis::lease::owner_id(), cfg.lease_ttl);
    if let Err(e) = publisher.ping().await {
        // A misconfiguration (password, CA, TLS on a plaintext port) is
        // not an outage: fail now, naming the setting, rather than retry.
        let tls = cfg.redis_url.expose().trim_start().to_ascii_lowercase().starts_with("rediss:");
        if let (fix, true) = crate::io::redis::hint(&e.to_string(), tls) {
            anyhow::bail!(
                "Redis at {}: {}: {fix}",
                crate::config::secret::redact_url(cfg.redis_url.expose()),
                e.to_string().replace('\n', " ")
            );
        }
        stats.redis.failed(&e.to_string().replace('\n', " "));
    } else {
        stats.redis.ok();
    }
    let mut lp = LearnLoop::start(cfg, store, publisher, lease, learner, stats).await?;
    let mut needs_restore = false;
    // A ClickHouse call in flight at SIGTERM gets the writers' grace, then
    // is abandoned: what it learned was not saved, so the next start
    // relearns it from the newest snapshot (nothing learned twice).
    let mut grace = Backoff::default();
    let mut told_standby = false;
    loop {
        if lp.token.is_none() {
            match lp.lease.acquire().await {
                Ok(Some(t)) => {
                    lp.stats.redis.ok();
                    lp.token = Some(t);
                    lp.stats.lease_token.store(t, Relaxed);
                    lp.stats.leader.store(1, Relaxed);
                    tracing::info!(
                        token = t,
                        owner = lp.lease.owner(),
                        "this learner holds the model's lease: learning"
                    );
                    // Someone else may have learned since: from the newest
                    // snapshot.
                    needs_restore = true;
                    told_standby = false;
                }
                Ok(None) => {
                    lp.stats.redis.ok();
                    if lp.cfg.once {
                        anyhow::bail!(
                            "another learner holds the lease of model {:?} (Redis keys {}:*): --once learned nothing \
                             (stop it, or run --once after it stopped)",
                            lp.cfg.model,
                            lp.cfg.redis_prefix
                        );
                    }
                    if !told_standby {
                        told_standby = true;
                        tracing::info!("another learner holds the model's lease: standing by");
                    }
                }
                Err(e) => {
                    lp.stats.redis.failed(&e.to_string().replace('\n', " "));
                    if lp.cfg.once {
                        anyhow::bail!(
                            "Redis at {}: {} (the writer's lease lives there; set --redis-url / ADSTREAM_REDIS_URL)",
                            crate::config::secret::redact_url(lp.cfg.redis_url.expose()),
                            e.to_string().replace('\n', " ")
                        );
                    }
                }
            }
            if lp.token.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(lp.cfg.poll_interval) => {}
                    _ = stop.triggered() => break,
                }
                continue;
            }
        }
        if needs_restore {
            // Nothing learned in the failed poll was saved: go on from the
            // last snapshot, so nothing is learned twice.
            let restored = tokio::select! {
                r = restore(&lp.store, &lp.cfg) => r,
                () = grace.given_up(&stop) => break,
            };
            match restored {
                Ok(l) => {
                    lp.learner = l;
                    lp.sync_stats();
                    needs_restore = false;
                    lp.publish_due = lp.learner.learned_through().is_some();
                    lp.seen.clear();
                    if let Err(e) = lp.reseed_seen().await {
                        lp.stats.clickhouse.failed(&format!("{e:#}").replace('\n', " "));
                        needs_restore = true;
                    }
                }
                Err(e) if retry::is_permanent(&e) => return Err(e),
                Err(e) => lp.stats.clickhouse.failed(&format!("{e:#}").replace('\n', " ")),
            }
        }
        let polled = if needs_restore {
            None
        } else {
            tokio::select! {
                r = lp.poll() => Some(r),
                () = grace.given_up(&stop) => {
                    tracing::warn!("a ClickHouse call was still unanswered {SHUTDOWN_WRITE_GRACE:?} after shutdown; abandoned (relearned from the newest snapshot on restart)");
                    break;
                }
            }
        };
        match polled {
            None => {}
            Some(Ok(step)) => {
                lp.stats.clickhouse.ok();
                lp.stats.shrunk.fetch_add(step.shrunk, Relaxed);
                lp.stats.unknown.fetch_add(step.unknown, Relaxed);
                lp.stats.abandoned.fetch_add(step.abandoned, Relaxed);
                if let Some(l) = step.learned.last() {
                    tracing::debug!(windows = step.learned.len(), version = l.version, "learned");
                }
                let caught_up = step.learned.is_empty() && step.revised == 0;
                lp.read_abandoned(caught_up).await;
                if lp.publish_due {
                    lp.publish().await;
                }
                if lp.cfg.once && caught_up {
                    break;
                }
                if !caught_up && !stop.is_triggered() {
                    continue; // more may be waiting (a bounded step was taken)
                }
            }
            Some(Err(e)) if e.is::<LostLease>() => {
                tracing::warn!(error = %e, "standing by");
                lp.token = None;
                lp.stats.leader.store(0, Relaxed);
                lp.stats.frontier_ms.store(i64::MIN, Relaxed);
                needs_restore = true;
                if lp.cfg.once {
                    return Err(e.context("learn --once"));
                }
            }
            Some(Err(e)) if retry::is_permanent(&e) || e.is::<Misconfigured>() => return Err(e),
            Some(Err(e)) => {
                lp.stats.clickhouse.failed(&format!("{e:#}").replace('\n', " "));
                needs_restore = true;
                if lp.cfg.once {
                    return Err(e.context("learn --once"));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(lp.cfg.poll_interval) => {}
            _ = stop.triggered() => break,
        }
    }
    if lp.token.is_some() {
        // A clean exit hands over at once.
        if let Err(e) = lp.lease.release().await {
            tracing::warn!(error = %e, "could not release the lease (a standby takes over after --lease-ttl)");
        }
    }
    let unknown = lp.stats.unknown.load(Relaxed);
    if unknown > 0 {
        tracing::warn!(rows = unknown, "segment rows with an unknown format, country or device were skipped");
    }
    tracing::info!(
        version = lp.learner.version(),
        windows = lp.learner.windows(),
        revisions = lp.learner.revisions(),
        learned_through_ms = lp.learner.learned_through().map(|t| t / 1000),
        "learn stopped"
    );
    Ok(())
}
