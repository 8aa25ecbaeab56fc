//! Shared plumbing for the end-to-end tests: names, the adstream binary, a
//! ClickHouse client, and the SQL oracle.
//!
//! The tests need a real Kafka broker and a real ClickHouse engine; the
//! README's test command (`scripts/test.sh`) starts both. They honour
//! `ADSTREAM_BROKERS` and `ADSTREAM_CLICKHOUSE_URL`, so they also run
//! against your own Kafka and a real clickhouse-server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn brokers() -> String {
    std::env::var("ADSTREAM_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("ADSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A name unique to this test run: `prefix_<nanos>`.
pub fn unique(prefix: &str) -> String {
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000_000)
}

pub fn scratch_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("e2e"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `adstream` with Kafka/ClickHouse pointed at the test services and no
/// stray `ADSTREAM_*` settings from the caller's environment.
pub fn adstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ADSTREAM_") {
            c.env_remove(k);
        }
    }
    // Tests run side by side: none may take the default metrics port.
    c.env("ADSTREAM_BROKERS", brokers())
        .env("ADSTREAM_CLICKHOUSE_URL", clickhouse_url())
        .env("ADSTREAM_METRICS_ADDR", "off");
    c
}

/// Runs to completion within `limit`, panicking with its output otherwise.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn adstream");
    let out = wait_with_limit(child, limit);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    out
}

pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("timed out after {limit:?}\nstdout:\n{}\nstderr:\n{}", tail(&out.stdout), tail(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a spawned adstream if the test fails before waiting for it.
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    pub fn take(&mut self) -> Child {
        self.0.take().expect("child already taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Seeded events into `topic`, also written to the returned JSONL file.
pub fn generate(topic: &str, count: u64, seed: u64, jitter: &str, dir: &Path) -> PathBuf {
    generate_with(topic, count, seed, jitter, dir, &[])
}

/// [`generate`] with extra `adstream generate` flags (e.g. `--start-time`).
pub fn generate_with(topic: &str, count: u64, seed: u64, jitter: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let jsonl = dir.join(format!("{topic}.jsonl"));
    let out = run_ok(
        adstream()
            .args(["generate", "--topic", topic, "--rate", "0", "--seed", &seed.to_string(), "--jitter", jitter])
            .args(["--count", &count.to_string(), "--out-jsonl", jsonl.to_str().unwrap()])
            .args(extra),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Failed deliveries: 0"), "{stdout}");
    let lines = std::fs::read_to_string(&jsonl).unwrap().lines().count() as u64;
    assert_eq!(lines, count, "--out-jsonl holds exactly the delivered events");
    jsonl
}

pub fn ch() -> clickhouse::Client {
    clickhouse::Client::default().with_url(clickhouse_url())
}

pub async fn exec(sql: &str) {
    ch().query(sql).execute().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A query's result as TabSeparated text.
pub async fn tsv(sql: &str) -> String {
    let mut cur = ch().query(sql).fetch_bytes("TabSeparated").unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = cur.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).unwrap()
}

/// Like [`scalar`], but `None` when the query fails (e.g. the table does not
/// exist yet).
pub async fn try_scalar(sql: &str) -> Option<i64> {
    let mut cur = ch().query(sql).fetch_bytes("TabSeparated").ok()?;
    let mut out = Vec::new();
    while let Some(chunk) = cur.next().await.ok()? {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).ok()?.trim().parse().ok()
}

pub async fn scalar(sql: &str) -> i64 {
    let s = tsv(sql).await;
    s.trim().parse().unwrap_or_else(|_| panic!("{sql} returned {s:?}"))
}

/// Loads raw events (the generator's JSONL) into `{db}.{table}` with
/// ClickHouse's own JSON parser: the oracle never sees our Rust parser.
pub async fn load_raw_events(db: &str, table: &str, jsonl: &Path) {
    exec(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (event_id String, timestamp String, user_id String, campaign_id String, \
         ad_format String, country String, device String, event_type String, revenue Decimal(18, 6)) \
         ENGINE = MergeTree ORDER BY tuple()"
    ))
    .await;
    let data = std::fs::read(jsonl).unwrap();
    let mut ins = ch().insert_formatted_with(format!("INSERT INTO {db}.{table} FORMAT JSONEachRow"));
    for chunk in data.chunks(4 << 20) {
        ins.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    ins.end().await.unwrap();
}

/// One row of window numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub impressions: u64,
    pub clicks: u64,
    pub revenue: String,
    pub ctr: Option<f64>,
    pub ecpm: Option<f64>,
}

pub type Windows = BTreeMap<(i64, String, String), Metrics>;

fn parse_windows(text: &str) -> Windows {
    let opt = |s: &str| if s == "\\N" { None } else { Some(s.parse::<f64>().unwrap()) };
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 8, "{l}");
            (
                (f[0].parse().unwrap(), f[1].to_string(), f[2].to_string()),
                Metrics {
                    impressions: f[3].parse().unwrap(),
                    clicks: f[4].parse().unwrap(),
                    revenue: f[5].to_string(),
                    ctr: opt(f[6]),
                    ecpm: opt(f[7]),
                },
            )
        })
        .collect()
}

/// What adstream wrote: `{db}.ad_metrics_10s`, window start as Unix seconds.
pub async fn actual_windows(db: &str) -> Windows {
    let text = tsv(&format!(
        "SELECT toInt64(toUnixTimestamp(window_start)), campaign_id, ad_format, impressions, clicks, \
         toString(revenue), ctr, ecpm FROM {db}.ad_metrics_10s \
         WHERE dateDiff('millisecond', window_start, window_end) = 10000 ORDER BY 1, 2, 3"
    ))
    .await;
    let w = parse_windows(&text);
    assert_eq!(w.len(), text.lines().count(), "ad_metrics_10s must have one row per (window, campaign, format)");
    w
}

/// The oracle: the same windows computed by SQL over the raw events (each
/// event_id once: a redelivered event is one event), minus the events
/// adstream reported late (those are checked separately).
pub async fn oracle_windows(db: &str, raw: &str) -> Windows {
    let text = tsv(&format!(
        "SELECT ws, campaign_id, ad_format, imps, clks, toString(rev), \
                if(imps = 0, NULL, clks / imps * 100), if(imps = 0, NULL, toFloat64(rev) / imps * 1000) \
         FROM ( \
           SELECT toInt64(toUnixTimestamp(toStartOfInterval(parseDateTime64BestEffort(timestamp, 6, 'UTC'), INTERVAL 10 SECOND))) AS ws, \
                  campaign_id, ad_format, countIf(event_type = 'impression') AS imps, countIf(event_type = 'click') AS clks, \
                  CAST(sum(revenue) AS Decimal(18, 6)) AS rev \
           FROM (SELECT * FROM {db}.{raw} LIMIT 1 BY event_id) \
           WHERE event_id NOT IN (SELECT event_id FROM {db}.ad_late_events) \
           GROUP BY ws, campaign_id, ad_format) ORDER BY 1, 2, 3"
    ))
    .await;
    parse_windows(&text)
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    }
}

/// Asserts adstream's windows equal the oracle's, row by row; returns the
/// number of rows compared.
pub fn assert_windows_equal(actual: &Windows, expected: &Windows) -> usize {
    let mut problems = Vec::new();
    for (k, e) in expected {
        match actual.get(k) {
            None => problems.push(format!("missing {k:?}: expected {e:?}")),
            Some(a) => {
                if a.impressions != e.impressions
                    || a.clicks != e.clicks
                    || a.revenue != e.revenue
                    || !close(a.ctr, e.ctr)
                    || !close(a.ecpm, e.ecpm)
                {
                    problems.push(format!("{k:?}: adstream {a:?} != oracle {e:?}"));
                }
            }
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            problems.push(format!("unexpected row {k:?}: {:?}", actual[k]));
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches, first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    expected.len()
}

/// Full check: every window equals the oracle, and every raw event is either
/// in a window or in the late table. Returns (rows compared, late events).
pub async fn assert_matches_oracle(db: &str, raw: &str, events: u64) -> (usize, u64) {
    assert_matches_oracle_with_rejects(db, raw, events, 0).await
}

/// [`assert_matches_oracle`] for a topic that also holds `rejected` invalid
/// messages besides the `events` valid ones of `raw`.
pub async fn assert_matches_oracle_with_rejects(db: &str, raw: &str, events: u64, rejected: i64) -> (usize, u64) {
    let actual = actual_windows(db).await;
    let expected = oracle_windows(db, raw).await;
    let rows = assert_windows_equal(&actual, &expected);
    let counted: u64 = actual.values().map(|m| m.impressions + m.clicks).sum();
    let late = scalar(&format!("SELECT count() FROM {db}.ad_late_events")).await as u64;
    let late_known =
        scalar(&format!("SELECT count() FROM {db}.ad_late_events WHERE event_id IN (SELECT event_id FROM {db}.{raw})"))
            .await as u64;
    assert_eq!(late, late_known, "late events are real input events");
    assert_eq!(counted + late, events, "every event counted exactly once or reported late");
    let got = scalar(&format!("SELECT count() FROM {db}.ad_rejected_events")).await;
    assert_eq!(got, rejected, "rejected messages (generated events are all valid)");
    (rows, late)
}
