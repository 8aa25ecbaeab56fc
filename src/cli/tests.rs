//! Unit tests of the command line: listen addresses, and `Debug` output
//! that never shows a secret.

use super::*;

#[test]
fn metrics_addr_is_an_ip_and_port_or_off() {
    let p = |s: &str| s.parse::<ListenAddr>();
    assert_eq!(p("127.0.0.1:9464").unwrap().0, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(p("[::]:0").unwrap().0, Some("[::]:0".parse().unwrap()));
    assert_eq!(p("off").unwrap().0, None);
    assert!(p("localhost:9464").is_err() && p("9464").is_err());
}

#[test]
fn debug_output_redacts_every_secret() {
    let cli = Cli::try_parse_from([
        "adstream",
        "run",
        "--clickhouse-url",
        "https://ch:url-pass-1@ch.example:8443",
        "--clickhouse-password",
        "ch-pass-2",
        "--kafka-sasl-username",
        "kafka-user",
        "--kafka-sasl-password",
        "kafka-pass-3",
        "--kafka-option",
        "ssl.key.password=key-pass-4",
        "--kafka-option",
        "sasl.oauthbearer.config=token-5",
        "--kafka-ssl-key-password",
        "ssl-key-pass-6",
    ])
    .unwrap();
    let text = format!("{cli:?}");
    for secret in ["url-pass-1", "ch-pass-2", "kafka-pass-3", "key-pass-4", "token-5", "ssl-key-pass-6"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("kafka_options: [**REDACTED**, **REDACTED**]"), "{text}");
    assert!(text.contains("clickhouse_url: **REDACTED**"), "{text}");
    let Command::Run(args) = cli.command else { panic!("run") };
    assert_eq!(args.clickhouse.password().unwrap().unwrap().expose(), "ch-pass-2");
    assert_eq!(args.kafka.sasl_password().unwrap().unwrap().expose(), "kafka-pass-3");
    assert_eq!(args.dlq_topic, "ad-events-dlq");
    assert_eq!(args.kafka.ssl_key_password().unwrap().unwrap().expose(), "ssl-key-pass-6");
    let config = crate::config::RunConfig::try_from(&args).unwrap();
    let text = format!("{config:?}");
    for secret in ["url-pass-1", "ch-pass-2", "kafka-pass-3", "key-pass-4", "token-5", "ssl-key-pass-6"] {
        assert!(!text.contains(secret), "{secret} leaked from the config: {text}");
    }
}

#[test]
fn debug_output_redacts_the_redis_secrets() {
    let cli = Cli::try_parse_from([
        "adstream",
        "learn",
        "--redis-url",
        "rediss://u:redis-url-pass-1@redis.example:6380",
        "--redis-user",
        "acl-user",
        "--redis-password",
        "redis-pass-2",
    ])
    .unwrap();
    let text = format!("{cli:?}");
    for secret in ["redis-url-pass-1", "redis-pass-2"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let Command::Learn(args) = cli.command else { panic!("learn") };
    let config = crate::config::LearnConfig::try_from(&args).unwrap();
    let text = format!("{config:?}");
    // The URL's own password too (the derived Debug printed it before
    // the URL was a `Secret`).
    for secret in ["redis-url-pass-1", "redis-pass-2"] {
        assert!(!text.contains(secret), "{secret} leaked from the config: {text}");
    }
    assert_eq!(config.redis_url.expose(), "rediss://u:redis-url-pass-1@redis.example:6380");
    assert_eq!(config.redis_auth.password.as_ref().unwrap().expose(), "redis-pass-2");
    assert_eq!(config.redis_auth.user.as_deref(), Some("acl-user"));
}
