//! The dead-letter topic: every rejected message, forwarded to Kafka with
//! its original bytes and key, so that it can be inspected, fixed and
//! replayed with ordinary Kafka tools. ClickHouse keeps only the first 4 KiB;
//! this keeps the whole message.
//!
//! Headers say why and where from: `adstream.reason` (the stable snake_case
//! [`RejectReason`](crate::engine::parse::RejectReason) name), `adstream.detail`,
//! `adstream.source.topic`, `adstream.source.partition`,
//! `adstream.source.offset`, `adstream.rejected_at` (RFC 3339, UTC).
//!
//! Delivery is at-least-once: the sink task waits for every record of a
//! batch to be acknowledged (idempotent producer, `acks=all`) before it
//! commits that batch's offsets, and retries with backoff meanwhile. A crash
//! between delivery and commit replays the batch and forwards its rejects
//! again, so a DLQ consumer may see a record twice and should deduplicate by
//! (`adstream.source.topic`, `.partition`, `.offset`); it never misses one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::SecondsFormat;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::engine::batch::RejectRecord;
use crate::io::backoff::Backoff;
use crate::io::kafka::{client_config, ensure_named_topic, QuietContext, MAX_MESSAGE_BYTES};
use crate::obs::stats::Stats;
use crate::shutdown::Shutdown;

/// What the dead-letter topic and its producer accept: the largest input
/// record plus room for the headers, so that anything the input topics
/// accept can be forwarded whole.
pub const DLQ_MAX_MESSAGE_BYTES: usize = MAX_MESSAGE_BYTES + HEADER_ROOM;

/// Generous bound on the headers' size (the detail is capped below).
const HEADER_ROOM: usize = 64 << 10;

/// Longest `adstream.detail` header; details are short in practice.
const MAX_DETAIL_BYTES: usize = 1024;

/// How long librdkafka itself retries one record before reporting failure
/// to us; we then retry it with backoff, logging.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The header names; part of the DLQ's contract with its consumers.
pub const H_REASON: &str = "adstream.reason";
pub const H_DETAIL: &str = "adstream.detail";
pub const H_SOURCE_TOPIC: &str = "adstream.source.topic";
pub const H_SOURCE_PARTITION: &str = "adstream.source.partition";
pub const H_SOURCE_OFFSET: &str = "adstream.source.offset";
pub const H_REJECTED_AT: &str = "adstream.rejected_at";
/// Only on a record whose value had to be cut to fit an existing DLQ topic
/// with a smaller limit: the original size in bytes.
pub const H_TRUNCATED_FROM: &str = "adstream.truncated_from";

/// Forwards rejected messages to the dead-letter topic.
pub struct DlqSink {
    kafka: KafkaConfig,
    producer: FutureProducer<QuietContext>,
    topic: String,
    source_topic: String,
    stats: Arc<Stats>,
}

impl DlqSink {
    /// A sink for `topic` (created if missing), or `None` when `topic` is
    /// empty (the DLQ is disabled).
    pub async fn connect(kafka: &KafkaConfig, topic: &str, stats: Arc<Stats>) -> anyhow::Result<Option<Self>> {
        let topic = topic.trim();
        if topic.is_empty() {
            tracing::info!("dead-letter topic disabled: rejected messages go to ClickHouse only (first 4 KiB)");
            return Ok(None);
        }
        if topic == kafka.topic {
            bail!("--dlq-topic {topic:?} is the input topic: rejected messages would be consumed again forever");
        }
        // Partitions and replication: the broker's defaults (-1).
        ensure_named_topic(kafka, topic, -1, -1, DLQ_MAX_MESSAGE_BYTES).await?;
        let producer = producer(kafka)?;
        tracing::info!(topic, "forwarding rejected messages to the dead-letter topic");
        Ok(Some(DlqSink {
            kafka: kafka.clone(),
            producer,
            topic: topic.to_string(),
            source_topic: kafka.topic.clone(),
            stats,
        }))
    }

    /// Forwards `rejected` and returns once every record is acknowledged by
    /// the broker. Retries with backoff for as long as it takes; when `stop`
    /// is set it gives up after `SHUTDOWN_WRITE_GRACE`, so the caller must
    /// then not commit (the next start replays and forwards again).
    pub async fn write(&mut self, rejected: &[RejectRecord], stop: &Shutdown) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<usize> = (0..rejected.len()).collect();
        let mut truncate = vec![false; rejected.len()];
        let mut backoff = Backoff::default();
        let mut failures_so_far = 0u64;
        loop {
            let failed = self.send_all(rejected, &pending, &truncate).await;
            let delivered = (pending.len() - failed.len()) as u64;
            self.stats.dlq_written.fetch_add(delivered, Ordering::Relaxed);
            let Some((_, first_err)) = failed.first() else { return Ok(()) };
            let first_err = first_err.clone();

            let mut resend_now = true;
            for (i, e) in &failed {
                if is_too_large(e) && !truncate[*i] {
                    // The DLQ topic exists with a smaller limit than ours:
                    // forward the first 4 KiB, flagged, rather than stall.
                    let r = &rejected[*i];
                    tracing::warn!(
                        partition = r.partition, offset = r.offset, size = r.raw.len(), topic = %self.topic,
                        "rejected message too large for the dead-letter topic (raise its max.message.bytes); \
                         forwarding its first 4 KiB with header {H_TRUNCATED_FROM}"
                    );
                    truncate[*i] = true;
                } else {
                    resend_now = false;
                }
            }
            pending = failed.iter().map(|(i, _)| *i).collect();
            if resend_now {
                continue;
            }

            failures_so_far += 1;
            if failures_so_far <= 3 || failures_so_far.is_multiple_of(20) {
                tracing::warn!(
                    "dead-letter topic {}: {} of {} records not delivered ({failures_so_far} failed attempts), \
                     retrying in {:?}: {first_err}",
                    self.topic,
                    pending.len(),
                    rejected.len(),
                    backoff.delay()
                );
            }
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                tracing::warn!("dead-letter producer hit a fatal error ({code:?}: {reason}); recreating it");
                self.producer = producer(&self.kafka)?;
            }
            if backoff.gives_up(stop) {
                bail!(
                    "dead-letter topic {} still failing at shutdown: {first_err}; offsets were not committed \
                     past the last forwarded batch, so a restart forwards the rest",
                    self.topic
                );
            }
            backoff.wait(stop).await;
        }
    }

    /// Sends the records at `indices` and waits for their delivery reports;
    /// returns the ones that failed, with why.
    async fn send_all(
        &self,
        rejected: &[RejectRecord],
        indices: &[usize],
        truncate: &[bool],
    ) -> Vec<(usize, KafkaError)> {
        let mut failed = Vec::new();
        let mut in_flight: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(indices.len());
        for &i in indices {
            let r = &rejected[i];
            let value = if truncate[i] { r.raw_prefix() } else { &r.raw[..] };
            let headers = owned_headers(&header_values(r, &self.source_topic, truncate[i].then_some(r.raw.len())));
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(value).headers(headers);
            if let Some(k) = &r.key {
                record = record.key(&k[..]);
            }
            let mut record = Some(record);
            while let Some(rec) = record.take() {
                match self.producer.send_result(rec) {
                    Ok(f) => in_flight.push((i, f)),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) if !in_flight.is_empty() => {
                        // librdkafka's queue is full (many large rejects):
                        // let what is queued complete, then enqueue again.
                        await_all(std::mem::take(&mut in_flight), &mut failed).await;
                        record = Some(rec);
                    }
                    Err((e, _)) => failed.push((i, e)),
                }
            }
        }
        await_all(in_flight, &mut failed).await;
        failed
    }

    /// Logs what this run forwarded; everything was already acknowledged.
    pub fn finish(&self) {
        tracing::info!(
            "dead-letter topic {}: {} rejected messages forwarded",
            self.topic,
            self.stats.dlq_written.load(Ordering::Relaxed)
        );
    }
}

async fn await_all(in_flight: Vec<(usize, DeliveryFuture)>, failed: &mut Vec<(usize, KafkaError)>) {
    for (i, f) in in_flight {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => failed.push((i, e)),
            Err(_canceled) => failed.push((i, KafkaError::Canceled)),
        }
    }
}

fn is_too_large(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge))
}

/// An idempotent, `acks=all` producer whose size limit matches the DLQ
/// topic's.
fn producer(kafka: &KafkaConfig) -> anyhow::Result<FutureProducer<QuietContext>> {
    let mut cfg = client_config(kafka)?;
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", DLQ_MAX_MESSAGE_BYTES.to_string())
        .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    cfg.create_with_context(QuietContext::default()).context("creating the dead-letter Kafka producer")
}

/// The headers of one DLQ record, in order.
pub fn header_values(
    r: &RejectRecord,
    source_topic: &str,
    truncated_from: Option<usize>,
) -> Vec<(&'static str, Vec<u8>)> {
    let rejected_at = crate::engine::time::to_datetime(r.rejected_at_us).to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut h = vec![
        (H_REASON, r.reason.as_str().as_bytes().to_vec()),
        (H_DETAIL, cap(&r.detail, MAX_DETAIL_BYTES).as_bytes().to_vec()),
        (H_SOURCE_TOPIC, source_topic.as_bytes().to_vec()),
        (H_SOURCE_PARTITION, r.partition.to_string().into_bytes()),
        (H_SOURCE_OFFSET, r.offset.to_string().into_bytes()),
        (H_REJECTED_AT, rejected_at.into_bytes()),
    ];
    if let Some(n) = truncated_from {
        h.push((H_TRUNCATED_FROM, n.to_string().into_bytes()));
    }
    h
}

fn owned_headers(values: &[(&'static str, Vec<u8>)]) -> OwnedHeaders {
    values.iter().fold(OwnedHeaders::new_with_capacity(values.len()), |h, (k, v)| {
        h.insert(Header { key: k, value: Some(&v[..]) })
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::parse::{parse_event, RejectReason};

    fn record(payload: &[u8], key: Option<&[u8]>) -> RejectRecord {
        let rej = parse_event(payload, 64).expect_err("rejected");
        RejectRecord::new(2, 41, key, rej, payload)
    }

    #[test]
    fn headers_name_the_reason_and_the_source_position() {
        let mut r = record(&[b'x'; 100], Some(b"k1"));
        r.rejected_at_us = 1_765_327_581_994_570;
        let h = header_values(&r, "ad-events", None);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| String::from_utf8(v.clone()).unwrap());
        assert_eq!(get(H_REASON).as_deref(), Some("too_large"));
        assert_eq!(get(H_DETAIL).as_deref(), Some("100 bytes > limit 64"));
        assert_eq!(get(H_SOURCE_TOPIC).as_deref(), Some("ad-events"));
        assert_eq!(get(H_SOURCE_PARTITION).as_deref(), Some("2"));
        assert_eq!(get(H_SOURCE_OFFSET).as_deref(), Some("41"));
        assert_eq!(get(H_REJECTED_AT).as_deref(), Some("2025-12-10T00:46:21.994570Z"));
        assert_eq!(get(H_TRUNCATED_FROM), None);
        assert_eq!(r.raw.len(), 100, "the whole message travels");
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        let t = header_values(&r, "ad-events", Some(100));
        assert_eq!(t.last().unwrap(), &(H_TRUNCATED_FROM, b"100".to_vec()));
    }

    #[test]
    fn reason_header_is_the_stable_name_for_every_reason() {
        for reason in RejectReason::ALL {
            let mut r = record(b"", None);
            r.reason = reason;
            assert_eq!(header_values(&r, "t", None)[0], (H_REASON, reason.as_str().as_bytes().to_vec()));
        }
    }

    #[test]
    fn long_details_are_capped_on_a_char_boundary() {
        let s = "é".repeat(MAX_DETAIL_BYTES);
        let c = cap(&s, MAX_DETAIL_BYTES + 1);
        assert_eq!(c.len(), MAX_DETAIL_BYTES);
        assert_eq!(cap("short", 10), "short");
    }

    #[test]
    fn clickhouse_keeps_a_prefix_the_dlq_the_whole() {
        let big = vec![b'{'; crate::engine::batch::REJECT_RAW_LIMIT * 3];
        let r = record(&big, None);
        assert_eq!(r.raw, big);
        assert_eq!(r.raw_prefix(), &big[..crate::engine::batch::REJECT_RAW_LIMIT]);
        assert_eq!(r.key, None);
    }
}
