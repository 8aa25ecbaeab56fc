//! Batch consumption from Kafka.
//!
//! rust-rdkafka's `BaseConsumer::poll` hands out one message per call, and
//! every call reads the clock (twice), allocates an `Arc` for the event,
//! takes the queue lock and wakes through the event machinery; at a million
//! messages a second that was about a fifth of the consumer's CPU, more than
//! the window engine itself. librdkafka can do better: its
//! `rd_kafka_consume_batch_queue` moves up to N messages out of a queue per
//! call. But it must not be pointed at the consumer's own queue, which also
//! carries rebalance events: served there without a rebalance callback,
//! librdkafka would unassign everything.
//!
//! So each partition's fetch queue is *forwarded*, as it is assigned, into
//! a [`MessageQueue`] of ours (`rd_kafka_queue_forward`; librdkafka keeps an
//! application forward across fetch restarts, seeks and pauses), and the
//! consume loop drains that queue in batches, while rebalances, commit
//! results and client errors stay on the consumer queue, served by
//! `BaseConsumer::poll` once per batch. Per-partition errors travel with the
//! messages, as messages whose [`RawMessage::error`] is set. Messages left
//! over from before a revoke, a seek or a pause are discarded by librdkafka
//! (their version is outdated) before they reach a batch.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;

/// The queue the assigned partitions' fetch queues are forwarded to. Owned
/// by the consume loop; dropped (which un-registers it) before the consumer.
pub struct MessageQueue<'c> {
    ptr: NonNull<rd::rd_kafka_queue_t>,
    slot: &'c QueueSlot,
}

/// Where the consumer context finds the [`MessageQueue`] to forward newly
/// assigned partitions to (null while there is none).
#[derive(Default)]
pub struct QueueSlot(AtomicPtr<rd::rd_kafka_queue_t>);

impl QueueSlot {
    /// Forwards the fetch queue of each `(topic, partition)` to the
    /// registered queue, if any. Called from the rebalance callback before
    /// the partitions are assigned, so their first messages already go
    /// there. Without a registered queue the messages stay on the consumer
    /// queue, where `BaseConsumer::poll` returns them.
    pub fn forward<'a, C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) {
        let dst = self.0.load(Ordering::Acquire);
        if dst.is_null() {
            return;
        }
        for (topic, p) in partitions {
            let Ok(topic) = CString::new(topic) else { continue };
            // SAFETY: the client pointer is valid for the consumer's
            // lifetime; the topic string outlives the call; `dst` is live
            // while registered (the owner un-registers before destroying
            // it, on the only thread that serves rebalances). The partition
            // queue handle is released right away: the forward holds its own
            // reference to `dst`.
            unsafe {
                let src = rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), topic.as_ptr(), p);
                if !src.is_null() {
                    rd::rd_kafka_queue_forward(src, dst);
                    rd::rd_kafka_queue_destroy(src);
                }
            }
        }
    }
}

impl<'c> MessageQueue<'c> {
    /// Creates the queue and registers it with the consumer's context, so
    /// that partitions assigned from now on are forwarded to it. Create it
    /// before the first poll: partitions assigned earlier are not forwarded.
    pub fn register<C: ConsumerContext>(consumer: &BaseConsumer<C>, slot: &'c QueueSlot) -> anyhow::Result<Self> {
        // SAFETY: the client pointer is valid for the consumer's lifetime.
        let ptr = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        let ptr = NonNull::new(ptr).ok_or_else(|| anyhow::anyhow!("librdkafka could not create a queue"))?;
        slot.0.store(ptr.as_ptr(), Ordering::Release);
        Ok(MessageQueue { ptr, slot })
    }

    /// Replaces `batch`'s messages with up to its capacity of the next ones.
    /// Returns at once with whatever is queued; only when nothing is, waits
    /// up to `timeout` for a first message (and then takes whatever else
    /// arrived with it).
    pub fn consume(&self, batch: &mut MessageBatch, timeout: Duration) -> usize {
        batch.clear();
        self.fill(batch, 0, batch.capacity);
        if batch.msgs.is_empty() && !timeout.is_zero() {
            // A batch call waits until the *whole* batch is full, so wait
            // for one message, then take the rest without waiting.
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            self.fill(batch, ms, 1);
            if !batch.msgs.is_empty() {
                self.fill(batch, 0, batch.capacity);
            }
        }
        batch.msgs.len()
    }

    fn fill(&self, batch: &mut MessageBatch, timeout_ms: i32, up_to: usize) {
        let len = batch.msgs.len();
        let room = up_to.saturating_sub(len);
        if room == 0 {
            return;
        }
        batch.msgs.reserve(room);
        // SAFETY: librdkafka writes at most `room` message pointers into the
        // vector's spare capacity (reserved above) and returns how many it
        // wrote, or -1 on error; only those are made part of the vector.
        unsafe {
            let n =
                rd::rd_kafka_consume_batch_queue(self.ptr.as_ptr(), timeout_ms, batch.msgs.as_mut_ptr().add(len), room);
            if n > 0 {
                batch.msgs.set_len(len + (n as usize).min(room));
            }
        }
    }
}

impl Drop for MessageQueue<'_> {
    fn drop(&mut self) {
        self.slot.0.store(std::ptr::null_mut(), Ordering::Release);
        // SAFETY: we own the handle. Destroying the owner's handle disables
        // the queue and purges it; partitions still forwarded to it hold
        // references until they go, and what they forward is dropped.
        unsafe { rd::rd_kafka_queue_destroy(self.ptr.as_ptr()) }
    }
}

/// Messages taken out of a [`MessageQueue`] by one call, borrowed from
/// librdkafka's buffers until the next call (or drop) releases them.
pub struct MessageBatch {
    msgs: Vec<*mut rd::rd_kafka_message_t>,
    capacity: usize,
}

impl MessageBatch {
    pub fn with_capacity(capacity: usize) -> Self {
        MessageBatch { msgs: Vec::with_capacity(capacity), capacity: capacity.max(1) }
    }

    pub fn iter(&self) -> impl Iterator<Item = RawMessage<'_>> {
        // SAFETY: every pointer came from rd_kafka_consume_batch_queue and
        // stays valid until `clear` destroys it, which needs `&mut self`.
        self.msgs.iter().map(|&m| RawMessage { m: unsafe { &*m } })
    }

    pub fn clear(&mut self) {
        for m in self.msgs.drain(..) {
            // SAFETY: each message is destroyed exactly once, here.
            unsafe { rd::rd_kafka_message_destroy(m) }
        }
    }
}

impl Drop for MessageBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One message of a [`MessageBatch`]: a record, or a per-partition error.
pub struct RawMessage<'a> {
    m: &'a rd::rd_kafka_message_t,
}

impl<'a> RawMessage<'a> {
    pub fn partition(&self) -> i32 {
        self.m.partition
    }

    pub fn offset(&self) -> i64 {
        self.m.offset
    }

    /// The error this message reports instead of a record, if any.
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        (self.m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| self.m.err.into())
    }

    /// librdkafka's description of [`Self::error`].
    pub fn error_detail(&self) -> String {
        // SAFETY: librdkafka returns a NUL-terminated string that lives as
        // long as the message.
        unsafe {
            let s = rd::rd_kafka_message_errstr(self.m);
            if s.is_null() {
                String::new()
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        }
    }

    /// The message's timestamp (CreateTime or LogAppendTime), µs since the
    /// epoch; `None` when it has none.
    pub fn timestamp_us(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid for 'a; librdkafka only reads it and
        // writes the timestamp type.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.m, &mut kind) };
        (ms >= 0 && kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
            .then(|| ms.saturating_mul(1000))
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        bytes(self.m.key as *const u8, self.m.key_len)
    }

    pub fn payload(&self) -> Option<&'a [u8]> {
        bytes(self.m.payload as *const u8, self.m.len)
    }
}

fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    // SAFETY: librdkafka's key/payload pointer and length describe one
    // buffer owned by the message, valid for the message's lifetime 'a.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
}
