//! Kafka plumbing: client configuration, topic creation, and the consumer
//! context that reports rebalances to the pipeline and routes librdkafka's
//! own logs into `tracing` (rate-limited: a broker outage must produce a
//! reminder, not thousands of lines). The consume loop's calls (poll, seek,
//! pause, watermarks) are in [`fetch`], the batch queue in [`queue`], the
//! generator's producer in [`producer`], the dead-letter topic in [`dlq`].

pub mod dlq;
pub mod fetch;
pub mod producer;
pub mod queue;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::engine::window::Checkpoint;
pub use fetch::leave_group;
use queue::QueueSlot;

/// Largest record the topics adstream creates accept (`max.message.bytes`),
/// and what its producers may send. Kafka's default (~1 MB) refuses a 1 MiB
/// message outright; this leaves room for oversized input to reach the
/// consumer, be rejected, and be forwarded whole to the dead-letter topic.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// Base client configuration: brokers, security/SASL settings, plus any
/// `--kafka-option key=value`. The result holds secrets: never `Debug` it.
pub fn client_config(config: &KafkaConfig) -> anyhow::Result<ClientConfig> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &config.brokers);
    let named = [
        ("security.protocol", config.security_protocol.as_deref()),
        ("sasl.mechanism", config.sasl_mechanism.as_deref()),
        ("sasl.username", config.sasl_username.as_deref()),
    ];
    for (k, v) in named {
        if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
            cfg.set(k, v);
        }
    }
    if let Some(p) = &config.sasl_password {
        cfg.set("sasl.password", p.expose());
    }
    let files = [
        ("ssl.ca.location", &config.tls.ca),
        ("ssl.certificate.location", &config.tls.cert),
        ("ssl.key.location", &config.tls.key),
    ];
    for (k, path) in files {
        if let Some(path) = path {
            let path = path.to_str().with_context(|| format!("{k}: the path {} is not UTF-8", path.display()))?;
            cfg.set(k, path);
        }
    }
    if let Some(p) = &config.ssl_key_password {
        cfg.set("ssl.key.password", p.expose());
    }
    // librdkafka's default since 2.0 is `https`; set either way so the flag
    // means what it says whatever the library's default.
    cfg.set("ssl.endpoint.identification.algorithm", if config.ssl_verify_hostname { "https" } else { "none" });
    apply_options(&mut cfg, config)?;
    Ok(cfg)
}

/// Sets every `--kafka-option key=value` on `cfg`. Called last by each
/// client's constructor too, so an option overrides adstream's own defaults
/// (fetch sizes, batching…), not the other way round.
pub fn apply_options(cfg: &mut ClientConfig, config: &KafkaConfig) -> anyhow::Result<()> {
    for o in &config.options {
        cfg.set(o.key.as_str(), o.value.expose().as_str());
    }
    Ok(())
}

/// Records librdkafka's complaints instead of logging them: used by
/// [`check_reachable`], whose one error line quotes the one that says what
/// is wrong (or the last), with the setting to fix.
#[derive(Default)]
struct ProbeContext {
    /// The latest complaints, at most [`PROBE_COMPLAINTS`].
    complaints: Mutex<Vec<String>>,
}

const PROBE_COMPLAINTS: usize = 32;

impl ProbeContext {
    fn record(&self, msg: String) {
        if let Ok(mut c) = self.complaints.lock() {
            if c.len() == PROBE_COMPLAINTS {
                c.remove(0);
            }
            c.push(msg);
        }
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        // CONFWARN: advice on the configuration, not why the probe failed.
        let complaint = (level as i32) <= RDKafkaLogLevel::Warning as i32 && fac != "CONFWARN";
        // A plaintext client at a TLS listener: the broker closes the
        // connection at the first request, which librdkafka reports at
        // debug level only (as it would for a pre-0.10 broker).
        let closed_at_first_request = msg.contains("closed by peer") && msg.contains("APIVERSION_QUERY");
        if complaint || closed_at_first_request {
            self.record(msg.to_string());
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.record(format!("{error}: {reason}"));
    }
}

const TLS_EXPECTED: &str = "check --kafka-security-protocol (ADSTREAM_KAFKA_SECURITY_PROTOCOL): the listener \
     closed the connection at the first request, as a TLS listener does with plaintext (ssl or sasl_ssl?)";
const CLIENT_CERT_REQUIRED: &str = "check --kafka-ssl-cert-file and --kafka-ssl-key-file \
     (ADSTREAM_KAFKA_SSL_CERT_FILE, ADSTREAM_KAFKA_SSL_KEY_FILE): the listener requires a client certificate";
const HANDSHAKE_REFUSED: &str = "check --kafka-ssl-ca-file, --kafka-ssl-cert-file and --kafka-ssl-key-file: \
     the broker refused the TLS handshake";

/// What librdkafka's complaint `msg` says to fix, as the setting's flag
/// and variable: TLS and SASL failures each name their own setting, so a
/// wrong password, CA or protocol is one line saying which.
pub fn security_hint(msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    Some(if has("authentication failed") || has("invalid credentials") || has("invalid username or password") {
        "check --kafka-sasl-username and the SASL password (ADSTREAM_KAFKA_SASL_USERNAME, \
         ADSTREAM_KAFKA_SASL_PASSWORD or --kafka-sasl-password-file)"
    } else if has("unsupported sasl mechanism") || has("no worthy mechs") || has("sasl.mechanism") {
        "check --kafka-sasl-mechanism (ADSTREAM_KAFKA_SASL_MECHANISM): the listener does not offer it"
    } else if has("hostname mismatch") || has("ip address mismatch") {
        "check --brokers (ADSTREAM_BROKERS): the broker's certificate does not name that address \
         (--kafka-ssl-verify-hostname false turns the check off)"
    } else if has("certificate required") || has("peer did not return a certificate") {
        CLIENT_CERT_REQUIRED
    } else if has("certificate verify failed")
        || has("unable to get local issuer")
        || has("self-signed certificate")
        || has("self signed certificate")
        || has("broker certificate could not be verified")
    {
        "check --kafka-ssl-ca-file (ADSTREAM_KAFKA_SSL_CA_FILE): the CA that signed the brokers' certificates"
    } else if has("wrong version number")
        || has("plaintext broker listener")
        || has("packet length too long")
        || has("record layer failure")
        || has("unexpected eof while reading")
    {
        "check --kafka-security-protocol (ADSTREAM_KAFKA_SECURITY_PROTOCOL): the listener does not speak TLS"
    } else if has("ssl listener") || has("incorrect security.protocol") {
        "check --kafka-security-protocol (ADSTREAM_KAFKA_SECURITY_PROTOCOL): the listener speaks TLS or SASL"
    } else if has("alert handshake failure") || has("tlsv1 alert") || has("ssl alert") || has("sslv3 alert") {
        HANDSHAKE_REFUSED
    } else {
        return None;
    })
}

impl ConsumerContext for ProbeContext {}

/// Fails with one line naming the brokers and what to set when no broker
/// answers a metadata request within `--connect-timeout`: a wrong address
/// at start is a configuration error, not something to retry forever.
pub fn check_reachable(config: &KafkaConfig) -> anyhow::Result<()> {
    let mut cfg = client_config(config)?;
    // Debug level, broker context (beside any --kafka-option debug=…, which
    // librdkafka still checks): see ProbeContext::log.
    let debug = match cfg.get("debug") {
        Some(d) if !d.trim().is_empty() => format!("{d},broker"),
        _ => "broker".to_string(),
    };
    let consumer: BaseConsumer<ProbeContext> = cfg
        .set("log_level", "7")
        .set("debug", debug)
        .create_with_context(ProbeContext::default())
        .context("creating Kafka client")?;
    let timeout = config.connect_timeout.max(Duration::from_millis(100));
    let result = consumer.fetch_metadata(None, timeout);
    if matches!(&result, Ok(md) if !md.brokers().is_empty()) {
        return Ok(());
    }
    // Logs and errors arrive on the client's queue (rdkafka sets
    // log.queue): serve it so the context sees them.
    for _ in 0..5 {
        let _ = consumer.poll(Duration::from_millis(20));
    }
    let complaints = consumer.context().complaints.lock().map(|c| c.clone()).unwrap_or_default();
    let tls = config.security_protocol.as_deref().is_some_and(|p| p.trim().to_ascii_lowercase().ends_with("ssl"));
    let hinted = complaints.iter().rev().find_map(|c| match security_hint(c) {
        Some(h) => Some((c.clone(), h)),
        None if !tls && c.contains("APIVERSION_QUERY") => Some((c.clone(), TLS_EXPECTED)),
        None => None,
    });
    let (why, hint) = match hinted {
        // A refused handshake without a client certificate: the listener
        // wants one (Kafka's ssl.client.auth=required answers "bad certificate").
        Some((why, hint)) if hint == HANDSHAKE_REFUSED && config.tls.cert.is_none() => (why, CLIENT_CERT_REQUIRED),
        Some((why, hint)) => (why, hint),
        None => (
            complaints
                .last()
                .cloned()
                .or_else(|| result.err().map(|e| e.to_string()))
                .unwrap_or_else(|| "no broker".into()),
            "check --brokers / ADSTREAM_BROKERS (and the security settings)",
        ),
    };
    bail!(
        "Kafka at {} did not answer within {} ({}): {hint}",
        config.brokers,
        humantime::format_duration(timeout),
        why.replace('\n', " ")
    )
}

/// Creates `config.topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(config: &KafkaConfig, partitions: i32, replication: i32) -> anyhow::Result<()> {
    ensure_named_topic(config, &config.topic, partitions, replication, MAX_MESSAGE_BYTES).await
}

/// Creates `topic` unless it exists, accepting records up to
/// `max_message_bytes`. `-1` partitions or replication means the broker's
/// default. An existing topic is left as it is (its limits included).
pub async fn ensure_named_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    max_message_bytes: usize,
) -> anyhow::Result<()> {
    let admin: AdminClient<QuietContext> =
        client_config(config)?.create_with_context(QuietContext::default()).context("creating Kafka admin client")?;
    let max_bytes = max_message_bytes.to_string();
    let new =
        NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)).set("max.message.bytes", &max_bytes);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .with_context(|| format!("creating topic {topic:?} on {}", config.brokers))?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, partitions, max_message_bytes, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t:?} on {}: {e}", config.brokers),
        }
    }
    Ok(())
}

/// Forwards librdkafka logs and errors to `tracing`, at most one line per
/// distinct message every 30 s.
#[derive(Default)]
pub struct QuietContext {
    last: Mutex<HashMap<String, Instant>>,
}

impl QuietContext {
    fn should_log(&self, key: &str) -> bool {
        let Ok(mut last) = self.last.lock() else { return true };
        let now = Instant::now();
        match last.get(key) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(30) => false,
            _ => {
                if last.len() > 1000 {
                    last.clear();
                }
                last.insert(key.to_string(), now);
                true
            }
        }
    }
}

impl ConsumerContext for QuietContext {}

/// A client without a group, for the high watermarks `--drain` checks
/// against. Not the pipeline consumer: a caught-up consumer keeps a Fetch
/// parked at the broker for up to `fetch.wait.max.ms` (500 ms), and Kafka
/// answers one connection's requests in order, so each watermark query
/// behind it waited that long (1.5 s for three partitions at the end of a
/// drain, holding back the last rows).
pub type WatermarkClient = BaseConsumer<QuietContext>;

pub fn watermark_client(config: &KafkaConfig) -> anyhow::Result<WatermarkClient> {
    client_config(config)?.create_with_context(QuietContext::default()).context("creating Kafka client")
}

/// The partition ids of `topic` (empty if the broker does not know it
/// yet), from one metadata request bounded by `--connect-timeout`.
pub fn topic_partitions(config: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<i32>> {
    let c = watermark_client(config)?;
    let md = c
        .fetch_metadata(Some(topic), config.connect_timeout.max(Duration::from_millis(100)))
        .with_context(|| format!("reading the partitions of topic {topic}"))?;
    let mut ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        // Keyed by facility and level, not by text: during an outage every
        // broker thread repeats the same complaint with changing details
        // ("after 12ms in state CONNECT, 3 identical error(s) suppressed").
        if !self.should_log(&format!("log {fac} {}", level as i32)) {
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {msg}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition is reported through the consumer too; it is
        // information the pipeline uses, not an error.
        if matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF))
        {
            return;
        }
        // Keyed by the error code, for the same reason as `log`.
        if self.should_log(&format!("error {error}")) {
            tracing::warn!(target: "librdkafka", "{error}: {reason} (repeats are suppressed for 30 s)");
        }
    }
}

/// A partition assignment change, as seen by the consume loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Consumer context: quiet logs plus a queue of rebalance events that the
/// consume loop drains after every poll (rebalance callbacks run inside
/// `poll`, on the consume thread, so the order is exact).
#[derive(Default)]
pub struct PipelineContext {
    quiet: QuietContext,
    rebalances: Mutex<Vec<RebalanceEvent>>,
    /// Partitions this member owns right now. Updated inside the rebalance
    /// callbacks themselves (not when the consume loop gets round to the
    /// events), so that a batch still on its way to the sink cannot commit
    /// a checkpoint for a partition that already belongs to someone else;
    /// that would only move its offset back and cost a replay, but it is
    /// pointless work.
    owned: Mutex<std::collections::BTreeSet<i32>>,
    /// The consume loop's batch queue, which assigned partitions are
    /// forwarded to (see [`queue`]).
    queue: QueueSlot,
}

impl PipelineContext {
    pub fn owns(&self, p: i32) -> bool {
        self.owned.lock().map(|o| o.contains(&p)).unwrap_or(false)
    }

    pub fn queue_slot(&self) -> &QueueSlot {
        &self.queue
    }

    pub fn take_rebalances(&self) -> Vec<RebalanceEvent> {
        self.rebalances.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

impl ClientContext for PipelineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.quiet.log(level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.quiet.error(error, reason)
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.queue.forward(c, tpl.elements().iter().map(|e| (e.topic(), e.partition())));
        }
        if let (Rebalance::Revoke(tpl), Ok(mut owned)) = (rebalance, self.owned.lock()) {
            for e in tpl.elements() {
                owned.remove(&e.partition());
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), Ok(mut owned)) = (rebalance, self.owned.lock()) {
            owned.extend(tpl.elements().iter().map(|e| e.partition()));
        }
        let ev = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(tpl.elements().iter().map(|e| e.partition()).collect()),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(tpl.elements().iter().map(|e| e.partition()).collect()),
            Rebalance::Error(e) => {
                tracing::warn!("rebalance error: {e}");
                return;
            }
        };
        tracing::info!("{ev:?}");
        if let Ok(mut v) = self.rebalances.lock() {
            v.push(ev);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if self.quiet.should_log("commit failed") {
                tracing::warn!("offset commit failed: {e} (the next commit supersedes it; replay is idempotent)");
            }
        }
    }
}

pub type PipelineConsumer = BaseConsumer<PipelineContext>;

/// The consumer's librdkafka settings: adstream's defaults, then every
/// `--kafka-option` (which wins).
fn consumer_config(config: &KafkaConfig, group: &str) -> anyhow::Result<ClientConfig> {
    let mut cfg = client_config(config)?;
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Off: with the batch API (`super::queue`) an end-of-partition
        // event moves librdkafka's application position one past the end,
        // and a pause/resume after it would skip a message. `--drain`
        // compares against the broker's high watermark instead.
        .set("enable.partition.eof", "false")
        // Well above MAX_MESSAGE_BYTES. Records larger than
        // max.partition.fetch.bytes (1 MiB default), such as a 1 MiB message
        // to reject, are still fetched whole: a fetch always returns the
        // first record batch, and librdkafka grows the partition fetch size.
        .set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "65536")
        // librdkafka >= 2.1 pauses fetching for fetch.queue.backoff.ms
        // (default 1 s) whenever its prefetch queue is full; with a consumer
        // that drains the queue in milliseconds, that pause halved
        // throughput. Measured: 1M events 9.5 s -> 4.5 s end to end.
        .set("fetch.queue.backoff.ms", "10");
    // A crashed member's partitions wait for its session to expire before
    // anyone else replays them; 10 s instead of Kafka's 45 s makes recovery
    // after a kill -9 quick. --kafka-option (applied next) overrides them.
    cfg.set("session.timeout.ms", "10000").set("heartbeat.interval.ms", "3000");
    apply_options(&mut cfg, config)?;
    Ok(cfg)
}

/// A consumer-group member that never auto-commits: offsets are committed
/// by the pipeline, and only once the results they cover are durable.
pub fn consumer(config: &KafkaConfig, group: &str) -> anyhow::Result<PipelineConsumer> {
    let cfg = consumer_config(config, group)?;
    let c: PipelineConsumer = cfg.create_with_context(PipelineContext::default()).context("creating Kafka consumer")?;
    c.subscribe(&[&config.topic]).with_context(|| format!("subscribing to {:?}", config.topic))?;
    Ok(c)
}

/// The committed offset and checkpoint of one partition: `Ok(None)` when the
/// group has never committed it (start from the earliest offset).
pub fn committed_checkpoint(c: &PipelineConsumer, topic: &str, partition: i32) -> KafkaResult<Option<Checkpoint>> {
    Ok(match committed(c, topic, partition)? {
        Committed::Never => None,
        Committed::Foreign(offset) => Some(Checkpoint::at(offset, None, None)),
        Committed::Checkpoint(cp) => Some(cp),
    })
}

/// What the group holds for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// No committed offset: never committed, or expired
    /// (`offsets.retention.minutes`).
    Never,
    /// An offset without an adstream checkpoint in its metadata: reset with
    /// `kafka-consumer-groups --reset-offsets` (which drops metadata),
    /// committed by another tool, or by an adstream whose metadata format
    /// this one does not read.
    Foreign(i64),
    Checkpoint(Checkpoint),
}

/// The committed offset of one partition and what its metadata says.
pub fn committed(c: &PipelineConsumer, topic: &str, partition: i32) -> KafkaResult<Committed> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    let Some(elem) = got.find_partition(topic, partition) else { return Ok(Committed::Never) };
    elem.error()?;
    let Offset::Offset(offset) = elem.offset() else { return Ok(Committed::Never) };
    // rdkafka panics on non-UTF-8 metadata; someone else's commit must not
    // crash us, so treat it as "no checkpoint".
    let metadata =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| elem.metadata().to_string())).unwrap_or_default();
    Ok(Checkpoint::from_metadata(offset, &metadata).map_or(Committed::Foreign(offset), Committed::Checkpoint))
}

/// Commits checkpoints (offset + metadata) for `topic`, for the partitions
/// this member still owns.
pub fn commit(c: &PipelineConsumer, topic: &str, checkpoints: &[(i32, Checkpoint)], sync: bool) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for (p, cp) in checkpoints.iter().filter(|(p, _)| c.context().owns(*p)) {
        tpl.add_partition_offset(topic, *p, Offset::Offset(cp.offset))?;
        if let Some(mut e) = tpl.find_partition(topic, *p) {
            e.set_metadata(cp.metadata());
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let mode = if sync { rdkafka::consumer::CommitMode::Sync } else { rdkafka::consumer::CommitMode::Async };
    c.commit(&tpl, mode)
}

/// The high watermark of `topic`/`p` as of the last fetch response, without
/// a network round trip (librdkafka caches it), or `None` if not known yet.
/// Used for the lag figure of the stats line.
pub fn cached_high_watermark(consumer: &PipelineConsumer, topic: &str, p: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, the
    // topic is a NUL-terminated string that outlives the call, and the two
    // out-pointers point at live locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            p,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_logs_each_kind_of_complaint_once_per_30_s() {
        let q = QuietContext::default();
        let mut logged = 0;
        for _ in 0..300 {
            // Whatever the text (broker thread, counters), the key is the
            // facility and level, or the error code.
            if q.should_log(&format!("log FAIL {}", RDKafkaLogLevel::Error as i32)) {
                logged += 1;
            }
            if q.should_log(&format!("error {}", KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure))) {
                logged += 1;
            }
        }
        assert_eq!(logged, 2, "one FAIL line and one BrokerTransportFailure line for 300 of each");
    }

    #[test]
    fn each_tls_or_sasl_failure_names_its_setting() {
        // librdkafka 2.12's own words, as seen against scripts/tls.sh's broker.
        for (msg, names) in [
            (
                "SASL authentication error: Authentication failed during authentication due to invalid credentials \
                 with SASL mechanism SCRAM-SHA-512",
                "--kafka-sasl-username",
            ),
            (
                "sasl_ssl://127.0.0.1:49094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate \
                 verify failed: broker certificate could not be verified",
                "--kafka-ssl-ca-file",
            ),
            (
                "SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker \
                 listener?",
                "--kafka-security-protocol",
            ),
            (
                "Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42",
                "--kafka-ssl-cert-file",
            ),
        ] {
            let hint = security_hint(msg).unwrap_or_else(|| panic!("no hint for {msg}"));
            assert!(hint.contains(names), "{msg}: {hint}");
        }
        assert_eq!(security_hint("Connect to ipv4#127.0.0.1:1 failed: Connection refused"), None);
    }

    #[test]
    fn kafka_options_override_the_consumer_defaults() {
        let kafka = KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "t".into(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            options: [("fetch.queue.backoff.ms", "50"), ("max.partition.fetch.bytes", "4194304")]
                .map(|(key, value)| crate::config::KafkaOption {
                    key: key.into(),
                    value: crate::config::secret::Secret::new(value),
                })
                .into(),
            connect_timeout: Duration::from_secs(1),
            tls: Default::default(),
            ssl_key_password: None,
            ssl_verify_hostname: true,
        };
        let cfg = consumer_config(&kafka, "g").unwrap();
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("50"), "the option wins over adstream's 10");
        assert_eq!(cfg.get("max.partition.fetch.bytes"), Some("4194304"));
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"), "defaults not overridden stay");
    }
}
