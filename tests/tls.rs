//! TLS and authentication on every connection, against the real servers
//! that `scripts/tls.sh up` starts (it makes the test PKI with openssl):
//! Kafka's SASL_SSL listener (PLAIN, SCRAM-SHA-256/512, users created with
//! kafka-configs) and its mutual-TLS listener beside the plaintext one,
//! ClickHouse over HTTPS with a password (the project's front), and
//! redis-server on its TLS port with an ACL user and client certificates
//! required.
//!
//! The pipeline over TLS (generate → run → learn → predict) must give what
//! the same pipeline over plaintext gives, and the plaintext run is checked
//! against the oracle (tests/common), computed from the raw events. Each
//! misconfiguration (wrong password, wrong CA, plaintext against a TLS port,
//! TLS against a plaintext port) must be one line naming the setting to fix,
//! a non-zero exit, and nothing committed.
//!
//! Ports: KAFKA_SASL_SSL_PORT, KAFKA_SSL_PORT, CLICKHOUSE_TLS_PORT,
//! REDIS_TLS_PORT (scripts/tls.sh's defaults otherwise).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Whether the secured services cannot be ours: with
/// ADSTREAM_TEST_EXTERNAL_SERVICES the broker is someone else's, and
/// `scripts/tls.sh up` would restart it with TLS listeners.
fn skipped() -> bool {
    if external_services() {
        println!(
            "SKIPPED: external services (ADSTREAM_TEST_EXTERNAL_SERVICES=1): scripts/tls.sh would restart their Kafka"
        );
        return true;
    }
    false
}

/// `scripts/tls.sh up` once per process (idempotent anyway), then the
/// settings of the secured services as `scripts/tls.sh env` prints them.
fn secured() -> &'static BTreeMap<String, String> {
    static ENV: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        service("tls", "up");
        let out = Command::new("bash")
            .args(["scripts/tls.sh", "env"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("scripts/tls.sh env");
        assert!(out.status.success(), "scripts/tls.sh env: {}", tail(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let env: BTreeMap<String, String> = text
            .lines()
            .flat_map(|l| l.trim_start_matches("export ").split_whitespace())
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        assert!(env.len() >= 14, "scripts/tls.sh env: {text}");
        env
    })
}

fn setting(k: &str) -> String {
    secured().get(k).unwrap_or_else(|| panic!("{k} not in scripts/tls.sh env")).clone()
}

/// The folder of the test PKI and passwords.
fn tls_dir() -> PathBuf {
    Path::new(&setting("ADSTREAM_KAFKA_SSL_CA_FILE")).parent().expect("TLS dir").to_path_buf()
}

fn secret(name: &str) -> String {
    std::fs::read_to_string(tls_dir().join(name)).expect("password file").trim().to_string()
}

/// `adstream` with every connection secured (SCRAM-SHA-512 over SASL_SSL,
/// HTTPS with a password, rediss:// with an ACL user and client certificate).
fn adstream_tls() -> Command {
    let mut c = adstream();
    for (k, v) in secured() {
        c.env(k, v);
    }
    c
}

fn run_out(cmd: &mut Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn adstream");
    wait_with_limit(child, Duration::from_secs(120))
}

/// A ClickHouse client over HTTPS for the secured server, built here from
/// hyper-tls (not adstream's code): trusts the test CA, logs in with the
/// password.
fn ch_tls() -> clickhouse::Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let ca = native_tls::Certificate::from_pem(&std::fs::read(tls_dir().join("ca.pem")).unwrap()).unwrap();
    let tls = native_tls::TlsConnector::builder().add_root_certificate(ca).build().unwrap();
    let https = hyper_tls::HttpsConnector::from((http, tokio_native_tls::TlsConnector::from(tls)));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    clickhouse::Client::with_http_client(client)
        .with_url(setting("ADSTREAM_CLICKHOUSE_URL"))
        .with_user("adstream")
        .with_password(secret("clickhouse-password"))
}

async fn tsv_on(client: &clickhouse::Client, sql: &str) -> String {
    let mut cur = client.query(sql).fetch_bytes("TabSeparated").unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = cur.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).unwrap()
}

/// What a database holds, as text to compare: every view's rows, the late
/// events, the learner's predictions and quality.
async fn results(client: &clickhouse::Client, db: &str, model: &str) -> Vec<(String, String)> {
    let queries = [
        format!(
            "SELECT window_start, campaign_id, ad_format, impressions, clicks, revenue, is_final \
             FROM {db}.ad_metrics ORDER BY ALL"
        ),
        format!(
            "SELECT window_start, campaign_id, ad_format, country, device, impressions, clicks, revenue \
             FROM {db}.ad_metrics_segments_10s ORDER BY ALL"
        ),
        format!("SELECT * FROM {db}.ad_metrics_1m ORDER BY ALL"),
        format!("SELECT partition, offset, event_id, reason FROM {db}.ad_late_events ORDER BY ALL"),
        format!(
            "SELECT window_start, campaign_id, ad_format, country, device, round(predicted_ctr, 12) \
             FROM {db}.ad_ctr_predictions WHERE model = '{model}' ORDER BY ALL"
        ),
        format!(
            "SELECT window_start, impressions, clicks, round(log_loss, 9) \
             FROM {db}.ad_ctr_quality WHERE model = '{model}' ORDER BY ALL"
        ),
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push((q.clone(), tsv_on(client, &q).await));
    }
    out
}

/// The `predict` line without its age (which differs between two runs).
fn prediction(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "predict: {}\n{text}\n{}", out.status, tail(&out.stderr));
    text.trim().rsplit_once(" | age ").map(|(p, _)| p.to_string()).unwrap_or_else(|| panic!("predict: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka, ClickHouse and Redis with TLS: run scripts/test.sh"]
async fn the_whole_pipeline_over_tls_with_authentication_equals_the_plaintext_run() {
    if skipped() {
        return;
    }
    let dir = scratch_dir();
    let topic = unique("tls");
    let (db, model) = (unique("tls"), "tlsctr");
    // 40 s of event time: windows [0,10) … [20,30) close on every partition,
    // so `learn` has windows to learn; 8 s of jitter (above the 5 s of
    // allowed lateness) makes late events.
    let jsonl = dir.join("events.jsonl");
    let out =
        run_out(
            adstream_tls()
                .args(["generate", "--topic", &topic, "--rate", "0", "--seed", "20", "--count", "40000"])
                .args(["--jitter", "8s", "--traffic", "segmented", "--out-jsonl", jsonl.to_str().unwrap()]),
        );
    assert!(out.status.success(), "generate over SASL_SSL: {}", tail(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Failed deliveries: 0"));

    // Over TLS: the SASL_SSL listener, ClickHouse over HTTPS, rediss://.
    let run = |cmd: &mut Command, what: &str| {
        let out = run_out(cmd);
        assert!(out.status.success(), "{what}: {}\n{}", out.status, tail(&out.stderr));
    };
    run(
        adstream_tls().args([
            "run",
            "--topic",
            &topic,
            "--group",
            &format!("{topic}_tls"),
            "--database",
            &db,
            "--drain",
        ]),
        "run over TLS",
    );
    run(adstream_tls().args(["learn", "--once", "--database", &db, "--model", model]), "learn over TLS");
    // Over plaintext: the same topic from the plaintext listener, the
    // plaintext ClickHouse and Redis of the other scripts.
    let redis_plain = std::env::var("ADSTREAM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    run(
        adstream().args(["run", "--topic", &topic, "--group", &format!("{topic}_plain"), "--database", &db, "--drain"]),
        "run over plaintext",
    );
    run(
        adstream().args(["learn", "--once", "--database", &db, "--model", model, "--redis-url", &redis_plain]),
        "learn over plaintext",
    );

    // The plaintext run equals the oracle, from the raw events.
    let oracle = Oracle::load(&db, &topic, &[&jsonl], DEFAULT_LATENESS).await;
    let (rows, late) = oracle.assert_matches(40_000).await;
    assert!(rows > 0 && late > 0, "rows {rows}, late {late}");

    // The TLS run equals the plaintext run, view by view.
    let secure = results(&ch_tls(), &db, model).await;
    let plain = results(&ch(), &db, model).await;
    for ((q, s), (_, p)) in secure.iter().zip(&plain) {
        assert!(!p.trim().is_empty(), "{q}: no rows over plaintext");
        assert_eq!(s, p, "{q}: over TLS vs over plaintext");
    }
    let learned = secure[4].1.lines().count();
    assert!(learned > 0, "learn over TLS published predictions");

    // predict from Redis over TLS (ACL user, client certificate) equals
    // predict from the plaintext Redis.
    let mut compared = 0;
    for (campaign, format, country, device) in
        [("C001", "banner", "US", "iOS"), ("C003", "rewarded_video", "KR", "Android")]
    {
        let args = ["predict", "--database", &db, "--model", model, "--campaign", campaign, "--format", format];
        let args2 = ["--country", country, "--device", device, "--max-age", "1h"];
        let secure = prediction(&run_out(adstream_tls().args(args).args(args2)));
        let plain = prediction(&run_out(adstream().args(args).args(args2).args(["--redis-url", &redis_plain])));
        assert_eq!(secure, plain, "predict over rediss:// vs redis://");
        compared += 1;
    }
    println!(
        "tls: {rows} rows and {late} late events equal to the oracle over plaintext and equal over TLS; \
         {learned} predictions, {compared} predict lines equal"
    );
}

#[test]
#[ignore = "needs Kafka with TLS listeners: run scripts/test.sh"]
fn every_kafka_mechanism_and_mutual_tls_deliver() {
    if skipped() {
        return;
    }
    let topic = unique("tls_mech");
    let dir = tls_dir();
    let ca = dir.join("ca.pem");
    let ssl_port = setting("ADSTREAM_BROKERS").replace(
        &std::env::var("KAFKA_SASL_SSL_PORT").unwrap_or_else(|_| "9094".into()),
        &std::env::var("KAFKA_SSL_PORT").unwrap_or_else(|_| "9095".into()),
    );
    let mut sent = 0;
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let out = run_out(
            adstream_tls()
                .args(["generate", "--topic", &topic, "--rate", "0", "--count", "100"])
                .args(["--kafka-sasl-mechanism", mechanism]),
        );
        assert!(out.status.success(), "{mechanism}: {}", tail(&out.stderr));
        sent += 100;
    }
    // Mutual TLS: the SSL listener requires a client certificate.
    let out = run_out(
        adstream()
            .args(["generate", "--topic", &topic, "--rate", "0", "--count", "100", "--brokers", &ssl_port])
            .args(["--kafka-security-protocol", "ssl", "--kafka-ssl-ca-file", ca.to_str().unwrap()])
            .arg("--kafka-ssl-cert-file")
            .arg(dir.join("client.pem"))
            .arg("--kafka-ssl-key-file")
            .arg(dir.join("client.key")),
    );
    assert!(out.status.success(), "mutual TLS: {}", tail(&out.stderr));
    sent += 100;
    let landed = sum3(high_watermarks(&topic).expect("high watermarks"));
    assert_eq!(landed, sent, "every event sent over each mechanism is in the topic");
}

/// Runs `cmd`, expecting a non-zero exit with exactly one `error:` line
/// that contains `names`, and no secret of the test PKI in the output.
fn fails_naming(what: &str, cmd: &mut Command, names: &str) -> String {
    let out = run_out(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{what}: exited 0\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line\n{stderr}");
    assert!(errors[0].contains(names), "{what}: the error names {names:?}: {}", errors[0]);
    for pw in ["kafka-password", "clickhouse-password", "redis-password"] {
        let s = secret(pw);
        let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
        assert!(!all.contains(&s), "{what}: the {pw} leaked");
    }
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka, ClickHouse and Redis with TLS: run scripts/test.sh"]
async fn each_misconfiguration_is_one_line_naming_the_setting_and_nothing_is_committed() {
    if skipped() {
        return;
    }
    let dir = tls_dir();
    let other_ca = dir.join("other-ca.pem");
    let wrong = scratch_dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let topic = unique("tls_bad");
    let out = run_out(adstream_tls().args(["generate", "--topic", &topic, "--rate", "0", "--count", "300"]));
    assert!(out.status.success(), "generate: {}", tail(&out.stderr));
    let plain_brokers = brokers();
    let db = unique("tls_bad");
    let mut lines = Vec::new();

    // `run`: Kafka and ClickHouse. Each failure leaves the group without a
    // committed offset.
    let kafka_cases: Vec<(&str, Vec<String>, Vec<&str>, &str)> = vec![
        (
            "Kafka: wrong SASL password",
            vec!["--kafka-sasl-password-file".into(), wrong.display().to_string()],
            vec!["ADSTREAM_KAFKA_SASL_PASSWORD_FILE"],
            "--kafka-sasl-username and the SASL password",
        ),
        (
            "Kafka: wrong CA",
            vec!["--kafka-ssl-ca-file".into(), other_ca.display().to_string()],
            vec![],
            "--kafka-ssl-ca-file",
        ),
        (
            "Kafka: plaintext against the SASL_SSL listener",
            vec!["--kafka-security-protocol".into(), "plaintext".into()],
            vec!["ADSTREAM_KAFKA_SSL_CA_FILE"],
            "--kafka-security-protocol",
        ),
        (
            "Kafka: TLS against the plaintext listener",
            vec!["--brokers".into(), plain_brokers.clone()],
            vec![],
            "--kafka-security-protocol",
        ),
        (
            "ClickHouse: wrong password",
            vec!["--clickhouse-password-file".into(), wrong.display().to_string()],
            vec!["ADSTREAM_CLICKHOUSE_PASSWORD_FILE"],
            "--clickhouse-user",
        ),
        (
            "ClickHouse: wrong CA",
            vec!["--clickhouse-ca-file".into(), other_ca.display().to_string()],
            vec![],
            "--clickhouse-ca-file",
        ),
        (
            "ClickHouse: http:// against the HTTPS port",
            vec!["--clickhouse-url".into(), setting("ADSTREAM_CLICKHOUSE_URL").replace("https://", "http://")],
            vec!["ADSTREAM_CLICKHOUSE_CA_FILE"],
            "use https://",
        ),
        (
            "ClickHouse: https:// against the plaintext port",
            vec!["--clickhouse-url".into(), clickhouse_url().replace("http://", "https://")],
            vec!["ADSTREAM_CLICKHOUSE_PASSWORD_FILE"],
            "does not speak TLS",
        ),
    ];
    for (what, args, unset, names) in &kafka_cases {
        let group = unique("tls_bad_group");
        let mut cmd = adstream_tls();
        cmd.args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--drain"]);
        cmd.args(["--connect-timeout", "5s"]).args(args);
        for u in unset {
            cmd.env_remove(u);
        }
        lines.push(fails_naming(what, &mut cmd, names));
        let committed = committed_offsets(&group, &topic).expect("committed offsets");
        assert_eq!(committed, [-1, -1, -1], "{what}: nothing committed");
    }
    // ClickHouse refused before any row: the database of these runs has no
    // window rows (it may not exist at all).
    let rows = tsv_on(&ch_tls(), &format!("SELECT count() FROM system.tables WHERE database = '{db}'")).await;
    if rows.trim() != "0" {
        let parts = tsv_on(&ch_tls(), &format!("SELECT count() FROM {db}.ad_window_parts")).await;
        assert_eq!(parts.trim(), "0", "no window row was written");
    }

    // Redis: `predict` and `learn`.
    let redis_tls = setting("ADSTREAM_REDIS_URL");
    let redis_plain = std::env::var("ADSTREAM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let predict = ["predict", "--campaign", "C001", "--format", "banner", "--country", "US", "--device", "iOS"];
    let redis_cases: Vec<(&str, Vec<String>, Vec<&str>, &str)> = vec![
        (
            "Redis: wrong password",
            vec!["--redis-password-file".into(), wrong.display().to_string()],
            vec!["ADSTREAM_REDIS_PASSWORD_FILE"],
            "--redis-user and the password",
        ),
        ("Redis: wrong CA", vec!["--redis-ca-file".into(), other_ca.display().to_string()], vec![], "--redis-ca-file"),
        (
            "Redis: redis:// against the TLS port",
            vec!["--redis-url".into(), redis_tls.replace("rediss://", "redis://")],
            vec!["ADSTREAM_REDIS_CA_FILE", "ADSTREAM_REDIS_CERT_FILE", "ADSTREAM_REDIS_KEY_FILE"],
            "use rediss://",
        ),
        (
            "Redis: rediss:// against the plaintext port",
            vec!["--redis-url".into(), redis_plain.replace("redis://", "rediss://")],
            vec!["ADSTREAM_REDIS_USER", "ADSTREAM_REDIS_PASSWORD_FILE"],
            "use redis://",
        ),
    ];
    for (what, args, unset, names) in &redis_cases {
        let mut cmd = adstream_tls();
        cmd.args(predict).args(args);
        for u in unset {
            cmd.env_remove(u);
        }
        lines.push(fails_naming(what, &mut cmd, names));
    }
    // `learn` with a wrong Redis password stops at once, saving no model.
    let model = "tlsbad";
    let mut cmd = adstream_tls();
    cmd.args(["learn", "--once", "--database", &db, "--model", model]);
    cmd.args(["--redis-password-file", wrong.to_str().unwrap()]).env_remove("ADSTREAM_REDIS_PASSWORD_FILE");
    lines.push(fails_naming("learn: wrong Redis password", &mut cmd, "--redis-user and the password"));
    let saved = tsv_on(&ch_tls(), &format!("SELECT count() FROM {db}.ad_ctr_model WHERE model = '{model}'")).await;
    assert_eq!(saved.trim(), "0", "learn saved no model");

    for l in &lines {
        println!("{l}");
    }
}
