//! Bad input end to end: every kind of invalid message, mixed at known
//! positions into a valid seeded stream on a 3-partition topic, must be
//! rejected with its reason (stats and ClickHouse), forwarded byte for byte
//! to the dead-letter topic with its source position, and must neither crash
//! nor stall the consumer, while the valid events still equal the SQL oracle.
//! Needs the services `scripts/test.sh` starts, hence `#[ignore]`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// One injected message and where it landed.
struct Injected {
    reason: &'static str,
    what: &'static str,
    key: Option<String>,
    payload: Vec<u8>,
    partition: i32,
    offset: i64,
}

const ONE_MIB: usize = 1 << 20;

/// The bad messages, built around a valid event so that each breaks exactly
/// one rule.
fn bad_messages(valid: &serde_json::Value) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let variant = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut x = valid.clone();
        f(&mut x);
        x.to_string().into_bytes()
    };
    let click = |x: &mut serde_json::Value| x["event_type"] = "click".into();
    let nan_literal = String::from_utf8(variant(&|x| {
        click(x);
        x["revenue"] = serde_json::json!(0.987654321);
    }))
    .unwrap()
    .replace("0.987654321", "NaN");
    assert!(nan_literal.contains("\"revenue\":NaN"), "{nan_literal}");
    // 1 MiB of non-repeating-looking bytes, so that any truncation or
    // corruption on the way to the DLQ shows.
    let big: Vec<u8> = (0..ONE_MIB).map(|i| b'!' + ((i * 7919 + i / 251) % 90) as u8).collect();
    vec![
        ("invalid_json", "not JSON", b"this is not json {".to_vec()),
        ("invalid_utf8", "invalid UTF-8", b"{\"event_id\":\"\xff\xfe\xfd\"}".to_vec()),
        ("empty_message", "empty message (no key)", Vec::new()),
        ("too_large", "1 MiB message", big),
        ("missing_field", "no campaign_id", variant(&|x| drop(x.as_object_mut().unwrap().remove("campaign_id")))),
        ("wrong_type", "revenue as a string", variant(&|x| x["revenue"] = "0.05".into())),
        ("wrong_type", "timestamp as a number", variant(&|x| x["timestamp"] = serde_json::json!(1765324800))),
        ("unknown_event_type", "event_type conversion", variant(&|x| x["event_type"] = "conversion".into())),
        ("unknown_ad_format", "ad_format native", variant(&|x| x["ad_format"] = "native".into())),
        ("unknown_country", "country BR", variant(&|x| x["country"] = "BR".into())),
        ("unknown_device", "device Windows Phone", variant(&|x| x["device"] = "Windows Phone".into())),
        ("missing_field", "no country", variant(&|x| drop(x.as_object_mut().unwrap().remove("country")))),
        (
            "negative_revenue",
            "revenue -0.5",
            variant(&|x| {
                click(x);
                x["revenue"] = serde_json::json!(-0.5)
            }),
        ),
        ("invalid_json", "revenue NaN literal", nan_literal.into_bytes()),
        (
            "wrong_type",
            "revenue \"NaN\"",
            variant(&|x| {
                click(x);
                x["revenue"] = "NaN".into()
            }),
        ),
        (
            "absurd_revenue",
            "revenue 5000 on a click",
            variant(&|x| {
                click(x);
                x["revenue"] = serde_json::json!(5000)
            }),
        ),
        (
            "revenue_on_impression",
            "impression with revenue 0.5",
            variant(&|x| {
                x["event_type"] = "impression".into();
                x["revenue"] = serde_json::json!(0.5)
            }),
        ),
        ("invalid_timestamp", "timestamp \"yesterday\"", variant(&|x| x["timestamp"] = "yesterday".into())),
        (
            "future_timestamp",
            "3 h ahead of its Kafka message timestamp",
            variant(&|x| {
                let t = chrono::Utc::now() + chrono::Duration::hours(3);
                x["timestamp"] = t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string().into()
            }),
        ),
    ]
}

async fn inject(topic: &str, msgs: Vec<(&'static str, &'static str, Vec<u8>)>) -> Vec<Injected> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", (8 << 20).to_string())
        .set("acks", "all")
        .create()
        .unwrap();
    let mut out = Vec::new();
    for (i, (reason, what, payload)) in msgs.into_iter().enumerate() {
        let key = (reason != "empty_message").then(|| format!("bad-{i}"));
        let mut rec = FutureRecord::<str, [u8]>::to(topic).partition(i as i32 % 3).payload(&payload[..]);
        if let Some(k) = &key {
            rec = rec.key(k.as_str());
        }
        let d = p.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap_or_else(|e| {
            panic!("producing {what} ({} bytes): {e}", payload.len());
        });
        out.push(Injected { reason, what, key, payload, partition: d.partition, offset: d.offset });
    }
    out
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?;
    h.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `rejected 16 (empty_message 1, …)` of the last `final stats:` line.
fn final_reject_counts(stderr: &str) -> BTreeMap<String, i64> {
    let line = stderr.lines().rev().find(|l| l.contains("final stats:")).expect("a final stats line");
    let rest = &line[line.find("| rejected ").expect("rejected figure") + "| rejected ".len()..];
    let Some(open) = rest.find(" (").filter(|&i| i < rest.find('|').unwrap_or(rest.len())) else {
        return BTreeMap::new();
    };
    let inner = &rest[open + 2..rest.find(')').unwrap()];
    inner
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn every_bad_message_is_rejected_by_reason_forwarded_whole_to_the_dlq_and_the_rest_is_exact() {
    let (topic, group, db, dlq) = (unique("ad_events"), unique("g"), unique("e2e"), unique("ad_events_dlq"));
    let (dir1, dir2) = (scratch_dir(), scratch_dir());
    const N1: u64 = 10_000;
    const N2: u64 = 10_000;
    // Valid events 00:00:00-00:00:10, then the bad ones, then valid events
    // 00:00:20-00:00:30: every partition has bad messages between valid ones.
    let jsonl1 = generate(&topic, N1, 13, "1s", &dir1);
    let first = std::fs::read_to_string(&jsonl1).unwrap().lines().next().unwrap().to_string();
    let injected = inject(&topic, bad_messages(&serde_json::from_str(&first).unwrap())).await;
    let jsonl2 = generate_with(&topic, N2, 14, "1s", &dir2, &["--start-time", "2025-12-10T00:00:20Z"]);

    println!("bad input: injected {} messages into {topic} between {N1} and {N2} valid events:", injected.len());
    for m in &injected {
        println!("  p{} @{:<6} {:<22} {:<30} {} bytes", m.partition, m.offset, m.reason, m.what, m.payload.len());
    }
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for m in &injected {
        *want.entry(m.reason.to_string()).or_default() += 1;
    }

    // (d) exits 0, within a bound (no crash, no stall).
    let run = |group: &str| {
        let mut c = adstream();
        c.args(["run", "--topic", &topic, "--group", group, "--database", &db, "--dlq-topic", &dlq]).args([
            "--stats-interval",
            "2s",
            "--drain",
        ]);
        c
    };
    let t0 = Instant::now();
    let out = run_ok(&mut run(&group), Duration::from_secs(240));
    let run_secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    // (a) The valid events equal the SQL oracle.
    let oracle = Oracle::load(&db, &topic, &[&jsonl1, &jsonl2], DEFAULT_LATENESS).await;
    let (rows, late) = oracle.assert_matches_with_rejects(N1 + N2, injected.len() as i64).await;

    // (c) Reject counts by reason: the stats line and ClickHouse.
    let stats = final_reject_counts(&stderr);
    assert_eq!(stats, want, "final stats line, rejects by reason");
    let ch_text =
        tsv(&format!("SELECT reason, count() FROM {db}.ad_rejected_events GROUP BY reason ORDER BY reason")).await;
    let ch: BTreeMap<String, i64> = ch_text
        .lines()
        .map(|l| {
            let (r, n) = l.split_once('\t').unwrap();
            (r.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(ch, want, "ClickHouse ad_rejected_events by reason");
    let positions = tsv(&format!(
        "SELECT partition, offset, reason, raw_size, length(raw) FROM {db}.ad_rejected_events ORDER BY partition, offset"
    ))
    .await;
    let mut expected_positions: Vec<String> = injected
        .iter()
        .map(|m| {
            format!("{}\t{}\t{}\t{}\t{}", m.partition, m.offset, m.reason, m.payload.len(), m.payload.len().min(4096))
        })
        .collect();
    expected_positions.sort_by_key(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (f[0].parse::<i32>().unwrap(), f[1].parse::<i64>().unwrap())
    });
    assert_eq!(positions.lines().collect::<Vec<_>>(), expected_positions, "ClickHouse keeps 4 KiB and the full size");
    let forwarded = format!("dead-letter topic {dlq}: {} rejected messages forwarded", injected.len());
    assert!(stderr.contains(&forwarded), "{}", tail(out.stderr.as_slice()));

    // (b) Each injected message is in the DLQ exactly once, byte for byte,
    // with its key and its source position.
    let records = read_topic(&dlq);
    let mut by_pos: BTreeMap<(i32, i64), Vec<&OwnedMessage>> = BTreeMap::new();
    for r in &records {
        let p = header(r, "adstream.source.partition").expect("partition header").parse().unwrap();
        let o = header(r, "adstream.source.offset").expect("offset header").parse().unwrap();
        by_pos.entry((p, o)).or_default().push(r);
    }
    assert_eq!(records.len(), injected.len(), "one DLQ record per bad message, no more");
    let mut dlq_reasons: BTreeMap<String, i64> = BTreeMap::new();
    for m in &injected {
        let got = by_pos.get(&(m.partition, m.offset)).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), 1, "{} at p{}@{}: {} DLQ records", m.what, m.partition, m.offset, got.len());
        let r = got[0];
        assert_eq!(header(r, "adstream.reason").as_deref(), Some(m.reason), "{}", m.what);
        assert!(
            r.payload().unwrap_or_default() == m.payload.as_slice(),
            "{}: DLQ value differs from the original",
            m.what
        );
        assert_eq!(r.key(), m.key.as_ref().map(|k| k.as_bytes()), "{}: key", m.what);
        assert_eq!(header(r, "adstream.source.topic").as_deref(), Some(topic.as_str()));
        assert!(header(r, "adstream.detail").is_some_and(|d| !d.is_empty()), "{}: detail", m.what);
        let at = header(r, "adstream.rejected_at").expect("rejected_at");
        assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "rejected_at {at:?}");
        assert_eq!(header(r, "adstream.truncated_from"), None);
        *dlq_reasons.entry(m.reason.to_string()).or_default() += 1;
    }
    assert_eq!(dlq_reasons, want, "DLQ records by reason");

    // A restart of the drained group forwards nothing again: the rejects lie
    // before the committed offsets, which were committed only after the DLQ
    // acknowledged them.
    run_ok(&mut run(&group), Duration::from_secs(120));
    assert_eq!(read_topic(&dlq).len(), injected.len(), "a restart after a clean drain duplicates no DLQ record");

    println!(
        "bad input: run exited 0 in {run_secs:.1} s; {} valid events, {rows} window rows equal the SQL oracle, {late} late",
        N1 + N2
    );
    println!("bad input: rejects by reason, injected = stats = ClickHouse = DLQ: {want:?}");
    println!(
        "bad input: {} DLQ records, each once at its source partition/offset, values byte-identical (largest {} bytes)",
        records.len(),
        injected.iter().map(|m| m.payload.len()).max().unwrap_or(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn a_dead_letter_topic_too_small_for_a_message_gets_its_prefix_flagged_instead_of_a_stall() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let (topic, group, db, dlq) = (unique("ad_events"), unique("g"), unique("e2e"), unique("ad_events_dlq"));
    const N: u64 = 2_000;
    let jsonl = generate(&topic, N, 21, "0s", &scratch_dir());
    // An operator-made DLQ topic with a limit below the message to forward.
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let t = NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100000");
    let r = admin.create_topics([&t], &AdminOptions::new()).await.unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    // Incompressible (xorshift), or lz4 would squeeze it under the limit.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    let injected = inject(&topic, vec![("too_large", "200 kB message", big.clone())]).await;

    let out = run_ok(
        adstream().args([
            "run",
            "--topic",
            &topic,
            "--group",
            &group,
            "--database",
            &db,
            "--dlq-topic",
            &dlq,
            "--drain",
        ]),
        Duration::from_secs(120),
    );
    let (rows, _) =
        Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await.assert_matches_with_rejects(N, 1).await;
    let records = read_topic(&dlq);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(header(r, "adstream.truncated_from").as_deref(), Some("200000"));
    assert_eq!(header(r, "adstream.source.offset"), Some(injected[0].offset.to_string()));
    assert_eq!(r.payload().unwrap_or_default(), &big[..4096], "the first 4 KiB, like ClickHouse keeps");
    assert!(String::from_utf8_lossy(&out.stderr).contains("too large for the dead-letter topic"));
    println!(
        "small DLQ topic: a {} byte reject forwarded as its first 4096 bytes with adstream.truncated_from; \
         {rows} rows of {N} events equal the oracle",
        big.len()
    );
}
