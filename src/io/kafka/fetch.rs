//! The consume loop's calls into librdkafka (`pipeline::consume` holds no
//! rdkafka type): polling the consumer and the message queue into
//! [`Fetched`] items, seeking, pausing and resuming partitions, the
//! watermarks, the rebalances the context queued, and the metadata probe.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::queue::{MessageQueue, RawMessage};
use super::{PipelineConsumer, RebalanceEvent, WatermarkClient};

/// How long a seek may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// One item fetched from Kafka: a record, or an error the client reported
/// while fetching (end-of-partition events are neither: they are dropped).
pub enum Fetched<'a> {
    Record { partition: i32, offset: i64, time_us: Option<i64>, key: Option<&'a [u8]>, payload: Option<&'a [u8]> },
    Error(String),
}

/// What one poll of the consumer's own queue brought: nothing, a message
/// (only before its partition was forwarded to the message queue) or an
/// event (an error).
pub struct ConsumerPoll<'c>(Option<KafkaResult<BorrowedMessage<'c>>>);

impl ConsumerPoll<'_> {
    /// Nothing came (end-of-partition events count as something).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn fetched(&self) -> Option<Fetched<'_>> {
        match &self.0 {
            // End-of-partition events are off by default; with
            // `--kafka-option enable.partition.eof=true` they are no error.
            None | Some(Err(KafkaError::PartitionEOF(_))) => None,
            Some(Err(e)) => Some(Fetched::Error(e.to_string())),
            Some(Ok(msg)) => Some(Fetched::Record {
                partition: msg.partition(),
                offset: msg.offset(),
                time_us: msg.timestamp().to_millis().map(|ms| ms.saturating_mul(1000)),
                key: msg.key(),
                payload: msg.payload(),
            }),
        }
    }
}

/// Polls the consumer's own queue (rebalances, commit results, client
/// errors) for up to `wait`.
pub fn poll(consumer: &PipelineConsumer, wait: Duration) -> ConsumerPoll<'_> {
    ConsumerPoll(consumer.poll(wait))
}

/// A message of a batch from the message queue as a [`Fetched`] item;
/// `None` for an end-of-partition event.
#[inline]
pub fn fetched<'a>(m: &RawMessage<'a>) -> Option<Fetched<'a>> {
    match m.error() {
        None => Some(Fetched::Record {
            partition: m.partition(),
            offset: m.offset(),
            time_us: m.timestamp_us(),
            key: m.key(),
            payload: m.payload(),
        }),
        Some(RDKafkaErrorCode::PartitionEOF) => None,
        Some(code) => Some(Fetched::Error(format!("partition {}: {code}: {}", m.partition(), m.error_detail()))),
    }
}

/// The queue the consumer's assigned partitions are forwarded to (see
/// [`super::queue`]).
pub fn message_queue(consumer: &PipelineConsumer) -> anyhow::Result<MessageQueue<'_>> {
    MessageQueue::register(consumer, consumer.context().queue_slot())
}

/// The rebalances the consumer's context queued since the last call.
pub fn rebalances(consumer: &PipelineConsumer) -> Vec<RebalanceEvent> {
    consumer.context().take_rebalances()
}

/// Seeks partition `p` of `topic` to `offset`.
pub fn seek(consumer: &PipelineConsumer, topic: &str, p: i32, offset: i64) -> KafkaResult<()> {
    consumer.seek(topic, p, Offset::Offset(offset), SEEK_TIMEOUT)
}

/// Pauses or resumes fetching `partitions` of `topic`. Pausing also drops
/// librdkafka's prefetched messages for them (they are fetched again on
/// resume), so a long sink outage costs no memory. A failure is logged.
pub fn set_paused<'a>(
    consumer: &PipelineConsumer,
    topic: &str,
    partitions: impl IntoIterator<Item = &'a i32>,
    pause: bool,
) {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let r = if pause { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    if let Err(e) = r {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::warn!("{} partitions {partitions:?}: {e}", if pause { "pausing" } else { "resuming" });
    }
}

/// The low and high watermarks of partition `p`, asked of the brokers
/// (through `watermarks`, the `--drain` client, if there is one).
pub fn fetch_watermarks(
    watermarks: Option<&WatermarkClient>,
    consumer: &PipelineConsumer,
    topic: &str,
    p: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    match watermarks {
        Some(c) => c.fetch_watermarks(topic, p, timeout),
        None => consumer.fetch_watermarks(topic, p, timeout),
    }
}

/// Leaves the consumer group (at shutdown, after the final commit).
pub fn leave_group(consumer: &PipelineConsumer) {
    consumer.unsubscribe();
}

/// Asks the brokers for `topic`'s metadata through the consumer: `Err`
/// with the reason when they do not answer or name no broker.
pub fn probe_metadata(consumer: &PipelineConsumer, topic: &str, timeout: Duration) -> Result<(), String> {
    match consumer.client().fetch_metadata(Some(topic), timeout) {
        Ok(md) if md.brokers().is_empty() => Err("no broker in the metadata".to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("metadata request: {e}")),
    }
}
