//! Failure injection on the real thing: `adstream run` is SIGKILLed,
//! SIGTERMed, scaled out and in, and loses its Kafka broker or its
//! ClickHouse mid-stream; afterwards every row of `ad_metrics_10s` must equal
//! the SQL oracle over the raw events (nothing lost, nothing counted twice).
//!
//! The broker and ClickHouse tests stop and start the services of the test
//! run through `scripts/kafka.sh` / `scripts/clickhouse.sh`, so every test in
//! this file takes [`SERVICES`] first: none of them may run while a service
//! is down. Cargo runs test binaries one after another, so keeping the
//! disruptive tests in this file alone is enough to keep other tests out of
//! the way. With `ADSTREAM_TEST_EXTERNAL_SERVICES=1` (services not ours to
//! stop) those two tests skip.
//!
//! Every run uses a short consumer-group session (6 s instead of 45 s) so
//! that the group notices a SIGKILLed member quickly; that is a test-speed
//! choice, not something the pipeline relies on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Serialises the tests of this file: each may take a service down.
static SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A short group session, so that the group notices a SIGKILLed member
/// quickly: a test-speed choice, not something the pipeline relies on.
const FAST_GROUP: [&str; 4] =
    ["--kafka-option", "session.timeout.ms=6000", "--kafka-option", "heartbeat.interval.ms=1000"];

/// 3 s of jitter against 1 s of allowed lateness: a few percent of the
/// events are late, and every replay after a kill, outage or rebalance must
/// classify exactly the same ones as late.
const JITTER: &str = "3s";
const LATENESS: &str = "1s";

/// A fresh topic, group and database, and `run` on them with the fast
/// group session and [`LATENESS`] (plus `extra`).
fn pipeline(extra: &[&str]) -> Pipeline {
    pipeline_on(&unique("ad_events"), extra)
}

/// [`pipeline`] on an existing topic.
fn pipeline_on(topic: &str, extra: &[&str]) -> Pipeline {
    let mut flags = FAST_GROUP.to_vec();
    flags.extend(["--allowed-lateness", LATENESS]);
    flags.extend(extra);
    Pipeline::new(topic, &unique("g"), &unique("rel"), &flags)
}

fn produced(topic: &str) -> i64 {
    high_watermarks(topic).map(sum3).unwrap_or(0)
}

/// Waits until the topic exists (the generator creates it), so runners
/// subscribe to a topic with its 3 partitions.
fn wait_for_topic(topic: &str) {
    wait_until("the generator to create the topic", Duration::from_secs(60), || produced(topic) > 0);
}

const NO_STATS: &str = "the run log has no stats line with `events in N` (--stats-interval 1s)";

/// The last `events in N` of a runner's stats lines.
fn events_in(log: &str) -> Option<u64> {
    let at = log.rfind("events in ")?;
    log[at + "events in ".len()..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn kill_9_at_three_random_points_loses_and_duplicates_nothing() {
    let _serial = SERVICES.lock().await;
    let t_test = Instant::now();
    let pipe = pipeline(&[]);
    let topic = &pipe.topic;
    let dir = scratch_dir();
    const N: u64 = 500_000;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
    // One point in each third of [10%, 90%] of the stream. A restart takes
    // a few seconds (the group waits out the dead member's session), so a
    // kill lands at its point or, if the restarted process has not written
    // anything by then, as soon as it has.
    let third = N as i64 * 8 / 30;
    let points: Vec<i64> = (0..3).map(|k| N as i64 / 10 + k * third + rng.random_range(0..third)).collect();
    println!("kill -9: {N} events at 20k/s, SIGKILL when the topic holds {points:?} events (seeded)");

    let gen = Generator::start(topic, GenSpec::new(N, 101, JITTER, 20_000), &dir);
    wait_for_topic(topic);
    let rss = RssWatch::new();
    let mut run = pipe.start("run0", &[], &dir);
    rss.watch(run.pid());
    let mut gen = Some(gen);
    let mut jsonl = None;
    for (i, &point) in points.iter().enumerate() {
        // Kill only while this process is consuming: it has written and
        // committed something since it started, and the topic has reached
        // the kill point.
        let before = pipe.committed();
        wait_until(&format!("kill point {i}"), Duration::from_secs(180), || {
            run.assert_alive("before its SIGKILL");
            produced(topic) >= point && pipe.committed() > before
        });
        let (p, c) = (produced(topic), pipe.committed());
        let alive_for = run.started.elapsed().as_secs_f64();
        run.kill9();
        println!("kill -9 #{}: after {alive_for:.1} s, topic at {p} events, group committed {c}", i + 1);
        if i + 1 == points.len() {
            // The last restart drains the topic once everything is in it.
            jsonl = Some(gen.take().unwrap().finish(Duration::from_secs(300)));
            run = pipe.start("run-drain", &["--drain"], &dir);
        } else {
            run = pipe.start(&format!("run{}", i + 1), &[], &dir);
        }
        rss.watch(run.pid());
    }
    run.wait_ok(Duration::from_secs(300));
    let jsonl = jsonl.unwrap();
    let (_, rows, late) = pipe.check_oracle(&[&jsonl], N).await;
    println!(
        "kill -9: 3 SIGKILLs, {N} events checked, {rows} rows equal the SQL oracle ({late} late), no duplicates or gaps; \
         peak RSS {:.0} MiB; took {:.1} s",
        rss.peak_mib(),
        t_test.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn broker_restart_mid_stream_keeps_adstream_running_and_exact() {
    let _serial = SERVICES.lock().await;
    if external_services() {
        println!("broker restart: SKIPPED (ADSTREAM_TEST_EXTERNAL_SERVICES=1: the broker is not ours to stop)");
        return;
    }
    let t_test = Instant::now();
    let pipe = pipeline(&[]);
    let (topic, group) = (&pipe.topic, &pipe.group);
    let dir = scratch_dir();
    const N: u64 = 300_000;
    let gen = Generator::start(topic, GenSpec::new(N, 202, JITTER, 20_000), &dir);
    wait_for_topic(topic);
    let rss = RssWatch::new();
    let mut run = pipe.start("run", &[], &dir);
    rss.watch(run.pid());
    wait_until("adstream to commit and the stream to reach 30%", Duration::from_secs(120), || {
        run.assert_alive("before the broker restart");
        pipe.committed() > 0 && produced(topic) >= N as i64 * 3 / 10
    });
    let (h0, c0) = (high_watermarks(topic).unwrap(), committed_offsets(group, topic).unwrap());

    let t_out = Instant::now();
    let (outage, took_down) = Outage::begin("kafka");
    for _ in 0..10 {
        run.assert_alive("while the broker was down");
        std::thread::sleep(Duration::from_secs(1));
    }
    let took_up = outage.end();
    let outage_s = t_out.elapsed().as_secs_f64();
    run.assert_alive("after the broker came back");
    let (h1, c1) = (high_watermarks(topic).unwrap(), committed_offsets(group, topic).unwrap());
    assert!(h1.iter().zip(&h0).all(|(a, b)| a >= b), "the topic kept its data: {h0:?} -> {h1:?}");
    assert!(c1.iter().zip(&c0).all(|(a, b)| a >= b), "the group kept its offsets: {c0:?} -> {c1:?}");
    println!(
        "broker restart: graceful down ({:.1} s) at {} events produced / {} committed, 10 s stopped, up ({:.1} s): \
         no broker for {outage_s:.1} s; adstream pid {} alive throughout",
        took_down.as_secs_f64(),
        sum3(h0),
        sum3(c0),
        took_up.as_secs_f64(),
        run.pid()
    );

    let jsonl = gen.finish(Duration::from_secs(300));
    // Resumed: the same process reads on to the end of the stream.
    let Finish { caught_up, sigterm_exits, rows, late } = pipe.finish(vec![run], &[&jsonl], N, &dir, &rss).await;
    println!(
        "broker restart: resumed and caught up (committed {caught_up} of {N}), SIGTERM exit 0 in {:.1} s; \
         {N} events checked, {rows} rows equal the SQL oracle ({late} late); peak RSS {:.0} MiB; took {:.1} s",
        sigterm_exits[0].as_secs_f64(),
        rss.peak_mib(),
        t_test.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn clickhouse_outage_holds_offsets_and_memory_then_catches_up() {
    let _serial = SERVICES.lock().await;
    if external_services() {
        println!("ClickHouse outage: SKIPPED (ADSTREAM_TEST_EXTERNAL_SERVICES=1: ClickHouse is not ours to stop)");
        return;
    }
    let t_test = Instant::now();
    let topic = unique("ad_events");
    let dir = scratch_dir();
    const N: u64 = 400_000;
    let gen = Generator::start(&topic, GenSpec::new(N, 303, JITTER, 20_000), &dir);
    wait_for_topic(&topic);
    // End-of-partition events on (they are off by default): with them,
    // librdkafka's own resume position after the backpressure pause is one
    // past the last message whenever an EOF came last, and only adstream's
    // seek on resume keeps the message after it (without that seek this
    // test lost one event per partition, every run).
    let pipe = pipeline_on(&topic, &["--kafka-option", "enable.partition.eof=true"]);
    let (group, db) = (&pipe.group, &pipe.db);
    // A second pipeline (own group and database) lives through the same
    // outage but is SIGKILLed at its end: had it committed anything it had
    // not written, its restart would skip those events and miss the oracle.
    let pipe_k = pipeline_on(&topic, &[]);
    let rss = RssWatch::new();
    let mut run = pipe.start("run", &[], &dir);
    let mut run_k = pipe_k.start("killed", &[], &dir);
    rss.watch(run.pid());
    rss.watch(run_k.pid());
    wait_until("both pipelines to commit and the stream to reach 20%", Duration::from_secs(120), || {
        run.assert_alive("before the ClickHouse outage");
        run_k.assert_alive("before the ClickHouse outage");
        pipe.committed() > 0 && pipe_k.committed() > 0 && produced(&topic) >= N as i64 / 5
    });
    // FINAL: background merges of the ReplacingMergeTree may collapse raw
    // rows at any time; the set of (window, key, partition) rows only grows.
    let rows_before = scalar(&format!("SELECT count() FROM {db}.ad_window_parts FINAL")).await;
    let rss_before = vm_hwm_kb(run.pid()).unwrap_or(0) as f64 / 1024.0;

    let t_out = Instant::now();
    let (outage, took_down) = Outage::begin("clickhouse");
    // Let an async commit of the last batch written before the outage land.
    std::thread::sleep(Duration::from_secs(2));
    let frozen = committed_offsets(group, &topic).expect("committed offsets");
    let (mut in_at_15s, mut rss_at_15s) = (None, 0.0);
    while t_out.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        run.assert_alive("while ClickHouse was down");
        let now = committed_offsets(group, &topic).expect("committed offsets");
        assert_eq!(now, frozen, "offsets committed while nothing could be written");
        if in_at_15s.is_none() && t_out.elapsed() >= Duration::from_secs(15) {
            in_at_15s = events_in(&run.log_text());
            rss_at_15s = vm_hwm_kb(run.pid()).unwrap_or(0) as f64 / 1024.0;
        }
    }
    let in_at_30s = events_in(&run.log_text());
    let rss_at_30s = vm_hwm_kb(run.pid()).unwrap_or(0) as f64 / 1024.0;
    let produced_during = produced(&topic);
    run_k.assert_alive("through the ClickHouse outage");
    run_k.kill9();
    let took_up = outage.end();
    let outage_s = t_out.elapsed().as_secs_f64();
    let rows_after = scalar(&format!("SELECT count() FROM {db}.ad_window_parts FINAL")).await;
    assert!(rows_after >= rows_before, "ClickHouse kept its data: {rows_before} rows -> {rows_after}");
    let failures = run.log_text().matches("sink write failed").count();
    assert!(failures > 0, "the outage must have made writes fail (and be retried)");
    // Backpressure: once the batch queue is full the consume loop stops
    // polling, so between 15 s and 30 s into the outage nothing is consumed
    // and memory stays where librdkafka's prefetch bound puts it.
    let (a, b) = (in_at_15s.expect(NO_STATS), in_at_30s.expect(NO_STATS));
    assert_eq!(a, b, "events consumed between 15 s and 30 s into the ClickHouse outage");
    assert!(produced_during > b as i64 + 50_000, "the topic held more to consume ({produced_during} vs {b})");
    assert!(
        rss_at_30s - rss_at_15s < 32.0,
        "memory grew from {rss_at_15s:.0} MiB to {rss_at_30s:.0} MiB while ClickHouse was down"
    );
    println!(
        "ClickHouse outage: down ({:.1} s) for {outage_s:.1} s in all, up ({:.1} s); committed offsets frozen \
         at {frozen:?} throughout; events consumed at 15 s / 30 s into the outage: {a} / {b} (topic at \
         {produced_during}); {failures} write-failure warnings (first 3, then every 20th) and retries; peak RSS \
         {rss_before:.0} MiB before, {rss_at_15s:.0} MiB at 15 s, {rss_at_30s:.0} MiB at 30 s; rows kept \
         {rows_before} -> {rows_after}; the second pipeline SIGKILLed at the end of the outage",
        took_down.as_secs_f64(),
        took_up.as_secs_f64(),
    );

    let jsonl = gen.finish(Duration::from_secs(300));
    let restart_k = pipe_k.start("killed-restart-drain", &["--drain"], &dir);
    rss.watch(restart_k.pid());
    let Finish { caught_up, sigterm_exits, rows, late } = pipe.finish(vec![run], &[&jsonl], N, &dir, &rss).await;
    restart_k.wait_ok(Duration::from_secs(300));
    let (_, rows_k, late_k) = pipe_k.check_oracle(&[&jsonl], N).await;
    println!(
        "ClickHouse outage: caught up (committed {caught_up} of {N}), SIGTERM exit 0 in {:.1} s; {N} events \
         checked, {rows} rows equal the SQL oracle ({late} late); the pipeline SIGKILLed at the end of the outage \
         and restarted: {rows_k} rows equal the oracle ({late_k} late); peak RSS {:.0} MiB; took {:.1} s",
        sigterm_exits[0].as_secs_f64(),
        rss.peak_mib(),
        t_test.elapsed().as_secs_f64()
    );
}

/// Partitions each runner's log says it was assigned, in order.
fn assignments(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find("Assigned([").map(|at| l[at..].split(')').next().unwrap_or("").to_string() + ")"))
        .collect()
}

/// The set of partitions ever assigned to a runner.
fn partitions_seen(log: &str) -> std::collections::BTreeSet<i32> {
    assignments(log)
        .iter()
        .flat_map(|a| {
            a.trim_start_matches("Assigned([")
                .trim_end_matches("])")
                .split(", ")
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn scale_out_to_three_and_back_rebuilds_moved_partitions_exactly() {
    let _serial = SERVICES.lock().await;
    let t_test = Instant::now();
    let pipe = pipeline(&[]);
    let topic = &pipe.topic;
    let dir = scratch_dir();
    const N: u64 = 300_000;
    let gen = Generator::start(topic, GenSpec::new(N, 404, JITTER, 15_000), &dir);
    wait_for_topic(topic);
    let rss = RssWatch::new();
    let mut a = pipe.start("a", &[], &dir);
    let mut b = pipe.start("b", &[], &dir);
    rss.watch(a.pid());
    rss.watch(b.pid());
    wait_until("two members to commit and the stream to reach 25%", Duration::from_secs(120), || {
        a.assert_alive("before the scale-out");
        b.assert_alive("before the scale-out");
        pipe.committed() > 0 && produced(topic) >= N as i64 / 4
    });
    let joined_at = produced(topic);
    let mut c = pipe.start("c", &[], &dir);
    rss.watch(c.pid());
    wait_until("the third member to get a partition and the stream to reach 60%", Duration::from_secs(120), || {
        c.assert_alive("after joining");
        !partitions_seen(&c.log_text()).is_empty() && produced(topic) >= N as i64 * 6 / 10
    });
    let before_leave = pipe.committed();
    wait_until("the group to commit with three members", Duration::from_secs(60), || pipe.committed() > before_leave);
    let left_at = produced(topic);
    let a_log_at_leave = assignments(&a.log_text());
    let (status, took) = a.sigterm(Duration::from_secs(20));
    assert!(status.success(), "member a on SIGTERM: {status}");
    println!(
        "scale-out: a, b consuming; c joined at {joined_at} events produced; a left (SIGTERM, exit 0 in {:.1} s) at \
         {left_at}",
        took.as_secs_f64()
    );

    let jsonl = gen.finish(Duration::from_secs(300));
    // b and c catch up after a left, stop, and a drain finishes the topic.
    let logs = [b.log.clone(), c.log.clone()];
    let Finish { sigterm_exits, rows, late, .. } = pipe.finish(vec![b, c], &[&jsonl], N, &dir, &rss).await;
    for (name, took) in ["b", "c"].iter().zip(&sigterm_exits) {
        println!("scale-out: {name} stopped (SIGTERM, exit 0 in {:.1} s)", took.as_secs_f64());
    }
    let [logs_b, logs_c] = logs.map(|l| assignments(&std::fs::read_to_string(l).unwrap_or_default()));
    let seen: Vec<_> = [&a_log_at_leave, &logs_b, &logs_c].iter().map(|l| partitions_seen(&l.join("\n"))).collect();
    println!("scale-out: assignments a {a_log_at_leave:?}, b {logs_b:?}, c {logs_c:?}");
    let moved = (0..3).filter(|p| seen.iter().filter(|s| s.contains(p)).count() >= 2).count();
    assert!(moved > 0, "no partition changed owner: {seen:?}");
    println!(
        "scale-out: {moved} partition(s) moved between members; {N} events checked, {rows} rows equal the SQL oracle \
         ({late} late); peak RSS {:.0} MiB; took {:.1} s",
        rss.peak_mib(),
        t_test.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn restart_on_a_drained_topic_changes_no_row() {
    let _serial = SERVICES.lock().await;
    let t_test = Instant::now();
    let pipe = pipeline(&[]);
    let (topic, group, db) = (&pipe.topic, &pipe.group, &pipe.db);
    let dir = scratch_dir();
    const N: u64 = 100_000;
    let jsonl = generate(topic, N, 505, JITTER, &dir);
    let rss = RssWatch::new();
    let first = pipe.start("first", &["--drain"], &dir);
    rss.watch(first.pid());
    first.wait_ok(Duration::from_secs(300));
    let (oracle, rows, late) = pipe.check_oracle(&[&jsonl], N).await;
    let before = parts_snapshot(db).await;
    let offsets = committed_offsets(group, topic).expect("committed offsets");
    assert!(offsets.iter().all(|&o| o > 0), "every partition committed: {offsets:?}");

    // Restart with --drain: it replays the open tail and rewrites nothing new.
    let again = pipe.start("again-drain", &["--drain"], &dir);
    rss.watch(again.pid());
    let again_log = again.log.clone();
    again.wait_ok(Duration::from_secs(120));
    // It reads on from the commit, the open 1 m / 1 h windows seeded from
    // the 10 s rows: at most the allowed lateness (1 s) plus one 10 s
    // window of each partition, plus the jitter (3 s), at 1000 events per
    // second: 14,000. (Replaying the open hour read all 100,000.)
    let log = std::fs::read_to_string(&again_log).unwrap_or_default();
    let reread = events_in(&log).expect(NO_STATS);
    assert!(reread <= 14_000, "a restart on a drained topic read {reread} of {N} messages again");
    assert_eq!(parts_snapshot(db).await, before, "a --drain restart on a drained topic is a no-op");
    assert_eq!(committed_offsets(group, topic), Some(offsets), "and commits the same offsets");

    // Restart as a service, let it replay, then stop it.
    let mut svc = pipe.start("again-run", &[], &dir);
    rss.watch(svc.pid());
    wait_until("the service restart to start all 3 partitions", Duration::from_secs(60), || {
        svc.assert_alive("while idle on a drained topic");
        svc.log_text().matches("partition started").count() >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    let (status, took) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM: {status}");
    assert_eq!(parts_snapshot(db).await, before, "a restart and SIGTERM on a drained topic is a no-op");
    assert_eq!(committed_offsets(group, topic), Some(offsets), "and commits the same offsets");
    oracle.assert_matches(N).await;
    println!(
        "restart no-op: {N} events, {rows} rows equal the SQL oracle ({late} late); {} part rows and committed \
         offsets {offsets:?} unchanged by a --drain restart (which read {reread} messages again) and by a run + \
         SIGTERM (exit 0 in {:.1} s); peak RSS {:.0} MiB; took {:.1} s",
        before.lines().count(),
        took.as_secs_f64(),
        rss.peak_mib(),
        t_test.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn sigterm_under_full_load_exits_within_10s_and_restart_is_exact() {
    let _serial = SERVICES.lock().await;
    let t_test = Instant::now();
    let pipe = pipeline(&[]);
    let (topic, db) = (&pipe.topic, &pipe.db);
    let dir = scratch_dir();
    // A backlog, plus a generator producing as fast as it can while
    // adstream consumes as fast as it can; its events continue the
    // backlog's event time.
    const BACKLOG: u64 = 200_000;
    const LIVE: u64 = 400_000;
    let backlog = Generator::start(topic, GenSpec::new(BACKLOG, 606, JITTER, 0), &dir).finish(Duration::from_secs(300));
    let mut live = Generator::start(
        topic,
        GenSpec { start_time: "2025-12-10T00:03:20Z", ..GenSpec::new(LIVE, 607, JITTER, 40_000) },
        &dir,
    );
    let rss = RssWatch::new();
    let mut run = pipe.start("run", &[], &dir);
    rss.watch(run.pid());
    wait_until("adstream to write and commit under load", Duration::from_secs(120), || {
        run.assert_alive("under load");
        pipe.committed() > 0
    });
    assert!(live.is_running(), "the live generator must still be producing at the SIGTERM");
    let at = produced(topic);
    let (status, took) = run.sigterm(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM under load must exit 0, got {status}");
    assert!(took < Duration::from_secs(10), "SIGTERM under load took {took:?} (limit 10 s)");
    let visible = scalar(&format!("SELECT sum(impressions + clicks) FROM {db}.ad_metrics_10s")).await;
    assert!(visible < (BACKLOG + LIVE) as i64, "stopped mid-stream ({visible} events visible)");
    println!(
        "graceful shutdown: SIGTERM at {at} events in the topic, live generator producing: exit 0 in {:.2} s \
         with {visible} events visible",
        took.as_secs_f64()
    );

    let live_jsonl = live.finish(Duration::from_secs(300));
    let again = pipe.start("restart-drain", &["--drain"], &dir);
    rss.watch(again.pid());
    again.wait_ok(Duration::from_secs(300));
    let (_, rows, late) = pipe.check_oracle(&[&backlog, &live_jsonl], BACKLOG + LIVE).await;
    println!(
        "graceful shutdown: after restart {} events checked, {rows} rows equal the SQL oracle ({late} late); peak RSS \
         {:.0} MiB; took {:.1} s",
        BACKLOG + LIVE,
        rss.peak_mib(),
        t_test.elapsed().as_secs_f64()
    );
}

/// A TCP proxy in front of ClickHouse that can turn into a server which
/// accepts and never answers: while stalled, new connections are accepted
/// and never read, and bytes already flowing on open connections are held
/// (nothing is forwarded either way) until it is resumed.
struct StallProxy {
    addr: std::net::SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallProxy {
    fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = l.local_addr().unwrap();
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stalled.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in l.incoming() {
                let Ok(down) = conn else { continue };
                if s.load(SeqCst) {
                    held.push(down); // accepted, never read, never answered
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(&upstream) else { continue };
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up.try_clone().unwrap(), down.try_clone().unwrap()),
                ] {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while s.load(SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        StallProxy { addr, stalled }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn clickhouse_that_accepts_and_never_answers_is_retried_and_sigterm_still_exits_within_10s() {
    let _serial = SERVICES.lock().await;
    let t_test = Instant::now();
    let topic = unique("ad_events");
    let dir = scratch_dir();
    const N: u64 = 200_000;
    let gen = Generator::start(&topic, GenSpec::new(N, 808, JITTER, 4_000), &dir);
    wait_for_topic(&topic);
    let upstream = clickhouse_url().split("://").nth(1).unwrap_or_default().trim_end_matches('/').to_string();
    let proxy = StallProxy::start(upstream);
    let url = proxy.url();
    let pipe = pipeline_on(&topic, &[]);
    let group = &pipe.group;

    // 1. A short request timeout: a stalled write fails after 2 s and is
    //    retried like an outage; nothing is committed meanwhile; once the
    //    server answers again the retries go through.
    let mut run = pipe.start("run-2s", &["--clickhouse-url", &url, "--clickhouse-request-timeout", "2s"], &dir);
    wait_until("the first commit through the proxy", Duration::from_secs(120), || {
        run.assert_alive("before the stall");
        pipe.committed() > 0
    });
    proxy.stall(true);
    std::thread::sleep(Duration::from_secs(2));
    let frozen = committed_offsets(group, &topic).expect("committed offsets");
    let t_stall = Instant::now();
    while t_stall.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_secs(1));
        run.assert_alive("while ClickHouse did not answer");
        assert_eq!(committed_offsets(group, &topic), Some(frozen), "offsets committed while nothing was written");
    }
    let log = run.log_text();
    let timeouts = log.matches("--clickhouse-request-timeout").count();
    assert!(
        log.contains("sink write failed") && timeouts > 0,
        "a write to a silent ClickHouse must time out and be retried:\n{}",
        tail(log.as_bytes())
    );
    proxy.stall(false);
    let t_resume = Instant::now();
    wait_until("commits to go on once ClickHouse answers again", Duration::from_secs(60), || {
        run.assert_alive("after the stall");
        committed_offsets(group, &topic).is_some_and(|c| sum3(c) > sum3(frozen))
    });
    let resumed_in = t_resume.elapsed();
    let (status, _) = run.sigterm(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM after the stall: {status}");

    // 2. The default request timeout (30 s): SIGTERM while a write is held
    //    by the silent server must still exit within 10 s, committing
    //    nothing past what was written.
    let mut run = pipe.start("run-default", &["--clickhouse-url", &url], &dir);
    let before = pipe.committed();
    wait_until("a commit through the proxy", Duration::from_secs(120), || {
        run.assert_alive("before the second stall");
        pipe.committed() > before
    });
    proxy.stall(true);
    std::thread::sleep(Duration::from_secs(3));
    let frozen2 = committed_offsets(group, &topic).expect("committed offsets");
    run.assert_alive("during the second stall");
    let (status, took) = run.sigterm(Duration::from_secs(40));
    let after = committed_offsets(group, &topic).expect("committed offsets");
    proxy.stall(false);
    assert!(took < Duration::from_secs(10), "SIGTERM with a write held by a silent ClickHouse took {took:?}");
    assert_eq!(after, frozen2, "offsets committed at a SIGTERM whose write never landed");

    // 3. Drain straight to ClickHouse: every window exact.
    let jsonl = gen.finish(Duration::from_secs(300));
    let drain = pipe.start("drain", &["--drain"], &dir);
    drain.wait_ok(Duration::from_secs(300));
    let (_, rows, late) = pipe.check_oracle(&[&jsonl], N).await;
    println!(
        "silent ClickHouse: {timeouts} timed-out writes retried over 10 s with offsets frozen at {frozen:?}, \
         commits resumed {:.1} s after it answered again; SIGTERM with a write held (default 30 s request \
         timeout) exited ({status}) in {:.1} s, offsets unchanged at {frozen2:?}; after a drain {N} events, \
         {rows} rows equal the SQL oracle ({late} late); took {:.1} s",
        resumed_in.as_secs_f64(),
        took.as_secs_f64(),
        t_test.elapsed().as_secs_f64()
    );
}
