//! What an operator touches, on the real thing: `/metrics` and `/healthz` of
//! a live `adstream run` (scraped over HTTP and checked against what was
//! produced), the `report` command against the SQL oracle, the settings
//! file's precedence, and the generator's progress line in a pipe and on a
//! terminal. Needs the services `scripts/test.sh` starts, hence `#[ignore]`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// `GET path` over plain HTTP/1.0: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: adstream\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Prometheus text → `name{labels}` → value (comments skipped).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("{key} missing from /metrics"))
}

/// Sum of every series of `name` whose labels contain `label` (e.g. `partition=`).
fn sum_series(m: &BTreeMap<String, f64>, name: &str, label: &str) -> (usize, f64) {
    let s: Vec<f64> =
        m.iter().filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label)).map(|(_, v)| *v).collect();
    (s.len(), s.iter().sum())
}

/// A TCP forwarder in front of ClickHouse that the test can take away:
/// after `close`, nothing listens on its port (connection refused), which
/// is what an unreachable ClickHouse looks like, without stopping the
/// ClickHouse other tests share.
struct Proxy {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(addr: SocketAddr, upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                t.lock().unwrap().push(h);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { addr, tasks }
    }

    /// Stops listening and cuts every open connection.
    fn close(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

fn clickhouse_host_port() -> String {
    let u = clickhouse_url();
    u.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// Waits for `cond` on fresh scrapes, up to `limit`; returns the last one.
fn wait_metrics(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    cond: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let t0 = Instant::now();
    loop {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        let m = parse_metrics(&body);
        if cond(&m) {
            return m;
        }
        assert!(t0.elapsed() < limit, "{what} not reached within {limit:?}; last scrape:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_health(addr: SocketAddr, want: u16, limit: Duration) -> (Duration, String) {
    let t0 = Instant::now();
    loop {
        let (status, body) = http_get(addr, "/healthz");
        if status == want {
            return (t0.elapsed(), body);
        }
        assert!(t0.elapsed() < limit, "/healthz still {status} after {limit:?}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `metrics on http://ADDR/metrics` line of a JSON log.
fn metrics_addr_from_log(path: &std::path::Path, limit: Duration) -> SocketAddr {
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line {line:?}: {e}"));
            let msg = v["message"].as_str().unwrap_or("");
            if let Some(rest) = msg.strip_prefix("metrics on http://") {
                return rest.split('/').next().unwrap().parse().unwrap();
            }
        }
        assert!(t0.elapsed() < limit, "no `metrics on` line within {limit:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn metrics_count_what_was_produced_and_healthz_turns_503_when_clickhouse_goes_away() {
    let (topic, group, db, dlq) = (unique("ad_events"), unique("g"), unique("ops"), unique("dlq"));
    let dir = scratch_dir();
    const N: u64 = 20_000;
    let jsonl = generate(&topic, N, 11, "0s", &dir);
    // Bad messages on top, by reason.
    let bad: [(&str, &[u8]); 4] = [
        ("invalid_json", b"not json {"),
        ("invalid_json", b"{\"event_id\":"),
        ("empty_message", b""),
        ("unknown_ad_format", br#"{"event_id":"x-1","timestamp":"2025-12-10T00:00:01Z","user_id":"u","campaign_id":"C001","ad_format":"native","country":"US","device":"ios","event_type":"impression","revenue":0.0}"#),
    ];
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let p: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
        for (_, payload) in bad {
            p.send(FutureRecord::<(), [u8]>::to(&topic).payload(payload), Duration::from_secs(30)).await.unwrap();
        }
    }
    let total = N + bad.len() as u64;
    // What the metrics must say, from the generator's own record.
    let mut by_kind: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut max_ts = String::new();
    for line in std::fs::read_to_string(&jsonl).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *by_kind
            .entry((v["ad_format"].as_str().unwrap().into(), v["event_type"].as_str().unwrap().into()))
            .or_default() += 1;
        max_ts = max_ts.max(v["timestamp"].as_str().unwrap().to_string());
    }

    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), clickhouse_host_port()).await;
    let log_path = dir.join("run.log");
    let mut child = KillOnDrop(Some(
        adstream()
            .args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--dlq-topic", &dlq])
            .args(["--clickhouse-url", &format!("http://{}", proxy.addr)])
            .args(["--metrics-addr", "127.0.0.1:0", "--unhealthy-after", "2s", "--idle-timeout", "2s"])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    ));
    let addr = metrics_addr_from_log(&log_path, Duration::from_secs(60));
    let (status, body) = http_get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    println!(
        "ops: {N} events + {} bad messages in {topic}; metrics at {addr}; /healthz 200: {}",
        bad.len(),
        body.trim()
    );

    // Everything consumed, every window written (idle timeout 2 s).
    wait_metrics(addr, Duration::from_secs(120), "all events consumed", |m| {
        m.get("adstream_events_consumed_total") == Some(&(total as f64))
            && m.get("adstream_dlq_records_written_total") == Some(&(bad.len() as f64))
            && sum_series(m, "adstream_consumer_lag", "partition=").1 == 0.0
    });
    // ... and written: the last windows go out after the 2 s idle timeout.
    let t0 = Instant::now();
    while try_scalar(&format!("SELECT sum(impressions + clicks) FROM {db}.ad_metrics_10s")).await != Some(N as i64) {
        assert!(t0.elapsed() < Duration::from_secs(60), "windows not written within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = wait_metrics(addr, Duration::from_secs(10), "a scrape", |_| true);
    let line = |k: &str| get(&m, k);
    for ((f, t), n) in &by_kind {
        let got = line(&format!("adstream_events_counted_total{{ad_format=\"{f}\",event_type=\"{t}\"}}"));
        assert_eq!(got, *n as f64, "{f}/{t}");
    }
    assert_eq!(by_kind.len(), 6, "3 formats x 2 event types");
    for reason in ["invalid_json", "empty_message", "unknown_ad_format"] {
        let want = bad.iter().filter(|(r, _)| *r == reason).count() as f64;
        assert_eq!(line(&format!("adstream_events_rejected_total{{reason=\"{reason}\"}}")), want, "{reason}");
    }
    assert_eq!(
        line("adstream_events_rejected_total{reason=\"too_large\"}"),
        0.0,
        "every reason is exported, zeros too"
    );
    assert_eq!(line("adstream_events_late_total"), 0.0);
    assert_eq!(line("adstream_duplicates_dropped_total"), 0.0);
    assert_eq!(sum_series(&m, "adstream_consumer_lag", "partition=").0, 3, "one lag series per partition");
    let (n_wm, _) = sum_series(&m, "adstream_watermark_seconds", "partition=");
    assert_eq!(n_wm, 3, "one watermark series per partition");
    let max_wm =
        m.iter().filter(|(k, _)| k.starts_with("adstream_watermark_seconds{")).map(|(_, v)| *v).fold(0.0, f64::max);
    let max_ts_s = chrono::DateTime::parse_from_rfc3339(&max_ts)
        .map(|t| t.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(&max_ts, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc().timestamp_micros())
        })
        .unwrap_or_else(|e| panic!("{max_ts}: {e}")) as f64
        / 1e6;
    assert!((max_wm - max_ts_s).abs() < 1e-3, "highest watermark {max_wm} = newest event {max_ts_s}");
    let batches = line("adstream_batches_written_total");
    assert!(batches >= 1.0 && line("adstream_window_rows_written_total") >= 1.0);
    assert_eq!(line("adstream_clickhouse_insert_duration_seconds_count"), batches, "one latency sample per batch");
    assert_eq!(line("adstream_clickhouse_insert_failures_total"), 0.0);
    assert_eq!(line("adstream_dependency_up{dependency=\"clickhouse\"}"), 1.0);

    // The numbers in ClickHouse are the oracle's, and what the counters said.
    let oracle = Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await;
    let (rows, late) = oracle.assert_matches_with_rejects(N, bad.len() as i64).await;
    let counted: f64 = m.iter().filter(|(k, _)| k.starts_with("adstream_events_counted_total{")).map(|(_, v)| v).sum();
    assert_eq!(counted, N as f64);
    println!(
        "ops: /metrics consumed {total}, counted {counted} in 6 format/type series, rejected {} by reason, {batches} batches; \
         {rows} windows equal the SQL oracle, {late} late",
        bad.len()
    );

    // ClickHouse goes away: 503 after --unhealthy-after, with the reason;
    // the outage is logged once, not once per retry.
    let lines_before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    proxy.close();
    let (after, body) = wait_health(addr, 503, Duration::from_secs(20));
    assert!(body.contains("ClickHouse unreachable"), "{body}");
    assert!(!body.contains("Kafka unreachable"), "{body}");
    println!("ops: proxy closed, /healthz 503 after {:.1} s: {}", after.as_secs_f64(), body.trim());
    let m = parse_metrics(&http_get(addr, "/metrics").1);
    assert_eq!(get(&m, "adstream_dependency_up{dependency=\"clickhouse\"}"), 0.0);
    assert_eq!(get(&m, "adstream_dependency_up{dependency=\"kafka\"}"), 1.0);
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let outage: Vec<&str> = log.lines().skip(lines_before).filter(|l| l.contains("ClickHouse:")).collect();
    assert_eq!(outage.len(), 1, "one line for the outage, reminders every 30 s:\n{}", outage.join("\n"));

    // It comes back on the same port: 200 again, and one line saying so.
    let proxy2 = Proxy::start(proxy.addr, clickhouse_host_port()).await;
    let (back, body) = wait_health(addr, 200, Duration::from_secs(20));
    println!("ops: ClickHouse back, /healthz 200 after {:.1} s: {}", back.as_secs_f64(), body.trim());
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().skip(lines_before).any(|l| l.contains("ClickHouse: reachable again")), "{log}");

    let child = child.take();
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = wait_with_limit(child, Duration::from_secs(30));
    assert!(out.status.success(), "SIGTERM exits 0: {}", std::fs::read_to_string(&log_path).unwrap());
    proxy2.close();
}

/// The console line for one oracle row, formatted here from the oracle's
/// numbers (not by adstream's code).
fn expected_line(ws: i64, campaign: &str, format: &str, m: &Metrics) -> String {
    expected_labeled_line(ws, 10, &[campaign, format], m)
}

/// [`expected_line`] with any labels in place of campaign and format, for a
/// window of `size_s` seconds.
fn expected_labeled_line(ws: i64, size_s: i64, labels: &[&str], m: &Metrics) -> String {
    let t = |s: i64, f: &str| chrono::DateTime::from_timestamp(s, 0).unwrap().format(f).to_string();
    let ctr = m.ctr.map_or("n/a".to_string(), |v| format!("{v:.1}%"));
    let ecpm = m.ecpm.map_or("n/a".to_string(), |v| format!("${v:.2}"));
    let revenue: f64 = m.revenue.parse().unwrap();
    let labels: String = labels.iter().map(|l| format!(" | {l}")).collect();
    format!(
        "{} ~ {}{labels} | impressions {} | clicks {} | CTR {ctr} | revenue ${revenue:.2} | eCPM {ecpm}",
        t(ws, "%Y-%m-%d %H:%M:%S"),
        t(ws + size_s, "%H:%M:%S"),
        m.impressions,
        m.clicks
    )
}

fn report(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = adstream();
    cmd.arg("report").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // stdout to a file, not a pipe: `--by segment` prints more than a pipe
    // holds, and run_ok reads the pipes only once the process has exited.
    let path = scratch_dir().join("report.out");
    cmd.stdout(std::fs::File::create(&path).unwrap()).stderr(Stdio::piped());
    let out = wait_with_limit(cmd.spawn().expect("spawn adstream report"), Duration::from_secs(60));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, tail(&out.stderr));
    std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn report_prints_the_latest_windows_as_the_oracle_has_them() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("rep"));
    let dir = scratch_dir();
    const N: u64 = 60_000; // 60 s of event time at 1000/s: 6 windows
    let jsonl = generate(&topic, N, 23, "0s", &dir);
    run_ok(
        adstream().args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--drain"]),
        Duration::from_secs(300),
    );
    let oracle = Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await;
    let (rows, _) = oracle.assert_matches(N).await;
    let oracle = oracle.windows().await;
    let starts: Vec<i64> = oracle.keys().map(|k| k.0).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert!(starts.len() >= 6, "{} windows", starts.len());
    let expect = |last: usize, campaign: Option<&str>, format: Option<&str>| -> Vec<String> {
        let keep = &starts[starts.len() - last..];
        oracle
            .iter()
            .filter(|(k, _)| keep.contains(&k.0))
            .filter(|(k, _)| campaign.is_none_or(|c| k.1 == c) && format.is_none_or(|f| k.2 == f))
            .map(|(k, m)| expected_line(k.0, &k.1, &k.2, m))
            .collect()
    };

    let got = report(&["--database", &db, "--last", "3"], &[]);
    assert_eq!(got, expect(3, None, None));
    assert_eq!(got.len(), 3 * 15, "5 campaigns x 3 formats per window");
    let got = report(&["--database", &db, "--last", "100", "--campaign", "C001", "--format", "banner"], &[]);
    assert_eq!(got, expect(starts.len(), Some("C001"), Some("banner")));
    println!("report: {} lines for C001/banner and 45 for --last 3 equal the oracle ({rows} rows)", got.len());
    println!("report: {}", got[0]);

    // Settings file < environment < flag, on a value the output shows.
    let file = dir.join("adstream.toml");
    std::fs::write(&file, format!("database = \"{db}\"\n[report]\nlast = 1\ncampaign = \"C002\"\n")).unwrap();
    let cfg = file.to_str().unwrap();
    let lines = |v: &[String]| v.len();
    assert_eq!(lines(&report(&["--config", cfg], &[])), 3, "file: 1 window x C002 x 3 formats");
    assert_eq!(lines(&report(&["--config", cfg], &[("ADSTREAM_LAST", "2")])), 6, "env beats file");
    assert_eq!(lines(&report(&["--config", cfg, "--last", "4"], &[("ADSTREAM_LAST", "2")])), 12, "flag beats env");
    assert_eq!(
        report(&[], &[("ADSTREAM_CONFIG", cfg)]),
        expect(1, Some("C002"), None),
        "ADSTREAM_CONFIG names the file"
    );
    assert_eq!(report(&["--database", &db], &[]).len(), 6 * 15, "without the file: the default --last 6");
    println!("report: --config precedence file (1) < env (2) < flag (4) windows, default 6");
}

#[test]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
fn generator_progress_rewrites_one_line_on_a_terminal_and_stays_plain_in_a_pipe() {
    let topic = unique("ad_events");
    // A pipe: a plain progress line every 10 s, so 12 s of sending (6,000
    // events at 500/s) shows one; no carriage returns; the summary on its
    // own line.
    let out = run_ok(
        adstream().args(["generate", "--topic", &topic, "--rate", "500", "--count", "6000"]),
        Duration::from_secs(60),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\r'), "{text:?}");
    let progress: Vec<&str> = text.lines().filter(|l| l.starts_with("Sent ")).collect();
    assert!(!progress.is_empty(), "no progress line in 12 s of sending to a pipe: {text:?}");
    for line in &progress {
        let sent: u64 = line["Sent ".len()..].split(' ').next().unwrap().replace(',', "").parse().unwrap();
        assert!(sent > 0 && sent < 6_000, "a progress line mid-stream: {line:?}");
        assert!(line.contains(" events | Rate: ") && line.ends_with(" events/sec | Failed: 0"), "{line:?}");
    }
    assert!(text.lines().last().unwrap().starts_with("Done: 6,000 events delivered"), "{text:?}");
    // A terminal (util-linux `script` gives the command a pty): the line is
    // rewritten in place with \r every second, and the summary still starts
    // a new line.
    let args = ["generate", "--topic", &topic, "--rate", "1500", "--count", "4500"];
    let bin = env!("CARGO_BIN_EXE_adstream");
    let cmdline = format!("{bin} {}", args.join(" "));
    let out = run_ok(
        std::process::Command::new("script")
            .args(["-qec", &cmdline, "/dev/null"])
            .env("ADSTREAM_BROKERS", brokers())
            .env("ADSTREAM_METRICS_ADDR", "off"),
        Duration::from_secs(60),
    );
    let tty = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(tty.contains("\rSent "), "{tty:?}");
    assert!(tty.contains("| Failed: 0"), "{tty:?}");
    assert!(tty.contains("\r\nDone: 4,500 events delivered"), "{tty:?}");
    println!(
        "progress: pipe {} plain progress line(s) in 12 s: {:?}; tty {} in-place updates",
        progress.len(),
        progress,
        tty.matches("\rSent ").count()
    );
}

/// `report` after `run --window 5s`: it finds the 5 s windows by itself
/// (it used to read only the 10 s view and print "no windows yet"), and
/// `--window 10s` asks for a size that is not there.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn report_reads_the_window_size_the_pipeline_wrote() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("rep5"));
    let dir = scratch_dir();
    const N: u64 = 20_000; // 20 s of event time at 1000/s: 4 windows of 5 s
    let jsonl = generate(&topic, N, 29, "0s", &dir);
    run_ok(
        adstream().args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--drain", "--window", "5s"]),
        Duration::from_secs(300),
    );
    let got = report(&["--database", &db, "--last", "100"], &[]);
    assert!(!got.is_empty(), "report printed nothing after run --window 5s");
    // Each line spans 5 s: "2025-12-10 00:00:05 ~ 00:00:10 | ...".
    for l in &got {
        let (start, end) = (&l[11..19], &l[22..30]);
        let secs = |t: &str| t.split(':').map(|x| x.parse::<i64>().unwrap()).fold(0, |a, x| a * 60 + x);
        assert_eq!(secs(end) - secs(start), 5, "{l}");
    }
    // All of it: the impressions on the lines are the impressions generated
    // (counted here from the raw JSONL; jitter 0 s, so none is late).
    let field = |l: &str, name: &str| -> u64 {
        let at = l.find(name).unwrap() + name.len();
        l[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let raw = std::fs::read_to_string(&jsonl).unwrap();
    let impressions = raw.lines().filter(|l| l.contains("\"event_type\":\"impression\"")).count() as u64;
    let clicks = raw.lines().filter(|l| l.contains("\"event_type\":\"click\"")).count() as u64;
    assert_eq!(got.iter().map(|l| field(l, "impressions ")).sum::<u64>(), impressions);
    assert_eq!(got.iter().map(|l| field(l, "clicks ")).sum::<u64>(), clicks);
    let windows: std::collections::BTreeSet<&str> = got.iter().map(|l| &l[..30]).collect();
    assert_eq!(windows.len(), 4, "{windows:?}");
    // The same through --window 5s, and nothing at a size never written.
    assert_eq!(report(&["--database", &db, "--last", "100", "--window", "5s"], &[]), got);
    assert!(report(&["--database", &db, "--window", "10s"], &[]).is_empty());
    println!("report after run --window 5s: {} lines over 4 windows of 5 s, {impressions} impressions", got.len());
}

/// One report line taken apart: (window text, labels, impressions, clicks,
/// revenue in cents as printed).
fn parse_report_line(l: &str) -> (String, Vec<String>, u64, u64, i64) {
    let fields: Vec<&str> = l.split(" | ").collect();
    let at = fields.iter().position(|f| f.starts_with("impressions ")).unwrap_or_else(|| panic!("{l}"));
    let num =
        |f: &str, name: &str| -> String { f.strip_prefix(name).unwrap_or_else(|| panic!("{name} in {l}")).to_string() };
    let impressions = num(fields[at], "impressions ").parse().unwrap();
    let clicks = num(fields[at + 1], "clicks ").parse().unwrap();
    let revenue = num(fields[at + 3], "revenue $");
    let (dollars, cents) = revenue.split_once('.').unwrap();
    let cents = dollars.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap();
    (fields[0].to_string(), fields[1..at].iter().map(|s| s.to_string()).collect(), impressions, clicks, cents)
}

/// Per window: (impressions, clicks, revenue cents as printed, lines).
fn totals_per_window(lines: &[String]) -> BTreeMap<String, (u64, u64, i64, i64)> {
    let mut out: BTreeMap<String, (u64, u64, i64, i64)> = BTreeMap::new();
    for l in lines {
        let (w, _, i, c, r) = parse_report_line(l);
        let e = out.entry(w).or_default();
        e.0 += i;
        e.1 += c;
        e.2 += r;
        e.3 += 1;
    }
    out
}

/// `report --by country | device | segment` on a real pipeline run (with
/// jitter, so some events are late and the oracle decides which): every
/// line equals the one formatted here from the oracle's rollup of the raw
/// events (lateness decided independently), the groups of each window add
/// up to its campaign x format lines, and --campaign / --format / --last
/// still apply.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn report_by_country_device_and_segment_adds_up_and_equals_the_oracle() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("repby"));
    let dir = scratch_dir();
    const N: u64 = 60_000; // 60 s of event time at 1000/s
    let jsonl = generate(&topic, N, 37, "12s", &dir);
    run_ok(
        adstream().args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--drain"]),
        Duration::from_secs(300),
    );
    let oracle = Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await;
    let late = oracle.late().await.len();
    assert!(late > 0, "jitter 12 s makes some events late (the oracle decides which)");
    let all = ["--database", db.as_str(), "--last", "100"];
    let by = |what: &'static str, extra: &[&str]| {
        // --last 100 (every window) unless `extra` says otherwise
        let mut a: Vec<&str> = if extra.contains(&"--last") { all[..2].to_vec() } else { all.to_vec() };
        a.extend(["--by", what]);
        a.extend(extra);
        report(&a, &[])
    };
    // Lines formatted here from the oracle's rows of `dims`, keeping the
    // keys `keep` accepts and showing the dimensions at `show` (indexes
    // into dims).
    let expect = |rows: &RollupRows, keep: &dyn Fn(&[&str]) -> bool, show: &[usize], last: usize| -> Vec<String> {
        let kept: Vec<(i64, Vec<&str>, &Metrics)> = rows
            .iter()
            .map(|((ws, key), m)| (*ws, key.split('|').collect::<Vec<&str>>(), m))
            .filter(|(_, parts, _)| keep(parts))
            .collect();
        let starts: std::collections::BTreeSet<i64> = kept.iter().map(|k| k.0).collect();
        let newest: Vec<i64> = starts.into_iter().rev().take(last).collect();
        let mut out: BTreeMap<(i64, Vec<String>), Metrics> = BTreeMap::new();
        for (ws, parts, m) in kept.into_iter().filter(|k| newest.contains(&k.0)) {
            let labels: Vec<String> = show.iter().map(|&i| parts[i].to_string()).collect();
            assert!(out.insert((ws, labels), m.clone()).is_none(), "one oracle row per key");
        }
        out.iter()
            .map(|((ws, labels), m)| {
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                expected_labeled_line(*ws, 10, &l, m)
            })
            .collect()
    };
    let any = |_: &[&str]| true;

    let cf = report(&all, &[]);
    let country = by("country", &[]);
    let device = by("device", &[]);
    let segment = by("segment", &[]);
    let o_country = oracle.rollup(&["country"], 10_000_000).await;
    let o_device = oracle.rollup(&["device"], 10_000_000).await;
    let o_segment = oracle.rollup(&["campaign_id", "ad_format", "country", "device"], 10_000_000).await;
    let windows = o_country.keys().map(|k| k.0).collect::<std::collections::BTreeSet<_>>().len();
    assert!(windows >= 6, "{windows} windows");
    assert_eq!(country, expect(&o_country, &any, &[0], 100), "--by country = the oracle's per-country rows");
    assert_eq!(country.len(), windows * 7, "7 countries per window");
    assert_eq!(device, expect(&o_device, &any, &[0], 100), "--by device = the oracle's per-device rows");
    assert_eq!(device.len(), windows * 2, "2 devices per window");
    assert_eq!(segment, expect(&o_segment, &any, &[0, 1, 2, 3], 100), "--by segment = the oracle's segments");
    println!(
        "report --by: {} country, {} device, {} segment lines over {windows} windows equal the oracle ({late} late events)",
        country.len(),
        device.len(),
        segment.len()
    );
    println!("report --by country: {}", country[0]);
    println!("report --by segment: {}", segment[0]);

    // The groups of each window add up to its campaign x format lines:
    // impressions and clicks exactly; revenue is printed in cents, so the
    // printed cents may differ by the rounding of each line (half a cent
    // each). The exact revenue is what the oracle comparison above checks.
    let want = totals_per_window(&cf);
    assert_eq!(want.len(), windows, "campaign x format lines cover the same windows");
    for (what, lines) in [("country", &country), ("device", &device), ("segment", &segment)] {
        let got = totals_per_window(lines);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: windows");
        for (w, g) in &got {
            let c = want[w];
            assert_eq!((g.0, g.1), (c.0, c.1), "{what} {w}: impressions and clicks add up to campaign x format");
            let slack = (g.3 + c.3 + 1) / 2; // cents: half a cent of rounding per line
            assert!((g.2 - c.2).abs() <= slack, "{what} {w}: revenue {} vs {} cents (slack {slack})", g.2, c.2);
        }
    }
    // ... and exactly, per window, against the oracle's own totals.
    let o_total = oracle.rollup(&[], 10_000_000).await;
    for ((ws, _), m) in &o_total {
        let w = expected_labeled_line(*ws, 10, &[], m)[..30].to_string();
        let (i, c, ..) = want[&w];
        assert_eq!((i, c), (m.impressions, m.clicks), "{w}: campaign x format lines = oracle total");
    }
    let imps: u64 = want.values().map(|v| v.0).sum();
    println!(
        "report --by: country, device and segment lines add up to the campaign x format lines ({imps} impressions)"
    );

    // Filters still apply, before summing; --last picks the newest windows.
    let o_cc = oracle.rollup(&["campaign_id", "ad_format", "country"], 10_000_000).await;
    let c001 = by("country", &["--campaign", "C001"]);
    assert_eq!(
        c001,
        expect(&oracle.rollup(&["campaign_id", "country"], 10_000_000).await, &|k: &[&str]| k[0] == "C001", &[1], 100)
    );
    let banner = by("device", &["--format", "banner", "--last", "2"]);
    assert_eq!(
        banner,
        expect(&oracle.rollup(&["ad_format", "device"], 10_000_000).await, &|k: &[&str]| k[0] == "banner", &[1], 2)
    );
    assert_eq!(banner.len(), 2 * 2);
    let one = by("country", &["--campaign", "C002", "--format", "interstitial", "--last", "1"]);
    assert_eq!(one, expect(&o_cc, &|k: &[&str]| k[0] == "C002" && k[1] == "interstitial", &[2], 1));
    assert_eq!(one.len(), 7);
    // The environment variable, and a size never written gives nothing.
    assert_eq!(report(&all, &[("ADSTREAM_REPORT_BY", "device")]), device);
    assert!(by("country", &["--window", "5s"]).is_empty());
    println!(
        "report --by: --campaign, --format, --last and ADSTREAM_REPORT_BY apply ({} + {} + {} lines)",
        c001.len(),
        banner.len(),
        one.len()
    );
}

/// The last 10 s window starts a minute (00:01:00), so a 1 m window starts
/// there too: `report` must still pick the 10 s size (the smallest window
/// at the latest start of the campaign x format rollup), for the default
/// and for `--by`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn report_picks_the_base_window_when_a_longer_one_starts_with_it() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("reptie"));
    let dir = scratch_dir();
    const N: u64 = 61_000; // 1000/s from 00:00:00: the last event at 00:01:00.999
    generate(&topic, N, 41, "0s", &dir);
    run_ok(
        adstream().args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--drain"]),
        Duration::from_secs(300),
    );
    let tie = scalar(&format!(
        "SELECT count() FROM {db}.ad_window_parts WHERE window_start = toDateTime64('2025-12-10 00:01:00', 3, 'UTC') \
         AND rollup_name IN ('campaign_id,ad_format:10s', 'campaign_id,ad_format:1m')"
    ))
    .await;
    assert!(tie > 0, "a 10 s and a 1 m window start at 00:01:00");
    for by in ["campaign-format", "country", "segment"] {
        let got = report(&["--database", &db, "--last", "1", "--by", by], &[]);
        assert!(!got.is_empty(), "--by {by}: nothing printed");
        for l in &got {
            assert!(l.starts_with("2025-12-10 00:01:00 ~ 00:01:10 | "), "--by {by}: {l}");
        }
    }
    println!("report: the 10 s window at 00:01:00 is reported, not the 1 m one that starts with it");
}
