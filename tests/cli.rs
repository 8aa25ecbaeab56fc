//! The command line as an operator meets it: secrets never appear in
//! `--help` or in error output, and hostile identifiers are refused before
//! any SQL is sent. No services needed (endpoints point at closed ports).

mod common;

use common::bare;

use std::process::{Command, Output};

const SECRETS: [&str; 9] = [
    "ch-env-secret-1",
    "kafka-env-secret-2",
    "kafka-user-secret-3",
    "opt-secret-4",
    "url-secret-5",
    "ssl-key-secret-6",
    "redis-env-secret-7",
    "redis-user-secret-8",
    "redis-url-secret-9",
];

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
        .env("ADSTREAM_KAFKA_SSL_KEY_PASSWORD", SECRETS[5])
        .env("ADSTREAM_REDIS_PASSWORD", SECRETS[6])
        .env("ADSTREAM_REDIS_USER", SECRETS[7])
        .env("ADSTREAM_REDIS_URL", format!("redis://adstream:{}@127.0.0.1:1", SECRETS[8]))
        .env("ADSTREAM_BROKERS", "127.0.0.1:1")
        .env("ADSTREAM_METRICS_ADDR", "off")
        .env("ADSTREAM_CONNECT_TIMEOUT", "1s");
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
    for sub in ["run", "generate", "migrate", "learn", "predict"] {
        let out = adstream_with_secrets().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help: {}", text(&out));
        let help = text(&out);
        assert_no_secret(&format!("{sub} --help"), &help);
        if sub == "learn" || sub == "predict" {
            for flag in ["--redis-password-file", "--redis-ca-file", "--redis-cert-file", "--redis-user"] {
                assert!(help.contains(flag), "{sub}: {flag} missing");
            }
        }
        if sub != "generate" && sub != "predict" {
            assert!(help.contains("--clickhouse-password-file"), "{help}");
            assert!(help.contains("--clickhouse-ca-file"), "{help}");
            assert!(help.contains("[env: ADSTREAM_CLICKHOUSE_PASSWORD]"), "the variable is named, not its value");
        }
        if sub == "run" || sub == "generate" {
            for flag in [
                "--kafka-sasl-password-file",
                "--kafka-security-protocol",
                "--kafka-sasl-mechanism",
                "--kafka-ssl-ca-file",
                "--kafka-ssl-key-password-file",
            ] {
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

    // Redis unreachable: neither the URL's password nor the ACL user's.
    let predict = ["predict", "--campaign", "C001", "--format", "banner", "--country", "US", "--device", "iOS"];
    let out = adstream_with_secrets().args(predict).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("redis://adstream:<redacted>@127.0.0.1:1"), "{err}");
    assert_no_secret("predict against a closed port", &err);
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

/// Runs `cmd`, asserts a non-zero exit and exactly one stderr line that
/// contains `hint`; returns that line.
fn one_line_error(cmd: &mut Command, hint: &str) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{cmd:?} must fail:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{cmd:?}: one line, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(lines[0].contains(hint), "{cmd:?}: {:?} lacks {hint:?}", lines[0]);
    lines[0].to_string()
}

#[test]
fn a_misconfiguration_exits_non_zero_with_one_line_saying_what_to_fix() {
    let dir = std::env::temp_dir().join(format!("adstream-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "brokerz = \"x\"\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--clickhouse-url", "not a url"], "expected http://HOST:PORT"),
        (vec!["migrate", "--clickhouse-url", "ftp://ch.example"], "scheme \"ftp\" is not http or https"),
        (vec!["report", "--clickhouse-url", "http://"], "--clickhouse-url"),
        (vec!["run", "--sink", "kafka"], "[possible values: clickhouse, console]"),
        (vec!["run", "--window", "7s"], "does not divide a minute"),
        (vec!["demo", "--window", "45s"], "does not divide a minute"),
        (vec!["run", "--metrics-addr", "localhost"], "IP:PORT"),
        (vec!["run", "--window", "ten"], "--window"),
        (vec!["report", "--format", "native"], "[possible values: banner, interstitial, rewarded_video]"),
        (vec!["report", "--last", "0"], "--last"),
        (vec!["report", "--by", "region"], "[possible values: campaign-format, country, device, segment]"),
        (vec!["run", "--sink", "console"], "check --brokers / ADSTREAM_BROKERS"),
        (vec!["generate", "--count", "1"], "Kafka at 127.0.0.1:1 did not answer within 1s"),
        (vec!["run"], "ClickHouse at http://127.0.0.1:1 (set --clickhouse-url / ADSTREAM_CLICKHOUSE_URL)"),
        (vec!["migrate"], "http://127.0.0.1:1"),
        (vec!["report"], "http://127.0.0.1:1"),
        (vec!["--config", "/nonexistent/adstream.toml", "run"], "--config /nonexistent/adstream.toml: cannot read it"),
        (vec!["--config", bad_toml.to_str().unwrap(), "run"], "unknown setting `brokerz`"),
    ];
    for (args, hint) in &cases {
        let t0 = std::time::Instant::now();
        let line = one_line_error(bare().args(args), hint);
        println!("{:?} -> {line} ({:.1} s)", args, t0.elapsed().as_secs_f64());
    }
    one_line_error(bare().arg("report").env("ADSTREAM_REPORT_BY", "region"), "invalid value 'region'");
    println!("{} misconfigurations, each one line and a non-zero exit", cases.len() + 1);
}

/// Runs `cmd`, asserts a non-zero exit and exactly one stderr line, a JSON
/// object with level ERROR; returns it.
fn one_json_error(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(v["level"], "ERROR", "{v}");
    v
}

#[test]
fn json_logs_are_one_object_per_line_even_for_the_fatal_error() {
    let v = one_json_error(bare().args(["--log-format", "json", "run", "--sink", "console"]));
    assert!(v["message"].as_str().unwrap().contains("Kafka at 127.0.0.1:1"), "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
}

#[test]
fn settings_file_is_below_the_environment_and_flags_and_sections_win_over_the_top_level() {
    let dir = std::env::temp_dir().join(format!("adstream-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("adstream.toml");
    // The window is refused (7 s does not divide a minute), and the error
    // names the value that won.
    std::fs::write(&file, "window = \"7s\"\nsink = \"console\"\n[demo]\nwindow = \"9s\"\n").unwrap();
    let f = file.to_str().unwrap();
    one_line_error(bare().args(["--config", f, "run"]), "--window 7s");
    one_line_error(bare().args(["--config", f, "demo"]), "--window 9s");
    one_line_error(bare().args(["run", "--config", f]).env("ADSTREAM_WINDOW", "11s"), "--window 11s");
    one_line_error(
        bare().args(["run", "--config", f, "--window", "13s"]).env("ADSTREAM_WINDOW", "11s"),
        "--window 13s",
    );
    one_line_error(bare().arg("run").env("ADSTREAM_CONFIG", f), "--window 7s");
    // Settings from the file appear as the environment in --help.
    let out = bare().args(["--config", f, "run", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("[env: ADSTREAM_SINK=console]"));
}

/// Every flag of every subcommand is documented and has its own
/// `ADSTREAM_*` variable, named after the flag.
#[test]
fn every_flag_has_help_and_an_adstream_env_var() {
    use clap::CommandFactory;
    let cmd = adstream::cli::Cli::command();
    let mut checked = 0;
    for sub in cmd.get_subcommands() {
        let mut seen = std::collections::BTreeSet::new();
        for a in sub.get_arguments().chain(cmd.get_arguments()) {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let long = a.get_long().unwrap_or_else(|| panic!("{} {id}: no long flag", sub.get_name()));
            assert!(a.get_help().is_some_and(|h| !h.to_string().is_empty()), "{} --{long}: no help", sub.get_name());
            let env = a.get_env().unwrap_or_else(|| panic!("{} --{long}: no env var", sub.get_name()));
            let env = env.to_str().unwrap();
            let from_flag = format!("ADSTREAM_{}", long.replace('-', "_").to_uppercase());
            // A flag whose bare name says little alone may carry its
            // command's name: `report --by` is ADSTREAM_REPORT_BY.
            let qualified =
                format!("ADSTREAM_{}_{}", sub.get_name().to_uppercase(), long.replace('-', "_").to_uppercase());
            assert!(
                env == from_flag || env == format!("{from_flag}S") || env == qualified,
                "{} --{long}: {env}",
                sub.get_name()
            );
            assert!(seen.insert(env.to_string()), "{} {env} used twice", sub.get_name());
            checked += 1;
        }
        let help = bare().args([sub.get_name(), "--help"]).output().unwrap();
        assert!(help.status.success());
        assert!(String::from_utf8_lossy(&help.stdout).contains("--config <FILE>"), "{}", sub.get_name());
    }
    println!(
        "{checked} flags across {} subcommands: each with help and its ADSTREAM_* variable",
        cmd.get_subcommands().count()
    );
}

#[test]
fn kafka_option_values_may_hold_commas_and_the_env_var_takes_one_per_line() {
    // Reaching "did not answer" means every option was accepted (librdkafka
    // checks `debug` contexts when the client is created, before connecting).
    let unreachable = "Kafka at 127.0.0.1:1 did not answer within 1s";
    let flag = ["generate", "--count", "1", "--kafka-option", "debug=consumer,cgrp"];
    one_line_error(bare().args(flag), unreachable);
    // The whole value, commas included, reaches librdkafka: a bad context
    // after the comma is refused by librdkafka, not by our parser.
    let bad = ["generate", "--count", "1", "--kafka-option", "debug=consumer,nonsense"];
    let line = one_line_error(bare().args(bad), "Invalid value");
    assert!(!line.contains("expected key=value"), "{line}");
    // The variable: one option per line, commas kept, blank lines skipped.
    let env = "debug=consumer,cgrp\n\nclient.id=adstream:cli,test;x\n";
    one_line_error(bare().env("ADSTREAM_KAFKA_OPTIONS", env).args(["generate", "--count", "1"]), unreachable);
    // ... and each line is one option: a malformed second line is named as such.
    let env = "debug=consumer,cgrp\nnot-an-option";
    let line = one_line_error(
        bare().env("ADSTREAM_KAFKA_OPTIONS", env).args(["generate", "--count", "1"]),
        "--kafka-option <redacted>: expected key=value",
    );
    assert!(!line.contains("consumer"), "{line}");
}

#[test]
fn every_help_lists_the_exit_codes() {
    for (sub, codes) in [
        (None, &["0 ", "1 ", "2 ", "3 ", "4 ", "130 "][..]),
        (Some("generate"), &["0 ", "1 ", "2 ", "3 ", "130 "][..]),
        (Some("run"), &["0 ", "1 ", "2 ", "130 "][..]),
        (Some("demo"), &["0 ", "1 ", "2 ", "130 "][..]),
        (Some("migrate"), &["0 ", "1 ", "2 "][..]),
        (Some("report"), &["0 ", "1 ", "2 "][..]),
        (Some("learn"), &["0 ", "1 ", "2 ", "130 "][..]),
        (Some("predict"), &["0 ", "1 ", "2 ", "3 ", "4 "][..]),
    ] {
        let out = bare().args(sub).arg("--help").output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        let at = help.find("Exit codes:").unwrap_or_else(|| panic!("{sub:?} --help has no exit codes:\n{help}"));
        let listed: Vec<&str> =
            help[at..].lines().skip(1).map(str::trim_start).filter(|l| l.starts_with(char::is_numeric)).collect();
        for c in codes {
            assert!(listed.iter().any(|l| l.starts_with(c)), "{sub:?}: exit code {c} missing: {listed:?}");
        }
        assert_eq!(listed.len(), codes.len(), "{sub:?}: {listed:?}");
    }
    let gen = String::from_utf8_lossy(&bare().args(["generate", "--help"]).output().unwrap().stdout).to_string();
    assert!(gen.contains("3    some events were not delivered"), "{gen}");
    // A usage error is still 2.
    assert_eq!(bare().args(["generate", "--rate", "fast"]).output().unwrap().status.code(), Some(2));
}

#[test]
fn a_panic_is_one_log_record_even_in_json() {
    // ADSTREAM_TEST_PANIC is honoured by debug builds only (the ones tests run).
    let v = one_json_error(bare().env("ADSTREAM_TEST_PANIC", "1").env_remove("RUST_BACKTRACE").args([
        "--log-format",
        "json",
        "demo",
    ]));
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("panicked at src/obs/panic.rs") && msg.contains("a test panic | with a second line"), "{v}");
    // Text format, with a backtrace asked for: one line too.
    let out = bare().env("ADSTREAM_TEST_PANIC", "1").env("RUST_BACKTRACE", "1").args(["demo"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("a test panic | with a second line") && err.contains("backtrace="), "{err}");
}

/// The tests' own plumbing: a child that writes more than a pipe holds
/// (64 KiB) is drained while it runs, instead of blocking until the limit.
#[test]
fn a_child_with_a_lot_of_output_does_not_block_its_waiter() {
    let start = std::time::Instant::now();
    let out = common::run_ok(
        std::process::Command::new("bash").args(["-c", "head -c 300000 /dev/zero | tr '\\0' x; echo done >&2"]),
        std::time::Duration::from_secs(20),
    );
    assert_eq!(out.stdout.len(), 300_000);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "done");
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
}
