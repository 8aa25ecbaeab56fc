//! Errors an operator must be told how to fix, on the real services.
//!
//! ClickHouse refusing for good: a column or the table dropped under a
//! running pipeline, and a wrong password. Each time
//! `adstream` must stop within a bound (not retry forever behind
//! backpressure), exit non-zero with one error line naming the table and
//! the fix, and leave the committed offsets where the durable data ends.
//! And a second `run` on the same metrics port.
//!
//! The wrong-password test starts its own chfront (scripts/chfront) with
//! CHFRONT_PASSWORD on a free port, so the shared ClickHouse of the test
//! run keeps no password.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long adstream may take to give up on a permanent error. Today's
/// retry loop would never give up; the fix gives up on the first answer.
const EXIT_BOUND: Duration = Duration::from_secs(45);

fn run_args<'a>(topic: &'a str, group: &'a str, db: &'a str) -> Vec<&'a str> {
    let mut a = vec!["run", "--topic", topic, "--group", group, "--database", db];
    a.extend(["--stats-interval", "1s", "--flush-interval", "200ms", "--idle-timeout", "1s"]);
    a.extend(["--allowed-lateness", "0s", "--kafka-option", "session.timeout.ms=6000"]);
    a
}

/// Polls `cond` every 200 ms; panics with `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lines of a run log that report the fatal error (text format:
/// `error: ...`).
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("error:")).collect()
}

/// Phase 1 written and committed in full, then `break_it` applied to the
/// database, then phase 2 produced: adstream must exit non-zero within
/// [`EXIT_BOUND`] with committed offsets still at the end of phase 1.
/// Returns the run log and how long the exit took after phase 2 began.
async fn break_mid_run(name: &str, break_it: &str) -> (String, Duration) {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("sinkerr"));
    let dir = scratch_dir();
    // 6,000 events at 1000 per simulated second: 6 s of event time.
    Generator::start(&topic, GenSpec::new(6_000, 71, "0s", 0), &dir).finish(Duration::from_secs(120));
    let phase1 = high_watermarks(&topic).expect("high watermarks");
    let log_path = dir.join(format!("{name}.log"));
    let mut run = KillOnDrop(Some(
        adstream()
            .args(run_args(&topic, &group, &db))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn adstream run"),
    ));
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut exited = || run.0.as_mut().and_then(|c| c.try_wait().expect("try_wait"));
    // --idle-timeout 1s writes every window of phase 1 once the partitions
    // are quiet; the windows stay open (an event may still come for them),
    // so the committed offsets stop at their start. Durable = what is
    // committed once nothing moves any more.
    let mut last = (None, Instant::now());
    wait_until("phase 1 to be written and its commits to settle", Duration::from_secs(90), || {
        if let Some(status) = exited() {
            panic!("{name}: adstream exited ({status}) before ClickHouse was broken:\n{}", log_text());
        }
        let now = committed_offsets(&group, &topic);
        if now != last.0 {
            last = (now, Instant::now());
        }
        now.is_some_and(|c| c.iter().all(|&o| o >= 0)) && last.1.elapsed() > Duration::from_secs(3)
    });
    let durable = last.0.expect("committed offsets");
    let rows_before = scalar(&format!("SELECT count() FROM {db}.ad_window_parts")).await;
    assert!(rows_before > 0);
    exec(&break_it.replace("{db}", &db)).await;
    // Phase 2, 10 s of event time later: rows that can no longer be written.
    let t0 = Instant::now();
    let mut spec = GenSpec::new(3_000, 72, "0s", 0);
    spec.start_time = "2025-12-10T00:00:16Z";
    Generator::start(&topic, spec, &dir).finish(Duration::from_secs(120));
    let phase2 = high_watermarks(&topic).expect("high watermarks");
    assert!(sum3(phase2) > sum3(phase1));
    let status = loop {
        if let Some(status) = exited() {
            break status;
        }
        assert!(
            t0.elapsed() < EXIT_BOUND,
            "{name}: adstream still running {EXIT_BOUND:?} after ClickHouse refused its writes for good:\n{}",
            tail(log_text().as_bytes())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = t0.elapsed();
    let log = log_text();
    assert!(!status.success(), "{name}: exit status {status}, expected non-zero:\n{}", tail(log.as_bytes()));
    assert_eq!(
        committed_offsets(&group, &topic),
        Some(durable),
        "{name}: offsets committed past the durable data (phase 1 ends at {phase1:?}, the topic at {phase2:?})"
    );
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "{name}: one error line expected:\n{log}");
    assert!(log.contains("1 permanent)"), "{name}: the final stats count the permanent error:\n{log}");
    (errors[0].to_string(), took)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn dropped_column_mid_run_stops_with_the_table_and_the_fix_and_commits_nothing_more() {
    let (line, took) = break_mid_run("drop-column", "ALTER TABLE {db}.ad_window_parts DROP COLUMN clicks").await;
    for want in ["ad_window_parts", "NO_SUCH_COLUMN_IN_TABLE", "permanent", "fix:", "ADD/MODIFY COLUMN"] {
        assert!(line.contains(want), "missing {want:?} in: {line}");
    }
    println!(
        "dropped column: exit non-zero {:.1} s after phase 2 began, offsets at phase 1's end; {line}",
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn dropped_table_mid_run_stops_with_the_table_and_the_fix_and_commits_nothing_more() {
    let (line, took) = break_mid_run(
        "drop-table",
        "DROP TABLE {db}.ad_window_parts SETTINGS check_table_dependencies = 0, check_referential_table_dependencies = 0",
    )
    .await;
    for want in ["ad_window_parts", "UNKNOWN_TABLE", "permanent", "fix:", "adstream migrate"] {
        assert!(line.contains(want), "missing {want:?} in: {line}");
    }
    println!(
        "dropped table: exit non-zero {:.1} s after phase 2 began, offsets at phase 1's end; {line}",
        took.as_secs_f64()
    );
}

/// A chfront of its own (password `right`, user `default`) on a free port,
/// stopped on drop.
struct PasswordFront {
    child: Child,
    url: String,
}

impl PasswordFront {
    fn start(dir: &Path) -> Option<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/chfront/bin/python");
        if !python.exists() {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("chfront-password.log")).unwrap();
        let child = Command::new(python)
            .arg(root.join("scripts/chfront/chfront.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--max-concurrent", "1", "--data"])
            .arg(dir.join("chfront-data"))
            .env("CHFRONT_PASSWORD", "right")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chfront");
        let front = PasswordFront { child, url: format!("http://127.0.0.1:{port}") };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "chfront with a password did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(front)
    }
}

impl Drop for PasswordFront {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn wrong_password_fails_fast_with_one_line_and_commits_nothing() {
    let dir = scratch_dir();
    let Some(front) = PasswordFront::start(&dir) else {
        println!("wrong password: SKIPPED (.venv/chfront missing: run scripts/clickhouse.sh up once)");
        return;
    };
    let db = unique("sinkpw");
    let with_password = |pw: &str| {
        let mut c = adstream();
        c.env("ADSTREAM_CLICKHOUSE_URL", &front.url).env("ADSTREAM_CLICKHOUSE_PASSWORD", pw);
        c
    };
    // The right password works: chfront checks it, adstream sends it.
    let out = with_password("right").args(["migrate", "--database", &db]).output().unwrap();
    assert!(out.status.success(), "migrate with the right password: {}", tail(&out.stderr));

    let check = |what: &str, stderr: &str, took: Duration| {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{what}: one error line expected:\n{stderr}");
        let line = lines[0];
        for want in ["AUTHENTICATION_FAILED", "permanent", "fix:", "ADSTREAM_CLICKHOUSE_PASSWORD", &front.url] {
            assert!(line.contains(want), "{what}: missing {want:?} in: {line}");
        }
        assert!(!line.contains("forgot password") && !line.contains("wrong-pw"), "{what}: {line}");
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}");
        println!("wrong password, {what}: exit non-zero in {:.1} s: {line}", took.as_secs_f64());
    };
    let t0 = Instant::now();
    let out = with_password("wrong-pw").args(["migrate", "--database", &db]).output().unwrap();
    assert!(!out.status.success());
    check("migrate", &String::from_utf8_lossy(&out.stderr), t0.elapsed());

    let (topic, group) = (unique("ad_events"), unique("g"));
    Generator::start(&topic, GenSpec::new(1_000, 73, "0s", 0), &dir).finish(Duration::from_secs(120));
    let t0 = Instant::now();
    let child = with_password("wrong-pw")
        .args(run_args(&topic, &group, &db))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_limit(child, EXIT_BOUND);
    assert!(!out.status.success());
    check("run", &String::from_utf8_lossy(&out.stderr), t0.elapsed());
    assert_eq!(committed_offsets(&group, &topic), Some([-1; 3]), "nothing may be committed");
}

/// Two `run` processes on one host, both on the same metrics port: the
/// second fails at once with one line that says so and gives the fix.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn a_second_run_on_the_same_metrics_port_says_so_and_how_to_fix_it() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let (topic, group) = (unique("ad_events"), unique("g"));
    let args = ["run", "--sink", "console", "--topic", &topic, "--group", &group, "--metrics-addr", &addr];
    let mut first =
        KillOnDrop(Some(adstream().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()));
    wait_until("the first run to serve metrics", Duration::from_secs(60), || {
        if let Some(s) = first.0.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("the first run exited: {s}");
        }
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let out = wait_with_limit(
        adstream().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for want in ["already in use", "another `adstream run` on this host", "127.0.0.1:0", "--metrics-addr off", &addr] {
        assert!(lines[0].contains(want), "missing {want:?} in: {}", lines[0]);
    }
    println!("second run on {addr}: {}", lines[0]);
}

/// `generate` exits 3 when deliveries fail (2 is a usage error): here every
/// message times out in the producer's queue after 1 ms.
#[test]
#[ignore = "needs Kafka: run scripts/test.sh"]
fn generate_exits_3_when_deliveries_fail() {
    let topic = unique("ad_events");
    let out = wait_with_limit(
        adstream()
            .args(["generate", "--topic", &topic, "--count", "2000", "--rate", "0"])
            .args(["--kafka-option", "message.timeout.ms=1", "--kafka-option", "linger.ms=0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("Failed deliveries: 0"), "no delivery failed, the test proves nothing: {stdout}");
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{}", tail(&out.stderr));
    println!("generate with failed deliveries: exit 3: {}", stdout.trim());
}
