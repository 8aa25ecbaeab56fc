//! Kafka: producing (seeded `adstream generate` runs, in the foreground or
//! beside the pipeline, and hand-made messages), creating topics, reading a
//! topic back, committed offsets and high watermarks.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;

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
