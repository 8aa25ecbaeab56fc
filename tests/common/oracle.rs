//! The independent oracle: the windows and late events computed from the
//! raw input, apart from adstream, by the lateness rule stated on
//! [`Oracle`] (each partition's own sequence decides, never adstream's
//! late table).

use std::io::Write as _;
use std::path::Path;

use super::*;

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
