//! The learner tests' shared setting (tests/learn.rs, tests/learn_lease.rs):
//! a small deterministic event stream and its producer, the tests' own
//! oracle (which events count, lateness decided from each partition's own
//! sequence, never read from adstream's tables), `learn` processes and
//! their endpoints, the model's newest snapshot row, and [`LearnSetup`]
//! (topic, database, model, `run`). Not re-exported by `common`: the
//! learner tests `use common::learn::*`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use adstream::engine::{AdFormat, Country, Device};
use adstream::learn::Segment;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::*;

pub const T0_US: i64 = 1_765_328_400_000_000; // 2025-12-10T01:00:00Z
pub const WINDOW_US: i64 = 10_000_000;
pub const LATENESS_US: i64 = 5_000_000; // run's default --allowed-lateness

/// One event of the test stream, and where it goes.
#[derive(Clone)]
pub struct Ev {
    pub partition: i32,
    pub ts_us: i64,
    pub segment: Segment,
    pub click: bool,
    pub json: String,
}

/// A small deterministic stream for `partition`: `n` events from `from_us`,
/// one every `step_us` (some out of order, some late), segments and clicks
/// from a fixed LCG.
pub fn stream(partition: i32, from_us: i64, n: usize, step_us: i64, seed: u64) -> Vec<Ev> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    (0..n)
        .map(|i| {
            // Out of order as real traffic is: every 7th event up to 4 s
            // behind (still within the lateness), every 400th 30 s behind
            // (late once its window has closed: not counted).
            let behind = match i {
                i if i % 400 == 399 => 30_000_000,
                i if i % 7 == 3 => (next() % 4000) as i64 * 1000,
                _ => 0,
            };
            let ts_us = (from_us + i as i64 * step_us - behind).max(from_us);
            let segment = Segment {
                campaign_id: format!("C00{}", 1 + next() % 3),
                ad_format: AdFormat::ALL[next() % 3],
                country: Country::ALL[next() % 3],
                device: Device::ALL[next() % 2],
            };
            let click = next() % 100 < 8 + 6 * segment.ad_format.index();
            let ts = chrono::DateTime::from_timestamp_micros(ts_us).unwrap().format("%Y-%m-%dT%H:%M:%S%.6f");
            let id = format!("p{partition}-{seed}-{i}");
            let json = format!(
                r#"{{"event_id":"{id}","timestamp":"{ts}","user_id":"U12345","campaign_id":"{}","ad_format":"{}","country":"{}","device":"{}","event_type":"{}","revenue":{}}}"#,
                segment.campaign_id,
                segment.ad_format.as_str(),
                segment.country.as_str(),
                segment.device.as_str(),
                if click { "click" } else { "impression" },
                if click { "0.05" } else { "0.0" }
            );
            Ev { partition, ts_us, segment, click, json }
        })
        .collect()
}

pub async fn produce(topic: &str, events: &[Ev]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    // In order, one at a time per partition (the oracle reads each
    // partition's sequence in this order).
    for e in events {
        let key = format!("{}", e.ts_us);
        let rec = FutureRecord::to(topic).partition(e.partition).key(&key).payload(&e.json);
        p.send(rec, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("delivered");
    }
}

/// The oracle: impressions and clicks per window start (µs) of the events
/// that count, deciding lateness per partition from its own sequence, as
/// `run` is documented to (an event is late once its window's end plus the
/// allowed lateness is at or behind the partition's max event time).
pub fn oracle(sent: &[Ev]) -> BTreeMap<i64, (u64, u64)> {
    let mut watermark: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for e in sent {
        let wm = watermark.entry(e.partition).or_insert(i64::MIN);
        let start = e.ts_us.div_euclid(WINDOW_US) * WINDOW_US;
        if *wm != i64::MIN && start + WINDOW_US + LATENESS_US <= *wm {
            continue; // late
        }
        *wm = (*wm).max(e.ts_us);
        let c = out.entry(start).or_default();
        if e.click {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }
    out
}

/// The bound address `learn` logs ("predicted CTR on http://ADDR/ctr").
pub fn learn_addr(r: &Runner) -> Option<String> {
    let log = r.log_text();
    let line = log.lines().rev().find(|l| l.contains("predicted CTR on http://"))?;
    let rest = &line[line.find("http://")? + 7..];
    Some(rest[..rest.find('/')?].to_string())
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

pub fn start_learn(db: &str, model: &str, dir: &Path, name: &str) -> Runner {
    start_learn_with(db, model, dir, name, &[])
}

pub fn start_learn_with(db: &str, model: &str, dir: &Path, name: &str, extra: &[&str]) -> Runner {
    let base = [
        "learn",
        "--database",
        db,
        "--model",
        model,
        "--poll-interval",
        "200ms",
        "--idle-after",
        "3s",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let args: Vec<&str> = base.iter().chain(extra).copied().collect();
    let r = Runner::start(name, &args, dir);
    wait_until("learn to listen", Duration::from_secs(30), || learn_addr(&r).is_some());
    r
}

/// The newest snapshot row: (version, learned_through ms, windows,
/// revisions, impressions, clicks).
pub async fn model_row(db: &str, model: &str) -> Option<(u64, i64, u64, u64, u64, u64)> {
    let t = tsv(&format!(
        "SELECT version, toUnixTimestamp64Milli(learned_through), windows, revisions, impressions, clicks \
         FROM {db}.ad_ctr_model WHERE model = '{model}' ORDER BY version DESC LIMIT 1"
    ))
    .await;
    let v: Vec<&str> = t.trim().split('\t').collect();
    if v.len() != 6 {
        return None;
    }
    Some((
        v[0].parse().ok()?,
        v[1].parse().ok()?,
        v[2].parse().ok()?,
        v[3].parse().ok()?,
        v[4].parse().ok()?,
        v[5].parse().ok()?,
    ))
}

pub async fn wait_model(
    db: &str,
    model: &str,
    limit: Duration,
    what: &str,
    cond: impl Fn(&(u64, i64, u64, u64, u64, u64)) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let m = model_row(db, model).await;
        if m.as_ref().is_some_and(&cond) {
            return;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}; model row {m:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The port of the test run's redis-server (`scripts/redis.sh`'s
/// `REDIS_PORT`, 6379 by default).
pub fn redis_port() -> String {
    std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into())
}

/// The redis-server the learner tests read directly, on [`redis_port`]
/// (tests/learn.rs's own `redis_url` before the split, renamed so as not
/// to clash with `common::redis_url`, which reads `ADSTREAM_REDIS_URL`;
/// the two agree whenever scripts/redis.sh serves the test's Redis).
pub fn redis_port_url() -> String {
    format!("redis://127.0.0.1:{}", redis_port())
}

pub fn redis_pid() -> Option<u32> {
    let port = redis_addr().rsplit(':').next()?.to_string();
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(".run/redis/{port}/redis.pid"));
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

pub fn predict(db: &str, model: &str, seg: &Segment) -> std::process::Output {
    adstream()
        .args([
            "predict",
            "--database",
            db,
            "--model",
            model,
            "--campaign",
            &seg.campaign_id,
            "--format",
            seg.ad_format.as_str(),
        ])
        .args(["--country", seg.country.as_str(), "--device", seg.device.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("predict")
}

/// `learn --once` into `db` as `model`, run to its end.
pub fn learn_once(db: &str, model: &str, extra: &[&str]) -> std::process::Output {
    run_ok(
        adstream().args(["learn", "--once", "--database", db, "--model", model, "--idle-after", "3s"]).args(extra),
        Duration::from_secs(120),
    )
}

/// Sums of the oracle over the windows starting at or before `through_ms`.
pub fn oracle_through(want: &BTreeMap<i64, (u64, u64)>, through_ms: i64) -> (u64, u64, usize) {
    let r = want.range(..=through_ms * 1000);
    let n = r.clone().count();
    let (i, c) = r.fold((0, 0), |(i, c), (_, (wi, wc))| (i + wi, c + wc));
    (i, c, n)
}

/// The value of `name` in a Prometheus text page (panics if absent).
pub fn metrics_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// `run`'s flags in the learner tests: a partition idle after 1 s, a
/// flush every 200 ms.
pub const LEARN_RUN_FLAGS: [&str; 4] = ["--idle-timeout", "1s", "--flush-interval", "200ms"];

/// One learner test's setting: a scratch directory, a fresh topic (3
/// partitions), a database of the same name, a model name, and `run` of
/// that topic into that database (consumer group: the topic's name, flags
/// [`LEARN_RUN_FLAGS`]).
pub struct LearnSetup {
    pub dir: PathBuf,
    pub topic: String,
    pub db: String,
    pub model: String,
    pub pipeline: Pipeline,
}

impl LearnSetup {
    /// Creates the topic `<prefix>_…` (the database has its name).
    pub async fn new(prefix: &str) -> Self {
        let dir = scratch_dir();
        let topic = unique(prefix);
        let db = topic.clone();
        let model = unique("m");
        create_topic(&topic).await;
        let pipeline = Pipeline::new(&topic, &topic, &db, &LEARN_RUN_FLAGS);
        LearnSetup { dir, topic, db, model, pipeline }
    }

    /// [`LearnSetup::new`], then `adstream migrate` of the database.
    pub async fn migrated(prefix: &str) -> Self {
        let s = Self::new(prefix).await;
        migrate(&s.db);
        s
    }

    /// Produces `events` to the topic (see [`produce`]).
    pub async fn produce(&self, events: &[Ev]) {
        produce(&self.topic, events).await;
    }

    /// Starts one `run` process as `name`.
    pub fn start_run(&self, name: &str) -> Runner {
        self.pipeline.start(name, &[], &self.dir)
    }

    /// Starts `learn` of the model as `name` (plus `extra` flags) and waits
    /// until it listens.
    pub fn start_learn(&self, name: &str, extra: &[&str]) -> Runner {
        start_learn_with(&self.db, &self.model, &self.dir, name, extra)
    }

    /// The model's newest snapshot row (see [`model_row`]).
    pub async fn model_row(&self) -> Option<(u64, i64, u64, u64, u64, u64)> {
        model_row(&self.db, &self.model).await
    }

    /// Waits until the model's newest row meets `cond` (see [`wait_model`]).
    pub async fn wait_model(
        &self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&(u64, i64, u64, u64, u64, u64)) -> bool,
    ) {
        wait_model(&self.db, &self.model, limit, what, cond).await
    }
}

/// `adstream migrate` of `db`.
pub fn migrate(db: &str) {
    run_ok(adstream().args(["migrate", "--database", db]), Duration::from_secs(60));
}

/// SIGTERM to a `learn` (20 s) or `run` (30 s) process of a learner test,
/// which must exit 0.
pub fn stop_learn(learn: Runner, run: Option<Runner>) {
    let (status, _) = learn.sigterm(Duration::from_secs(20));
    assert!(status.success(), "learn exits 0 on SIGTERM");
    if let Some(run) = run {
        let (status, _) = run.sigterm(Duration::from_secs(30));
        assert!(status.success(), "run exits 0 on SIGTERM");
    }
}

/// `learn --once` of `model` in `db`, which must be refused (exit 1); its
/// stderr.
pub fn learn_once_refused(db: &str, model: &str) -> String {
    let out = adstream()
        .args(["learn", "--once", "--database", db, "--model", model])
        .stderr(Stdio::piped())
        .output()
        .expect("learn --once");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// `impressions \t clicks` of `ad_metrics_segments_10s` over the windows
/// starting at or before `through_ms`.
pub async fn segments_through(db: &str, through_ms: i64) -> String {
    tsv(&format!(
        "SELECT sum(impressions), sum(clicks) FROM {db}.ad_metrics_segments_10s \
         WHERE window_start <= fromUnixTimestamp64Milli({through_ms}, 'UTC')"
    ))
    .await
    .trim()
    .to_string()
}

/// The model's snapshot history in `ad_ctr_model`, checked to be one: no
/// version saved with two contents (a fork), and no later version that
/// learned less (fewer impressions, or an earlier `learned_through`) than
/// the one before it. Panics with what broke.
pub async fn assert_one_snapshot_history(db: &str, model: &str) {
    let forks = tsv(&format!(
        "SELECT version FROM {db}.ad_ctr_model WHERE model = '{model}' GROUP BY version \
         HAVING uniqExact(learned_through, impressions, clicks, snapshot) > 1"
    ))
    .await;
    assert_eq!(forks.trim(), "", "versions saved with two contents (a fork)");
    let backwards = scalar(&format!(
        "SELECT count() FROM (SELECT impressions, learned_through, \
           lagInFrame(impressions) OVER (ORDER BY version ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS pi, \
           lagInFrame(learned_through) OVER (ORDER BY version ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS pt \
         FROM (SELECT DISTINCT version, impressions, learned_through FROM {db}.ad_ctr_model WHERE model = '{model}')) \
         WHERE impressions < pi OR learned_through < pt"
    ))
    .await;
    assert_eq!(backwards, 0, "a later snapshot version with less learned");
}
