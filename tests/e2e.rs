//! End to end on the real thing: `adstream generate` → Apache Kafka →
//! `adstream run` → ClickHouse, checked against a SQL oracle over the raw
//! events. Needs the services `scripts/test.sh` starts, hence `#[ignore]`
//! for a bare `cargo test`; the README's test command runs them.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::Message;

const NEEDS: &str = "needs Kafka and ClickHouse: run scripts/test.sh";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn every_window_equals_the_sql_oracle_and_a_new_group_replays_exactly() {
    let _ = NEEDS;
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("e2e"));
    let dir = scratch_dir();
    const N: u64 = 200_000;
    // 200k events at 1000 events per simulated second: 200 s, 20 windows;
    // 2 s of jitter makes every partition out of order.
    let jsonl = generate(&topic, N, 42, "2s", &dir);
    let t0 = Instant::now();
    run_ok(adstream().args(run_args(&topic, &group, &db)).arg("--drain"), Duration::from_secs(300));
    let run_secs = t0.elapsed().as_secs_f64();

    let oracle = Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await;
    let (rows, late) = oracle.assert_matches(N).await;
    let windows = scalar(&format!("SELECT uniqExact(window_start) FROM {db}.ad_metrics_10s")).await;
    assert!(windows >= 12, "spans {windows} windows");
    let rows_10s = scalar(&format!("SELECT count() FROM {db}.ad_metrics_10s")).await;
    assert_eq!(rows_10s, windows * 15, "5 campaigns x 3 formats in every window");
    let segments = scalar(&format!("SELECT uniqExact(country, device) FROM {db}.ad_metrics_segments_10s")).await;
    assert_eq!(segments, 14, "7 countries x 2 devices");
    println!(
        "e2e: {N} events, {windows} windows, {rows} rows of the five rollups equal to the SQL oracle, {late} late, run took {run_secs:.1} s"
    );

    // (A restart with the same group changing no row is checked in
    // tests/reliability.rs.)
    // A new group replays the topic from the start: idempotent writes keep
    // the numbers exact (no double counting).
    run_ok(adstream().args(run_args(&topic, &unique("g2"), &db)).arg("--drain"), Duration::from_secs(300));
    oracle.assert_matches(N).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn sigterm_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("e2e"));
    let dir = scratch_dir();
    const N: u64 = 150_000;
    // 3 s of jitter against 1 s of allowed lateness: a few percent of the
    // events are late, and the restart must reproduce exactly that set.
    let jsonl = generate(&topic, N, 7, "3s", &dir);
    let lateness = ["--allowed-lateness", "1s"];

    let log = std::fs::File::create(dir.join("run1.log")).unwrap();
    let mut child = KillOnDrop(Some(
        adstream()
            .args(run_args(&topic, &group, &db))
            .args(["--flush-interval", "50ms"])
            .args(lateness)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    // Wait for the first windows to be durable, then SIGTERM.
    let t0 = Instant::now();
    loop {
        let n = try_scalar(&format!("SELECT count() FROM {db}.ad_window_parts")).await.unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no window written within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let child = child.take();
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let t1 = Instant::now();
    let out = wait_with_limit(child, Duration::from_secs(20));
    let log = std::fs::read_to_string(dir.join("run1.log")).unwrap();
    assert!(out.status.success(), "SIGTERM must exit 0, got {}\n{log}", out.status);
    let visible = scalar(&format!("SELECT sum(impressions + clicks) FROM {db}.ad_metrics_10s")).await;
    println!("sigterm: exited 0 in {:.2} s with {visible} of {N} events visible", t1.elapsed().as_secs_f64());

    run_ok(adstream().args(run_args(&topic, &group, &db)).args(lateness).arg("--drain"), Duration::from_secs(300));
    let (rows, late) = Oracle::load(&db, &topic, &[&jsonl], "1s").await.assert_matches(N).await;
    assert!(late > 0, "the stream must exercise the late path");
    println!("sigterm: after restart {rows} rows equal the oracle, {late} late");
}

/// Writes a whole topic's messages into a JSONL file; returns the count.
fn dump_topic(topic: &str, path: &std::path::Path) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let messages = read_topic(topic);
    for m in &messages {
        out.write_all(m.payload().unwrap()).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    messages.len() as u64
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn self_feed_counts_exactly_what_it_produced() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("e2e"));
    let dir = scratch_dir();
    const N: u64 = 30_000;
    let out = run_ok(
        adstream().args(run_args(&topic, &group, &db)).args([
            "--self-feed",
            "0",
            "--self-feed-count",
            &N.to_string(),
            "--seed",
            "9",
            "--jitter",
            "1s",
            "--drain",
        ]),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("self-feed: {N} events delivered, 0 failed")), "{}", tail(&out.stderr));
    let jsonl = dir.join("topic.jsonl");
    assert_eq!(dump_topic(&topic, &jsonl), N, "the topic holds what the self-feed produced");
    let (rows, late) = Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await.assert_matches(N).await;
    println!("self-feed: {N} events, {rows} rows equal the oracle, {late} late");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn console_sink_prints_every_event_once() {
    let (topic, group) = (unique("ad_events"), unique("g"));
    let dir = scratch_dir();
    const N: u64 = 20_000;
    generate(&topic, N, 11, "0s", &dir);
    let out = run_ok(
        adstream().args(["run", "--topic", &topic, "--group", &group, "--sink", "console", "--drain"]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A changelog: the last line per window × campaign × format × partition
    // holds that cell's total.
    let mut latest: std::collections::BTreeMap<String, u64> = Default::default();
    let mut lines = 0;
    for line in stdout.lines() {
        for label in ["impressions ", "clicks ", "CTR ", "revenue $", "eCPM ", "partition "] {
            assert!(line.contains(label), "{line}");
        }
        let num = |label: &str| -> u64 {
            let rest = &line[line.find(label).unwrap() + label.len()..];
            rest.split(' ').next().unwrap().parse().unwrap()
        };
        let fields: Vec<&str> = line.split(" | ").collect();
        let key = format!("{} {} {} {}", fields[0], fields[1], fields[2], num("partition "));
        latest.insert(key, num("impressions ") + num("clicks "));
        lines += 1;
    }
    let total: u64 = latest.values().sum();
    assert_eq!(total, N, "the latest console rows add up to the events produced");
    println!("console: {lines} lines, {total} events");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn migrate_is_idempotent() {
    let db = unique("e2e");
    for _ in 0..2 {
        let out = run_ok(adstream().args(["migrate", "--database", &db]), Duration::from_secs(60));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("schema applied: database {db}")));
    }
    let tables = tsv(&format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")).await;
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        vec![
            "ad_ctr_abandoned",
            "ad_ctr_by_format_10s",
            "ad_ctr_model",
            "ad_ctr_predictions",
            "ad_ctr_quality",
            "ad_ctr_quality_10s",
            "ad_ctr_settled",
            "ad_late_events",
            "ad_late_events_log",
            "ad_metrics",
            "ad_metrics_10s",
            "ad_metrics_1h",
            "ad_metrics_1m",
            "ad_metrics_latest",
            "ad_metrics_segments_10s",
            "ad_metrics_segments_1h",
            "ad_rejected_events",
            "ad_rejected_events_log",
            "ad_rollup_metrics",
            "ad_source_partitions",
            "ad_window_parts"
        ]
    );
    let bad = adstream().args(["migrate", "--database", "x; DROP TABLE y"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a plain identifier"));
}

/// A database made by an adstream from before rollups (its schema as it
/// was, rows in it): `migrate` moves the old window table aside, copies its
/// rows in as the campaign × format rollup, adds country and device to the
/// late log, and `ad_metrics_10s` shows the same numbers as before.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn migrate_upgrades_a_database_from_before_rollups() {
    let db = unique("e2e");
    exec(&format!("CREATE DATABASE {db}")).await;
    exec(&format!(
        "CREATE TABLE {db}.ad_window_parts (window_start DateTime64(3, 'UTC'), window_end DateTime64(3, 'UTC'), \
         campaign_id LowCardinality(String), ad_format LowCardinality(String), topic LowCardinality(String), \
         partition Int32, impressions UInt64, clicks UInt64, revenue Decimal(18, 6), version UInt64, is_final Bool, \
         inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree(version) \
         PARTITION BY toYYYYMM(window_start) ORDER BY (window_start, window_end, campaign_id, ad_format, topic, partition)"
    ))
    .await;
    exec(&format!(
        "CREATE TABLE {db}.ad_late_events_log (topic LowCardinality(String), partition Int32, offset Int64, \
         event_id String, event_time DateTime64(6, 'UTC'), window_start DateTime64(3, 'UTC'), \
         campaign_id LowCardinality(String), ad_format LowCardinality(String), event_type LowCardinality(String), \
         revenue Decimal(18, 6), watermark DateTime64(6, 'UTC'), reason LowCardinality(String), \
         inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY (topic, partition, offset)"
    ))
    .await;
    // Two partitions' rows of one window, one of them in two versions.
    exec(&format!(
        "INSERT INTO {db}.ad_window_parts (window_start, window_end, campaign_id, ad_format, topic, partition, \
         impressions, clicks, revenue, version, is_final) VALUES \
         ('2025-12-10 00:46:00', '2025-12-10 00:46:10', 'C001', 'banner', 't', 0, 40, 1, 0.05, 20, false), \
         ('2025-12-10 00:46:00', '2025-12-10 00:46:10', 'C001', 'banner', 't', 0, 50, 2, 0.11, 31, true), \
         ('2025-12-10 00:46:00', '2025-12-10 00:46:10', 'C001', 'banner', 't', 1, 35, 2, 0.12, 41, true)"
    ))
    .await;
    exec(&format!(
        "INSERT INTO {db}.ad_late_events_log (topic, partition, offset, event_id, event_time, window_start, \
         campaign_id, ad_format, event_type, revenue, watermark, reason) VALUES \
         ('t', 0, 99, 'e-late', '2025-12-10 00:46:01', '2025-12-10 00:46:00', 'C001', 'banner', 'impression', 0, \
          '2025-12-10 00:47:00', 'window_closed')"
    ))
    .await;
    for _ in 0..2 {
        run_ok(adstream().args(["migrate", "--database", &db]), Duration::from_secs(60));
    }
    let got = tsv(&format!(
        "SELECT window_start, campaign_id, ad_format, impressions, clicks, revenue FROM {db}.ad_metrics_10s"
    ))
    .await;
    assert_eq!(got.trim(), "2025-12-10 00:46:00.000\tC001\tbanner\t85\t4\t0.23", "the origin's row, upgraded");
    let late = tsv(&format!("SELECT event_id, country, device FROM {db}.ad_late_events")).await;
    assert_eq!(late.trim_end_matches('\n'), "e-late\t\t", "old late rows kept, with empty country and device");
    let tables =
        tsv(&format!("SELECT name FROM system.tables WHERE database = '{db}' AND name LIKE '%pre_rollups%'")).await;
    assert_eq!(tables.trim(), "ad_window_parts_pre_rollups_copied", "the old table is kept for the operator to drop");
    println!("upgrade: the pre-rollup window rows are the campaign_id,ad_format:10s rollup now");
}
