//! Issue 18, item 5: a replay from the wrong place must never replace exact
//! rows with sums of fewer messages. Each trigger is applied to a drained
//! group on the real broker (the real `kafka-consumer-groups` for resets
//! and deletes, the admin API's DeleteRecords for retention), and each
//! restart either leaves every row exactly as it was (and equal to the
//! oracle) or stops with one line naming the cause and the fix, writing
//! nothing.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Runs `scripts/kafka.sh groups ...` (kafka-consumer-groups) and panics
/// on failure.
fn groups(args: &[&str]) {
    let out = std::process::Command::new("bash")
        .arg("scripts/kafka.sh")
        .arg("groups")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kafka-consumer-groups");
    assert!(out.status.success(), "kafka-consumer-groups {args:?}: {}\n{}", tail(&out.stdout), tail(&out.stderr));
}

/// A `--drain` restart: (exit success, stderr).
fn drain(pipe: &Pipeline) -> (bool, String) {
    let child = adstream()
        .args(&pipe.args)
        .arg("--drain")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn adstream run");
    let out = wait_with_limit(child, Duration::from_secs(180));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The restart must fail with exactly one error line naming `cause` and a
/// fix, and leave every row as it was.
async fn assert_stops(pipe: &Pipeline, before: &str, trigger: &str, cause: &str) -> String {
    let (ok, stderr) = drain(pipe);
    assert!(!ok, "{trigger}: the restart must stop, it exited 0:\n{}", tail(stderr.as_bytes()));
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).filter(|l| l.contains("Fix:")).collect();
    assert_eq!(errors.len(), 1, "{trigger}: one error line with the fix:\n{}", tail(stderr.as_bytes()));
    assert!(errors[0].contains(cause), "{trigger}: the line names the cause ({cause:?}): {}", errors[0]);
    assert_eq!(parts_snapshot(&pipe.db).await, before, "{trigger}: a stopped restart changed rows");
    errors[0].to_string()
}

/// The restart must exit 0 and leave every row as it was.
async fn assert_exact(pipe: &Pipeline, before: &str, trigger: &str) {
    let (ok, stderr) = drain(pipe);
    assert!(ok, "{trigger}: the restart failed:\n{}", tail(stderr.as_bytes()));
    assert_eq!(parts_snapshot(&pipe.db).await, before, "{trigger}: rows changed");
}

/// Commits `offset` with `metadata` for every partition of the topic in
/// the pipeline's group (what an older adstream or another tool leaves).
fn commit_with_metadata(pipe: &Pipeline, offset: i64, metadata: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &pipe.group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&pipe.topic, p, rdkafka::Offset::Offset(offset)).unwrap();
        tpl.find_partition(&pipe.topic, p).unwrap().set_metadata(metadata);
    }
    c.assign(&tpl).expect("assign");
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync).expect("commit");
}

/// Deletes partition 0's records before `offset`, as retention would.
async fn delete_records_before(topic: &str, offset: i64) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset)).unwrap();
    let res = admin.delete_records(&tpl, &AdminOptions::new()).await.expect("delete records");
    for e in res.elements() {
        e.error().expect("delete records of partition 0");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn every_replay_trigger_stays_exact_or_stops_with_one_line() {
    let pipe = Pipeline::new(&unique("ad_events"), &unique("g"), &unique("replay"), &["--allowed-lateness", "1s"]);
    let (topic, group) = (pipe.topic.clone(), pipe.group.clone());
    let dir = scratch_dir();
    const N: u64 = 30_000;
    let jsonl = generate(&topic, N, 909, "3s", &dir);
    let (ok, stderr) = drain(&pipe);
    assert!(ok, "first drain: {}", tail(stderr.as_bytes()));
    let (_, rows, late) = pipe.check_oracle(&[&jsonl], N).await;
    let before = parts_snapshot(&pipe.db).await;

    // 1. kafka-consumer-groups --reset-offsets to the middle: no metadata.
    groups(&["--group", &group, "--topic", &topic, "--reset-offsets", "--to-offset", "5000", "--execute"]);
    let reset_line = assert_stops(&pipe, &before, "reset --to-offset", "carries no adstream checkpoint").await;
    // 2. Metadata of an older format (adstream/1).
    commit_with_metadata(&pipe, 5000, "adstream/1 wm=1765324800000000");
    assert_stops(&pipe, &before, "adstream/1 metadata", "carries no adstream checkpoint").await;
    // 3. Reset to the start while offset 0 is in the topic: a full replay,
    //    exact.
    groups(&["--group", &group, "--topic", &topic, "--reset-offsets", "--to-earliest", "--execute"]);
    assert_exact(&pipe, &before, "reset --to-earliest").await;
    // 4. The group's offsets gone (as when they expire): replays from 0.
    groups(&["--delete", "--group", &group]);
    assert_exact(&pipe, &before, "offsets deleted").await;
    // 5. Retention deleted the start of the open hour (the full-replay
    //    resume point, offset ~60): nothing lost, the restart reads on from
    //    the commit with the hour seeded from the base rows downstream.
    delete_records_before(&topic, 100).await;
    assert_exact(&pipe, &before, "retention before the commit").await;
    // 6. Retention deleted past the commit: messages never read are gone.
    let committed = committed_offsets(&group, &topic).expect("committed offsets");
    delete_records_before(&topic, committed[0] + 10).await;
    let retention_line = assert_stops(&pipe, &before, "retention past the commit", "were deleted from the topic").await;
    // 7. Offsets gone and the topic no longer starts at 0.
    groups(&["--delete", "--group", &group]);
    assert_stops(&pipe, &before, "offsets expired after retention", "no committed offset").await;
    // (`before` equals the oracle; the oracle itself reads the topic, whose
    // start is gone now.)
    println!(
        "replay triggers: {N} events, {rows} rows equal the oracle ({late} late); reset --to-offset, adstream/1 \
         metadata, retention past the commit and expired offsets each stopped the restart with one line and left \
         every row as it was; reset --to-earliest and deleted offsets replayed from 0, and retention of the \
         open hour's start read on from the commit (seeded), changing no row. e.g.:\n  {reset_line}\n  \
         {retention_line}"
    );
}
