//! The command line as an operator meets it: secrets never appear in
//! `--help` or in error output, and hostile identifiers are refused before
//! any SQL is sent. No services needed (endpoints point at closed ports).

use std::process::{Command, Output};

const SECRETS: [&str; 5] =
    ["ch-env-secret-1", "kafka-env-secret-2", "kafka-user-secret-3", "opt-secret-4", "url-secret-5"];

/// `adstream` with every secret-bearing variable set (and nothing else from
/// the caller's `ADSTREAM_*` environment).
fn adstream_with_secrets() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ADSTREAM_") {
            c.env_remove(k);
        }
    }
    c.env("ADSTREAM_CLICKHOUSE_PASSWORD", SECRETS[0])
        .env("ADSTREAM_KAFKA_SASL_PASSWORD", SECRETS[1])
        .env("ADSTREAM_KAFKA_SASL_USERNAME", SECRETS[2])
        .env("ADSTREAM_KAFKA_OPTIONS", format!("sasl.oauthbearer.config={}", SECRETS[3]))
        .env("ADSTREAM_CLICKHOUSE_URL", format!("http://adstream:{}@127.0.0.1:1", SECRETS[4]))
        .env("ADSTREAM_BROKERS", "127.0.0.1:1");
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_no_secret(what: &str, out: &str) {
    for s in SECRETS {
        assert!(!out.contains(s), "{what} printed the secret {s:?}:\n{out}");
    }
}

#[test]
fn help_never_shows_secret_values_even_when_they_are_set() {
    for sub in ["run", "generate", "migrate"] {
        let out = adstream_with_secrets().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help: {}", text(&out));
        let help = text(&out);
        assert_no_secret(&format!("{sub} --help"), &help);
        if sub != "generate" {
            assert!(help.contains("--clickhouse-password-file"), "{help}");
            assert!(help.contains("[env: ADSTREAM_CLICKHOUSE_PASSWORD]"), "the variable is named, not its value");
        }
        if sub != "migrate" {
            for flag in ["--kafka-sasl-password-file", "--kafka-security-protocol", "--kafka-sasl-mechanism"] {
                assert!(help.contains(flag), "{sub}: {flag} missing");
            }
        }
        println!("{sub} --help: {} bytes, none of the {} secrets set in its environment", help.len(), SECRETS.len());
    }
    let out = adstream_with_secrets().args(["run", "--help"]).output().unwrap();
    assert!(text(&out).contains("--dlq-topic"));
}

#[test]
fn errors_never_show_secret_values() {
    // ClickHouse unreachable: the error names the endpoint, without the
    // password in its userinfo.
    let out = adstream_with_secrets().args(["migrate", "--database", "adx"]).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("http://adstream:<redacted>@127.0.0.1:1"), "{err}");
    assert_no_secret("migrate against a closed port", &err);

    // A malformed --kafka-option is reported by key, not by value.
    let out = adstream_with_secrets()
        .env("ADSTREAM_KAFKA_OPTIONS", SECRETS[3])
        .args(["generate", "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("expected key=value"), "{err}");
    assert_no_secret("generate with a malformed option", &err);

    // A password both set and given as a file is refused without echoing it.
    let out = adstream_with_secrets()
        .env("ADSTREAM_CLICKHOUSE_PASSWORD_FILE", "/nonexistent/pw")
        .args(["migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("use one"), "{err}");
    assert_no_secret("password and password file", &err);
}

#[test]
fn hostile_database_names_are_refused_before_any_sql() {
    for db in ["x; DROP TABLE y", "adtech.ad_window_parts", "a`b", "db--", "1db"] {
        for sub in ["migrate", "run"] {
            let out = adstream_with_secrets().args([sub, "--database", db]).output().unwrap();
            assert!(!out.status.success(), "{sub} --database {db:?} must fail");
            let err = text(&out);
            assert!(err.contains("is not a plain identifier"), "{sub} --database {db:?}: {err}");
        }
    }
}
