//! Shared plumbing for the end-to-end tests: names, the adstream binary, a
//! ClickHouse client, and the SQL oracle.
//!
//! The tests need a real Kafka broker and a real ClickHouse engine; the
//! README's test command (`scripts/test.sh`) starts both. They honour
//! `ADSTREAM_BROKERS` and `ADSTREAM_CLICKHOUSE_URL`, so they also run
//! against your own Kafka and a real clickhouse-server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn brokers() -> String {
    std::env::var("ADSTREAM_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("ADSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// The test's Redis (`ADSTREAM_REDIS_URL`, as scripts/redis.sh serves it
/// on REDIS_PORT).
pub fn redis_url() -> String {
    std::env::var("ADSTREAM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// host:port of [`redis_url`].
pub fn redis_addr() -> String {
    let url = redis_url();
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let host_port = rest.split('/').next().unwrap_or_default();
    host_port.rsplit('@').next().unwrap_or_default().to_string()
}

/// A name unique to this test run: `prefix_<nanos>`.
/// A name no other test (in this process or an earlier one) uses. The
/// counter matters: two tests starting together on two threads can read
/// the same nanosecond, and then shared a dead-letter topic.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}_{k}", std::process::id(), n % 1_000_000_000_000)
}

pub fn scratch_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("e2e"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `adstream` with no `ADSTREAM_*` from the caller and nothing listening
/// where it would connect.
pub fn bare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ADSTREAM_") {
            c.env_remove(k);
        }
    }
    c.env("ADSTREAM_BROKERS", "127.0.0.1:1").env("ADSTREAM_CLICKHOUSE_URL", "http://127.0.0.1:1");
    c.env("ADSTREAM_METRICS_ADDR", "off").env("ADSTREAM_CONNECT_TIMEOUT", "1s");
    c
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
        .env("ADSTREAM_REDIS_URL", redis_url())
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

/// Waits for `child` up to `limit` (killing it then, and panicking with its
/// output). Its piped stdout and stderr are drained while it runs, so a
/// child that writes more than a pipe holds (64 KiB) never blocks on it.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() };
    if timed_out {
        panic!("timed out after {limit:?}\nstdout:\n{}\nstderr:\n{}", tail(&output.stdout), tail(&output.stderr));
    }
    output
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
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 8, "{l}");
            ((f[0].parse().unwrap(), f[1].to_string(), f[2].to_string()), metrics(&f[3..]))
        })
        .collect()
}

/// impressions, clicks, revenue, ctr, ecpm (TSV fields; `\N` is NULL).
fn metrics(f: &[&str]) -> Metrics {
    let opt = |s: &str| if s == "\\N" { None } else { Some(s.parse::<f64>().unwrap()) };
    Metrics {
        impressions: f[0].parse().unwrap(),
        clicks: f[1].parse().unwrap(),
        revenue: f[2].to_string(),
        ctr: opt(f[3]),
        ecpm: opt(f[4]),
    }
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

/// Rows of one rollup: (window start in seconds, dimension values joined
/// by `|`) → numbers.
pub type RollupRows = BTreeMap<(i64, String), Metrics>;

fn parse_rollup(text: &str) -> RollupRows {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "{l}");
            ((f[0].parse().unwrap(), f[1].to_string()), metrics(&f[2..]))
        })
        .collect()
}

/// What adstream wrote to `{db}.{view}`, a view with `window_start`, the
/// columns `dims` and the numbers; one row per (window, key) or it fails.
pub async fn actual_rollup(db: &str, view: &str, dims: &[&str]) -> RollupRows {
    let key = if dims.is_empty() { "''".to_string() } else { format!("concat_ws('|', {})", dims.join(", ")) };
    let text = tsv(&format!(
        "SELECT toInt64(toUnixTimestamp(window_start)), {key}, impressions, clicks, toString(revenue), ctr, ecpm \
         FROM {db}.{view} ORDER BY 1, 2"
    ))
    .await;
    let rows = parse_rollup(&text);
    assert_eq!(rows.len(), text.lines().count(), "{view} must have one row per (window, key)");
    rows
}

/// The default rollups' views besides `ad_metrics_10s`: (view, dimensions,
/// window µs).
pub const ROLLUP_VIEWS: [(&str, &[&str], i64); 4] = [
    ("ad_metrics_segments_10s", &["campaign_id", "ad_format", "country", "device"], 10_000_000),
    ("ad_metrics_1m", &["campaign_id", "ad_format"], 60_000_000),
    ("ad_metrics_1h", &["campaign_id", "ad_format"], 3_600_000_000),
    ("ad_metrics_segments_1h", &["campaign_id", "ad_format", "country", "device"], 3_600_000_000),
];

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    }
}

/// Asserts adstream's windows equal the oracle's, row by row; returns the
/// number of rows compared.
pub fn assert_windows_equal<K: std::fmt::Debug + Ord>(
    actual: &BTreeMap<K, Metrics>,
    expected: &BTreeMap<K, Metrics>,
) -> usize {
    assert_rows_equal("ad_metrics_10s", actual, expected)
}

/// [`assert_windows_equal`] for the rows of `what`.
pub fn assert_rows_equal<K: std::fmt::Debug + Ord>(
    what: &str,
    actual: &BTreeMap<K, Metrics>,
    expected: &BTreeMap<K, Metrics>,
) -> usize {
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
        "{what}: {} mismatches with the oracle, first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    expected.len()
}

/// Every record of `topic`, all partitions, from the beginning to the end
/// as of the call (no consumer group joined, nothing committed).
pub fn read_topic(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("topic reader");
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!parts.is_empty(), "topic {topic} exists");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).expect("assign");
    }
    c.assign(&tpl).expect("assign");
    let (mut out, mut eofs) = (Vec::new(), std::collections::BTreeSet::new());
    let t0 = Instant::now();
    while eofs.len() < parts.len() {
        assert!(t0.elapsed() < Duration::from_secs(180), "reading {topic} stalled");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eofs.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// `run`'s default `--allowed-lateness`.
pub const DEFAULT_LATENESS: &str = "5s";

/// Window size of `ad_metrics_10s`, µs.
const WINDOW_US: i64 = 10_000_000;

/// The oracle: the windows and the late events computed here, independently
/// of adstream, from the raw input.
///
/// What it knows: the valid events (the lines of the generators' JSONL
/// files: what a test produced and knows to be valid) and where each copy
/// of one sits in the topic (partition and offset, read back from the
/// broker; a message is a valid event when its bytes equal a JSONL line).
/// ClickHouse's own JSON parser reads the fields, never adstream's.
///
/// What it decides, per partition in offset order, by the documented rules
/// (`src/engine/window/mod.rs`, module docs), here in its own code
/// ([`oracle_verdicts`]) over event times parsed by ClickHouse:
/// - an event is **late** when the partition's watermark before it has
///   reached its window's end + allowed lateness (`end + lateness <=
///   watermark`);
/// - otherwise it is counted, unless the same `event_id` was already
///   counted in that window of that partition at the same second of event
///   time (counted from the window's start; a redelivery);
/// - only counted events move the watermark: to their event time, unless
///   more than `--max-ahead` past it (then held until three consecutive
///   counted events support it; see the module docs, "The watermark").
///
/// Every JSONL event is valid to the oracle (it has no `--max-future`
/// guard): a test that wants a message rejected produces it outside the
/// JSONL and names the count of rejects.
pub struct Oracle {
    pub db: String,
}

/// `run`'s default `--max-ahead`, µs.
pub const DEFAULT_MAX_AHEAD_US: i64 = 60_000_000;

/// One valid message as the oracle sees it: event time and Kafka timestamp
/// in µs, window start, event id.
pub struct OracleEvent {
    pub ts: i64,
    pub kafka_ts: Option<i64>,
    pub event_id: String,
}

/// The oracle's verdict on one partition's valid events, in offset order:
/// `(late, counted)` each, by the documented rules, written here apart
/// from the engine: a plain loop over the sequence with the watermark, the
/// held event and the ids counted per (window, second).
pub fn oracle_verdicts(events: &[OracleEvent], size_us: i64, lateness_us: i64, max_ahead_us: i64) -> Vec<(bool, bool)> {
    let mut watermark: Option<i64> = None;
    // (lowest event time of the held run, supporters so far)
    let mut held: Option<(i64, u32)> = None;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let ws = e.ts.div_euclid(size_us) * size_us;
        if let Some(w) = watermark {
            if ws + size_us + lateness_us <= w {
                out.push((true, false));
                continue;
            }
        }
        let second = (e.ts - ws).div_euclid(1_000_000);
        if !seen.insert((ws, second, e.event_id.clone())) {
            out.push((false, false));
            continue;
        }
        out.push((false, true));
        if let Some((h, n)) = held {
            let floor = h - max_ahead_us;
            held = None;
            if e.ts >= floor || e.kafka_ts.is_some_and(|k| k >= floor) {
                if n + 1 == 3 {
                    watermark = Some(watermark.map_or(h, |w| w.max(h)));
                } else {
                    held = Some((h, n + 1));
                }
            }
        }
        let ahead = match (watermark, e.kafka_ts) {
            (Some(w), _) => e.ts > w + max_ahead_us,
            (None, Some(k)) => e.ts > k + max_ahead_us,
            (None, None) => false,
        };
        match (ahead, held) {
            (false, _) => watermark = Some(watermark.map_or(e.ts, |w| w.max(e.ts))),
            (true, Some((h, n))) => held = Some((h.min(e.ts), n)),
            (true, None) => held = Some((e.ts, 0)),
        }
    }
    out
}

impl Oracle {
    /// Loads `{db}.raw_events` (one row per valid message, with its
    /// partition and offset) from `topic` and the JSONL files, for a run
    /// with `--allowed-lateness lateness`; panics unless every JSONL event
    /// is in the topic.
    pub async fn load(db: &str, topic: &str, jsonls: &[&Path], lateness: &str) -> Oracle {
        Self::load_with(db, topic, jsonls, lateness, DEFAULT_MAX_AHEAD_US).await
    }

    /// [`Oracle::load`] for a run with `--max-ahead` of `max_ahead_us`.
    pub async fn load_with(db: &str, topic: &str, jsonls: &[&Path], lateness: &str, max_ahead_us: i64) -> Oracle {
        let lateness_us = humantime::parse_duration(lateness).expect("lateness").as_micros() as i64;
        let mut valid = std::collections::HashSet::new();
        for j in jsonls {
            for line in std::fs::read(j).unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(line.starts_with(b"{"), "a JSONL line is an object: {}", String::from_utf8_lossy(line));
                valid.insert(xxhash_rust::xxh3::xxh3_128(line));
            }
        }
        let mut rows = Vec::new();
        let mut found = std::collections::HashSet::new();
        for m in read_topic(topic) {
            use rdkafka::message::Message;
            let Some(payload) = m.payload() else { continue };
            let h = xxhash_rust::xxh3::xxh3_128(payload);
            if !valid.contains(&h) {
                continue;
            }
            found.insert(h);
            // The event's own fields plus where it sits and its Kafka
            // timestamp (ms; null without one).
            let kts = m.timestamp().to_millis().map_or_else(|| "null".to_string(), |t| t.to_string());
            write!(rows, "{{\"partition\":{},\"offset\":{},\"kafka_ms\":{kts},", m.partition(), m.offset()).unwrap();
            rows.extend_from_slice(&payload[1..]);
            rows.push(b'\n');
        }
        assert_eq!(found.len(), valid.len(), "every event of the JSONL files is in {topic}");
        exec(&format!(
            "CREATE TABLE {db}.raw_events (partition Int32, offset Int64, kafka_ms Nullable(Int64), event_id String, timestamp String, \
             user_id String, campaign_id String, ad_format String, country String, device String, \
             event_type String, revenue Decimal(18, 6)) ENGINE = MergeTree ORDER BY (partition, offset)"
        ))
        .await;
        let mut ins = ch().insert_formatted_with(format!("INSERT INTO {db}.raw_events FORMAT JSONEachRow"));
        for chunk in rows.chunks(4 << 20) {
            ins.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        ins.end().await.unwrap();
        // The verdicts, per partition in offset order, over the event times
        // as ClickHouse parses them.
        let text = tsv(&format!(
            "SELECT partition, offset, toUnixTimestamp64Micro(parseDateTime64BestEffort(timestamp, 6, 'UTC')), \
                    ifNull(toString(kafka_ms * 1000), '-'), event_id \
             FROM {db}.raw_events ORDER BY partition, offset"
        ))
        .await;
        let mut by_partition: std::collections::BTreeMap<i32, Vec<(i64, OracleEvent)>> = Default::default();
        for l in text.lines() {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "{l}");
            let e = OracleEvent {
                ts: f[2].parse().expect("ts"),
                kafka_ts: (f[3] != "-").then(|| f[3].parse().expect("kafka ts")),
                event_id: f[4].to_string(),
            };
            by_partition.entry(f[0].parse().expect("partition")).or_default().push((f[1].parse().expect("offset"), e));
        }
        let mut verdicts = String::new();
        for (p, evs) in &by_partition {
            let only: Vec<OracleEvent> = evs
                .iter()
                .map(|(_, e)| OracleEvent { ts: e.ts, kafka_ts: e.kafka_ts, event_id: e.event_id.clone() })
                .collect();
            for ((offset, _), (late, counted)) in
                evs.iter().zip(oracle_verdicts(&only, WINDOW_US, lateness_us, max_ahead_us))
            {
                verdicts.push_str(&format!("{p}\t{offset}\t{}\t{}\n", u8::from(late), u8::from(counted)));
            }
        }
        exec(&format!(
            "CREATE TABLE {db}.oracle_verdicts (partition Int32, offset Int64, late UInt8, counted UInt8) \
             ENGINE = MergeTree ORDER BY (partition, offset)"
        ))
        .await;
        let mut ins = ch().insert_formatted_with(format!("INSERT INTO {db}.oracle_verdicts FORMAT TabSeparated"));
        ins.send(bytes::Bytes::from(verdicts.into_bytes())).await.unwrap();
        ins.end().await.unwrap();
        Oracle { db: db.to_string() }
    }

    /// Every valid message with the oracle's verdict: `late`, `counted`.
    fn classified(&self) -> String {
        let (db, size) = (&self.db, WINDOW_US);
        format!(
            "SELECT r.*, v.late = 1 AS late, v.counted = 1 AS counted \
             FROM ( \
               SELECT partition, offset, event_id, campaign_id, ad_format, country, device, event_type, revenue, \
                      toUnixTimestamp64Micro(parseDateTime64BestEffort(timestamp, 6, 'UTC')) AS ts, \
                      intDiv(ts, {size}) * {size} AS ws_us \
               FROM {db}.raw_events) AS r \
             INNER JOIN {db}.oracle_verdicts AS v ON r.partition = v.partition AND r.offset = v.offset"
        )
    }

    /// The windows: the counted events by (window, campaign, format).
    pub async fn windows(&self) -> Windows {
        let text = tsv(&format!(
            "SELECT intDiv(ws_us, 1000000), campaign_id, ad_format, imps, clks, toString(rev), \
                    if(imps = 0, NULL, clks / imps * 100), if(imps = 0, NULL, toFloat64(rev) / imps * 1000) \
             FROM ( \
               SELECT ws_us, campaign_id, ad_format, countIf(event_type = 'impression') AS imps, \
                      countIf(event_type = 'click') AS clks, CAST(sum(revenue) AS Decimal(18, 6)) AS rev \
               FROM ({}) WHERE counted GROUP BY ws_us, campaign_id, ad_format) ORDER BY 1, 2, 3",
            self.classified()
        ))
        .await;
        parse_windows(&text)
    }

    /// The counted events of one rollup: `dims` (columns of raw_events)
    /// over windows of `size_us`, keyed by (window start in seconds, the
    /// dimension values joined by `|`). Windows of any size are sums of
    /// the oracle's own counted events (lateness decided by the 10 s
    /// window, as documented), never of adstream's rows.
    pub async fn rollup(&self, dims: &[&str], size_us: i64) -> RollupRows {
        let key = if dims.is_empty() { "''".to_string() } else { format!("concat_ws('|', {})", dims.join(", ")) };
        let text = tsv(&format!(
            "SELECT intDiv(w_us, 1000000), k, imps, clks, toString(rev), \
                    if(imps = 0, NULL, clks / imps * 100), if(imps = 0, NULL, toFloat64(rev) / imps * 1000) \
             FROM ( \
               SELECT intDiv(ts, {size_us}) * {size_us} AS w_us, {key} AS k, countIf(event_type = 'impression') AS imps, \
                      countIf(event_type = 'click') AS clks, CAST(sum(revenue) AS Decimal(18, 6)) AS rev \
               FROM ({}) WHERE counted GROUP BY w_us, k) ORDER BY 1, 2",
            self.classified()
        ))
        .await;
        parse_rollup(&text)
    }

    /// The late events as `partition \t offset \t event_id` lines, in order.
    pub async fn late(&self) -> Vec<String> {
        let text = tsv(&format!(
            "SELECT partition, offset, event_id FROM ({}) WHERE late ORDER BY partition, offset",
            self.classified()
        ))
        .await;
        text.lines().map(str::to_string).collect()
    }

    /// Full check: every window equals the oracle's, the late events are
    /// exactly the oracle's (same partition, offset and event id), and every
    /// one of `events` distinct events is counted once or late. Returns
    /// (rows compared, late events).
    pub async fn assert_matches(&self, events: u64) -> (usize, u64) {
        self.assert_matches_with_rejects(events, 0).await
    }

    /// [`Oracle::assert_matches`] for a topic that also holds `rejected`
    /// invalid messages besides the valid events.
    pub async fn assert_matches_with_rejects(&self, events: u64, rejected: i64) -> (usize, u64) {
        let db = &self.db;
        let actual = actual_windows(db).await;
        let mut rows = assert_windows_equal(&actual, &self.windows().await);
        for (view, dims, size_us) in ROLLUP_VIEWS {
            let got = actual_rollup(db, view, dims).await;
            let want = self.rollup(dims, size_us).await;
            assert!(!want.is_empty(), "{view}: the oracle has rows");
            rows += assert_rows_equal(view, &got, &want);
        }
        let got_late: Vec<String> =
            tsv(&format!("SELECT partition, offset, event_id FROM {db}.ad_late_events ORDER BY partition, offset"))
                .await
                .lines()
                .map(str::to_string)
                .collect();
        assert_lists_equal("late events (partition, offset, event_id)", &got_late, &self.late().await);
        let late = got_late.len() as u64;
        let counted: u64 = actual.values().map(|m| m.impressions + m.clicks).sum();
        assert_eq!(counted + late, events, "every event counted exactly once or reported late");
        let got = scalar(&format!("SELECT count() FROM {db}.ad_rejected_events")).await;
        assert_eq!(got, rejected, "rejected messages (generated events are all valid)");
        (rows, late)
    }
}

impl Oracle {
    /// [`Oracle::assert_matches`] for a topic where the producer sent some
    /// events twice (redeliveries): every message is counted once, late or
    /// a duplicate, each as the oracle decides. The late table is read
    /// FINAL: a replay after an offset reset writes late events again, as
    /// rows replacing those of the same offsets. Returns (rows compared,
    /// late events, duplicates).
    pub async fn assert_matches_redelivered(&self, messages: u64) -> (usize, u64, u64) {
        let db = &self.db;
        let actual = actual_windows(db).await;
        let mut rows = assert_windows_equal(&actual, &self.windows().await);
        for (view, dims, size_us) in ROLLUP_VIEWS {
            let got = actual_rollup(db, view, dims).await;
            rows += assert_rows_equal(view, &got, &self.rollup(dims, size_us).await);
        }
        let got_late: Vec<String> = tsv(&format!(
            "SELECT partition, offset, event_id FROM {db}.ad_late_events FINAL ORDER BY partition, offset"
        ))
        .await
        .lines()
        .map(str::to_string)
        .collect();
        assert_lists_equal("late events (partition, offset, event_id)", &got_late, &self.late().await);
        let duplicates =
            scalar(&format!("SELECT count() FROM ({}) WHERE NOT late AND NOT counted", self.classified())).await as u64;
        let late = got_late.len() as u64;
        let counted: u64 = actual.values().map(|m| m.impressions + m.clicks).sum();
        assert_eq!(counted + late + duplicates, messages, "every message counted once, late or a duplicate");
        (rows, late, duplicates)
    }
}

/// Asserts two sorted lists are equal, naming the first differences.
fn assert_lists_equal(what: &str, actual: &[String], expected: &[String]) {
    if actual == expected {
        return;
    }
    let a: std::collections::BTreeSet<&String> = actual.iter().collect();
    let e: std::collections::BTreeSet<&String> = expected.iter().collect();
    let extra: Vec<&&String> = a.difference(&e).take(10).collect();
    let missing: Vec<&&String> = e.difference(&a).take(10).collect();
    panic!(
        "{what}: adstream has {}, the oracle {}; adstream only (first 10): {extra:?}; oracle only (first 10): {missing:?}",
        actual.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------
// Failure injection (tests/reliability.rs): generators running beside the
// pipeline, peak memory, committed offsets, and the repo's service scripts.

/// Whether Kafka and ClickHouse belong to someone else (`scripts/test.sh`
/// sets this when the user gives ADSTREAM_BROKERS / ADSTREAM_CLICKHOUSE_URL):
/// then tests must not stop and start them.
pub fn external_services() -> bool {
    std::env::var("ADSTREAM_TEST_EXTERNAL_SERVICES").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0"
    })
}

/// Whether `service` (`kafka`, `clickhouse`, `redis`) is someone else's:
/// `ADSTREAM_TEST_EXTERNAL_SERVICES` is `1` (all of them) or names it in
/// a comma-separated list (scripts/test.sh lists those you pointed
/// elsewhere). Only a step that stops or restarts that service is skipped.
pub fn external_service(service: &str) -> bool {
    std::env::var("ADSTREAM_TEST_EXTERNAL_SERVICES")
        .is_ok_and(|v| v.trim() == "1" || v.split(',').any(|s| s.trim().eq_ignore_ascii_case(service)))
}

/// The knobs of one `adstream generate` run.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub count: u64,
    pub seed: u64,
    pub jitter: &'static str,
    /// Send rate, events/s (0 = as fast as possible).
    pub rate: u64,
    /// First event's time; a second generator on the same topic starts where
    /// the first one's event time ends, so its events are not all late.
    pub start_time: &'static str,
}

impl GenSpec {
    pub fn new(count: u64, seed: u64, jitter: &'static str, rate: u64) -> Self {
        GenSpec { count, seed, jitter, rate, start_time: "2025-12-10T00:00:00Z" }
    }
}

/// A generator running in the background; [`Generator::finish`] waits for it
/// and checks that every event was delivered and recorded.
pub struct Generator {
    child: KillOnDrop,
    pub jsonl: PathBuf,
    pub spec: GenSpec,
}

impl Generator {
    /// Starts `adstream generate` into `topic` (created with 3 partitions).
    /// Event time always advances 1000 events per simulated second, whatever
    /// the send rate, so every test sees the same window sizes.
    pub fn start(topic: &str, spec: GenSpec, dir: &Path) -> Self {
        let jsonl = dir.join(format!("{topic}_{}.jsonl", spec.seed));
        let child = adstream()
            .args(["generate", "--topic", topic, "--rate", &spec.rate.to_string(), "--event-rate", "1000"])
            .args(["--seed", &spec.seed.to_string(), "--jitter", spec.jitter, "--start-time", spec.start_time])
            .args(["--count", &spec.count.to_string(), "--out-jsonl", jsonl.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn adstream generate");
        Generator { child: KillOnDrop(Some(child)), jsonl, spec }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for the generator; panics unless all `count` events were
    /// delivered and written to the JSONL file.
    pub fn finish(mut self, limit: Duration) -> PathBuf {
        let out = wait_with_limit(self.child.take(), limit);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Failed deliveries: 0"),
            "generate failed: {}\n{}\n{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
        let lines = std::fs::read_to_string(&self.jsonl).unwrap().lines().count() as u64;
        assert_eq!(lines, self.spec.count, "--out-jsonl holds exactly the delivered events");
        self.jsonl.clone()
    }
}

/// `adstream run` in the background with its log in `dir/<name>.log`.
pub struct Runner {
    child: KillOnDrop,
    pub name: String,
    pub log: PathBuf,
    pub started: Instant,
}

impl Runner {
    pub fn start(name: &str, args: &[&str], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = adstream().args(args).stdout(Stdio::null()).stderr(file).spawn().expect("spawn adstream run");
        Runner { child: KillOnDrop(Some(child)), name: name.to_string(), log, started: Instant::now() }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.as_ref().expect("runner already stopped").id()
    }

    /// Alive (not exited, not a zombie).
    pub fn is_alive(&mut self) -> bool {
        self.child.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log's tail unless the process is still running.
    pub fn assert_alive(&mut self, when: &str) {
        if !self.is_alive() {
            panic!("{} exited {when}:\n{}", self.name, tail(self.log_text().as_bytes()));
        }
    }

    /// SIGKILL: no shutdown code runs at all.
    pub fn kill9(mut self) {
        let mut c = self.child.take();
        c.kill().expect("SIGKILL");
        let _ = c.wait();
    }

    /// SIGTERM, then waits up to `limit`; returns the exit status and how
    /// long the exit took.
    pub fn sigterm(mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let c = self.child.take();
        signal(c.id(), "TERM");
        let t0 = Instant::now();
        let out = wait_with_limit(c, limit);
        (out.status, t0.elapsed())
    }

    /// Waits for a `--drain` run to finish and asserts it exited 0.
    pub fn wait_ok(mut self, limit: Duration) {
        let out = wait_with_limit(self.child.take(), limit);
        assert!(out.status.success(), "{} failed: {}\n{}", self.name, out.status, tail(self.log_text().as_bytes()));
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().expect("kill").success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Peak resident memory (VmHWM) of every process handed to [`RssWatch::watch`],
/// sampled every 100 ms while they run: VmHWM is the kernel's own high-water
/// mark, so only growth in a process's last 100 ms can escape it.
pub struct RssWatch {
    pids: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    peak_kb: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// VmHWM (peak RSS) of `pid` in KiB, if it is still running.
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl RssWatch {
    pub fn new() -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let w = RssWatch { pids: Default::default(), peak_kb: Default::default(), stop: Default::default() };
        let (pids, peak, stop) = (w.pids.clone(), w.peak_kb.clone(), w.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let list = pids.lock().map(|p| p.clone()).unwrap_or_default();
                for pid in list {
                    if let Some(kb) = vm_hwm_kb(pid) {
                        peak.fetch_max(kb, Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        w
    }

    pub fn watch(&self, pid: u32) {
        if let Ok(mut p) = self.pids.lock() {
            p.push(pid);
        }
        if let Some(kb) = vm_hwm_kb(pid) {
            self.peak_kb.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Highest VmHWM seen so far, MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kb.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Default for RssWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Committed offsets of `group` on partitions 0..3 of `topic` (-1: none),
/// read without joining the group.
pub fn committed_offsets(group: &str, topic: &str) -> Option<[i64; 3]> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    let mut out = [-1i64; 3];
    for (p, o) in out.iter_mut().enumerate() {
        if let Some(rdkafka::Offset::Offset(n)) = got.find_partition(topic, p as i32).map(|e| e.offset()) {
            *o = n;
        }
    }
    Some(out)
}

/// High watermarks (messages so far) of partitions 0..3 of `topic`.
pub fn high_watermarks(topic: &str) -> Option<[i64; 3]> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().ok()?;
    let mut out = [0i64; 3];
    for (p, o) in out.iter_mut().enumerate() {
        *o = c.fetch_watermarks(topic, p as i32, Duration::from_secs(5)).ok()?.1;
    }
    Some(out)
}

pub fn sum3(a: [i64; 3]) -> i64 {
    a.iter().map(|&x| x.max(0)).sum()
}

/// Runs `scripts/<script>.sh <action>` of this repo with the test's own
/// environment (so KAFKA_PORT, CLICKHOUSE_PORT etc. carry over); returns how
/// long it took.
pub fn service(script: &str, action: &str) -> Duration {
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(format!("scripts/{script}.sh"))
        .arg(action)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run service script");
    assert!(
        out.status.success(),
        "scripts/{script}.sh {action}: {}\n{}\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    t0.elapsed()
}

/// host:port of the Kafka broker or of ClickHouse's HTTP interface.
fn service_addr(script: &str) -> String {
    match script {
        "kafka" => brokers().split(',').next().unwrap_or_default().to_string(),
        _ => {
            let url = clickhouse_url();
            let rest = url.split("://").nth(1).unwrap_or(&url).to_string();
            rest.split('/').next().unwrap_or_default().to_string()
        }
    }
}

/// Whether `scripts/<script>.sh status` reports the service running.
pub fn service_running(script: &str) -> bool {
    Command::new("bash")
        .arg(format!("scripts/{script}.sh"))
        .arg("status")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops a service and brings it back when dropped, so a failing test does
/// not leave the next tests without Kafka or ClickHouse.
pub struct Outage {
    script: &'static str,
    up: bool,
}

impl Outage {
    /// `scripts/<script>.sh down`, checked with `status` and by the port
    /// refusing connections.
    pub fn begin(script: &'static str) -> (Self, Duration) {
        let took = service(script, "down");
        let outage = Outage { script, up: false };
        assert!(!service_running(script), "scripts/{script}.sh down left it running");
        let addr = service_addr(script);
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "{addr} still accepts connections after {script}.sh down"
        );
        (outage, took)
    }

    /// `scripts/<script>.sh up`, checked with `status`.
    pub fn end(mut self) -> Duration {
        self.up = true;
        let took = service(self.script, "up");
        assert!(service_running(self.script), "scripts/{}.sh up did not bring it back", self.script);
        took
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.up {
            let _ = Command::new("bash")
                .arg(format!("scripts/{}.sh", self.script))
                .arg("up")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
        }
    }
}

/// Every row of `ad_window_parts` after FINAL, for before/after comparisons.
pub async fn parts_snapshot(db: &str) -> String {
    tsv(&format!(
        "SELECT rollup_name, window_start, campaign_id, ad_format, country, device, topic, partition, impressions, \
         clicks, revenue, version, is_final FROM {db}.ad_window_parts FINAL \
         ORDER BY rollup_name, window_start, campaign_id, ad_format, country, device, topic, partition"
    ))
    .await
}

/// Polls `cond` every 200 ms; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `adstream run` of `topic` in consumer group `group` into database `db`,
/// a stats line every second.
pub fn run_args(topic: &str, group: &str, db: &str) -> Vec<String> {
    ["run", "--topic", topic, "--group", group, "--database", db, "--stats-interval", "1s"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The `--allowed-lateness` a command line gives `run` (its default if none).
pub fn lateness_in(args: &[String]) -> &str {
    args.iter().position(|a| a == "--allowed-lateness").and_then(|i| args.get(i + 1)).map_or(DEFAULT_LATENESS, |s| s)
}

/// How far a caught-up group's committed offsets may trail the end of the
/// topic: a commit points at the oldest open window (see `window.rs`), and
/// with 10 s windows, a few seconds of lateness and jitter and 1000 events
/// per simulated second at most two windows per partition are open, about
/// 20,000 events in all.
pub const OPEN_TAIL: i64 = 30_000;

/// One pipeline of a live-stream test: `adstream run` processes reading
/// `topic` in one consumer group into one database, all with `args`.
pub struct Pipeline {
    pub topic: String,
    pub group: String,
    pub db: String,
    pub args: Vec<String>,
}

/// How the end of a live-stream test went (see [`Pipeline::finish`]).
pub struct Finish {
    /// Sum of the committed offsets when the group had caught up.
    pub caught_up: i64,
    /// How long each runner took to exit after its SIGTERM.
    pub sigterm_exits: Vec<Duration>,
    /// Rows equal to the oracle, and late events.
    pub rows: usize,
    pub late: u64,
}

impl Pipeline {
    /// `run` of `topic` into `db` in `group`, with `extra` flags.
    pub fn new(topic: &str, group: &str, db: &str, extra: &[&str]) -> Self {
        let mut args = run_args(topic, group, db);
        args.extend(extra.iter().map(|s| s.to_string()));
        Pipeline { topic: topic.into(), group: group.into(), db: db.into(), args }
    }

    /// Starts one more `run` process (plus `extra` flags) as `name`.
    pub fn start(&self, name: &str, extra: &[&str], dir: &Path) -> Runner {
        let args: Vec<&str> = self.args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        Runner::start(name, &args, dir)
    }

    /// Sum of the group's committed offsets (0 if none).
    pub fn committed(&self) -> i64 {
        committed_offsets(&self.group, &self.topic).map(sum3).unwrap_or(0)
    }

    /// Checks every window and late event against the oracle over
    /// `jsonls`, then each source partition's contribution against the
    /// partition's length (after a rebalance or restart a partition is
    /// rebuilt by whoever owns it next, so each one must add up on its
    /// own); returns the oracle and (rows, late).
    pub async fn check_oracle(&self, jsonls: &[&Path], events: u64) -> (Oracle, usize, u64) {
        let db = &self.db;
        let oracle = Oracle::load(db, &self.topic, jsonls, lateness_in(&self.args)).await;
        let (rows, late) = oracle.assert_matches(events).await;
        assert!(late > 0, "the stream must exercise the late path");
        let raw = scalar(&format!("SELECT count() FROM {db}.raw_events")).await as u64;
        assert_eq!(raw, events, "the oracle saw every generated event");
        let lengths = high_watermarks(&self.topic).expect("high watermarks");
        for (p, len) in lengths.iter().enumerate() {
            let late = scalar(&format!("SELECT count() FROM {db}.ad_late_events WHERE partition = {p}")).await;
            let per_rollup = tsv(&format!(
                "SELECT rollup_name, toInt64(sum(impressions + clicks)) FROM {db}.ad_window_parts FINAL \
                 WHERE partition = {p} GROUP BY rollup_name ORDER BY rollup_name"
            ))
            .await;
            assert_eq!(per_rollup.lines().count(), 5, "partition {p}: every default rollup has rows: {per_rollup}");
            for l in per_rollup.lines() {
                let (rollup, counted) = l.split_once('\t').expect("rollup \t count");
                let counted: i64 = counted.parse().expect("a count");
                assert_eq!(
                    counted + late,
                    *len,
                    "partition {p}, rollup {rollup}: events counted + late = messages in the partition"
                );
            }
        }
        (oracle, rows, late)
    }

    /// The end of a live-stream test, once every event is in the topic:
    /// waits until the group has caught up (committed to within
    /// [`OPEN_TAIL`] of `events`, every runner alive), stops each runner
    /// with SIGTERM (each must exit 0), drains the rest with one `--drain`
    /// run, and checks the oracle over `jsonls`.
    pub async fn finish(
        &self,
        mut runners: Vec<Runner>,
        jsonls: &[&Path],
        events: u64,
        dir: &Path,
        rss: &RssWatch,
    ) -> Finish {
        wait_until("the group to catch up", Duration::from_secs(180), || {
            runners.iter_mut().for_each(|r| r.assert_alive("before catching up"));
            self.committed() >= events as i64 - OPEN_TAIL
        });
        let caught_up = self.committed();
        let mut sigterm_exits = Vec::new();
        for r in runners {
            let name = r.name.clone();
            let (status, took) = r.sigterm(Duration::from_secs(20));
            assert!(status.success(), "{name} on SIGTERM: {status}");
            sigterm_exits.push(took);
        }
        let drain = self.start("drain", &["--drain"], dir);
        rss.watch(drain.pid());
        drain.wait_ok(Duration::from_secs(300));
        let (_, rows, late) = self.check_oracle(jsonls, events).await;
        Finish { caught_up, sigterm_exits, rows, late }
    }
}

/// Creates `topic` with 3 partitions (as the generator does), panicking on
/// any error.
pub async fn create_topic(topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin");
    let res = admin
        .create_topics(&[NewTopic::new(topic, 3, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create topic");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
}

/// Event time `us` (µs since the epoch) as producers write it.
pub fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).expect("a time").format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Sends `(partition, payload, Kafka timestamp ms)` in order (one task,
/// idempotent producer: each partition keeps the order) and appends the
/// payloads to `jsonl` for the oracle.
pub async fn produce_timed(topic: &str, msgs: &[(i32, String, i64)], jsonl: &Path) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (part, payload, kafka_ms) in msgs {
        let record = FutureRecord::<(), _>::to(topic).partition(*part).payload(payload).timestamp(*kafka_ms);
        pending.push(p.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
        if pending.len() >= 5_000 {
            for d in pending.drain(..) {
                d.await.expect("delivery future").map_err(|(e, _)| e).expect("delivery");
            }
        }
    }
    for d in pending {
        d.await.expect("delivery future").map_err(|(e, _)| e).expect("delivery");
    }
    let mut lines: Vec<u8> = Vec::new();
    for (_, payload, _) in msgs {
        lines.extend_from_slice(payload.as_bytes());
        lines.push(b'\n');
    }
    std::fs::OpenOptions::new().create(true).append(true).open(jsonl).unwrap().write_all(&lines).unwrap();
}
