//! Docker cannot run on the project's machines, so `docker-compose.yml` and
//! the `Dockerfile` are checked here against what does run: the native
//! scripts (ports, Kafka version), the binary's own flags (`adstream run
//! --help`: variable names, defaults) and the test build (`--locked`). No
//! services needed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The build command of the Dockerfile: release, the committed lock file.
const BUILD: &str = "cargo build --release --locked --bin adstream";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML").remove(0)
}

fn services(doc: &Yaml) -> Vec<(String, &Yaml)> {
    doc["services"].as_hash().expect("services").iter().map(|(k, v)| (k.as_str().unwrap().to_string(), v)).collect()
}

/// `VAR="${VAR:-default}"` in a script.
fn script_default(script: &str, var: &str) -> String {
    let text = read(script);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("${{{var}:-")))
        .unwrap_or_else(|| panic!("{script}: no default for {var}"));
    let rest = line.split(&format!("${{{var}:-")).nth(1).unwrap();
    rest.split('}').next().unwrap().to_string()
}

fn adstream(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_adstream")).args(args).env_clear().output().unwrap();
    assert!(out.status.success(), "adstream {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The `[env: NAME` entries of a `--help` text.
fn help_envs(help: &str) -> BTreeSet<String> {
    help.split("[env: ").skip(1).map(|s| s.split([']', '=']).next().unwrap().to_string()).collect()
}

/// `[default: X]` of `--flag` in a `--help` text.
fn help_default(help: &str, flag: &str) -> String {
    let start = help.find(&format!("      {flag} ")).unwrap_or_else(|| panic!("{flag} not in help"));
    let rest = &help[start..];
    let d = rest.find("[default: ").unwrap();
    rest[d + 10..].split(']').next().unwrap().to_string()
}

fn ports(svc: &Yaml) -> Vec<String> {
    svc["ports"].as_vec().map(|v| v.iter().map(|p| p.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn env_map(svc: &Yaml) -> Vec<(String, String)> {
    let Some(h) = svc["environment"].as_hash() else { return Vec::new() };
    h.iter()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("{k:?}: {other:?}"),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap().trim_end_matches('/')
}

#[test]
fn images_are_pinned_and_kafka_matches_the_native_script() {
    let doc = compose();
    let mut images = Vec::new();
    for (name, svc) in services(&doc) {
        if let Some(image) = svc["image"].as_str() {
            let (_, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{name}: image {image} has no tag"));
            assert!(!tag.is_empty() && tag != "latest", "{name}: image {image} must pin a version");
            images.push(image.to_string());
        }
    }
    for line in read("Dockerfile").lines().filter(|l| l.starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap();
        let (_, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("Dockerfile: {image} has no tag"));
        assert!(tag != "latest", "Dockerfile: {image} must pin a version");
        images.push(image.to_string());
    }
    let kafka_version = script_default("scripts/kafka.sh", "KAFKA_VERSION");
    assert_eq!(doc["services"]["kafka"]["image"].as_str(), Some(format!("apache/kafka:{kafka_version}").as_str()));
    println!("{} images pinned: {}; Kafka {kafka_version} as scripts/kafka.sh", images.len(), images.join(", "));
}

#[test]
fn ports_are_the_native_ones_and_the_binarys_defaults() {
    let doc = compose();
    let run_help = adstream(&["run", "--help"]);
    let kafka_port = script_default("scripts/kafka.sh", "KAFKA_PORT");
    let ch_port = script_default("scripts/clickhouse.sh", "CLICKHOUSE_PORT");
    let metrics_port = port_of(&help_default(&run_help, "--metrics-addr")).to_string();
    assert_eq!((kafka_port.as_str(), ch_port.as_str(), metrics_port.as_str()), ("9092", "8123", "9464"));
    assert_eq!(port_of(&help_default(&run_help, "--brokers")), kafka_port);
    assert_eq!(port_of(&help_default(&run_help, "--clickhouse-url")), ch_port);
    for (svc, port) in [("kafka", &kafka_port), ("clickhouse", &ch_port), ("adstream", &metrics_port)] {
        assert!(
            ports(&doc["services"][svc]).contains(&format!("{port}:{port}")),
            "{svc} must publish {port}:{port}: {:?}",
            ports(&doc["services"][svc])
        );
    }
    assert!(read("Dockerfile").lines().any(|l| l.trim() == format!("EXPOSE {metrics_port}")));
    println!("ports: Kafka {kafka_port}, ClickHouse {ch_port}, metrics {metrics_port} in scripts, binary and compose");
}

#[test]
fn the_adstream_service_uses_only_variables_the_binary_accepts() {
    let doc = compose();
    let svc = &doc["services"]["adstream"];
    let command: Vec<&str> = svc["command"].as_vec().expect("command").iter().map(|c| c.as_str().unwrap()).collect();
    // The command parses (clap rejects unknown flags before --help).
    let mut with_help = command.clone();
    with_help.push("--help");
    let help = adstream(&with_help);
    let accepted = help_envs(&adstream(&["run", "--help"]));
    assert!(accepted.len() >= 30, "{accepted:?}");
    let env = env_map(svc);
    for (k, _) in &env {
        assert!(accepted.contains(k), "docker-compose.yml sets {k}, which `adstream {}` does not read", command[0]);
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{k} unset"));
    // Addresses point at the other services, on ports they listen on.
    let brokers = get("ADSTREAM_BROKERS");
    let advertised =
        env_map(&doc["services"]["kafka"]).into_iter().find(|(k, _)| k == "KAFKA_ADVERTISED_LISTENERS").unwrap().1;
    assert!(advertised.contains(&format!("//{brokers}")), "{brokers} is not among Kafka's listeners {advertised}");
    assert_eq!(get("ADSTREAM_CLICKHOUSE_URL"), "http://clickhouse:8123");
    let metrics = get("ADSTREAM_METRICS_ADDR");
    assert!(metrics.starts_with("0.0.0.0:"), "in a container the endpoint must listen on every interface: {metrics}");
    // The health check asks /healthz on that port, with a tool the image has.
    let check: Vec<&str> =
        svc["healthcheck"]["test"].as_vec().expect("healthcheck").iter().map(|c| c.as_str().unwrap()).collect();
    let url = format!("http://127.0.0.1:{}/healthz", port_of(&metrics));
    assert!(check.contains(&url.as_str()), "{check:?} must ask {url}");
    assert_eq!(check[1], "curl");
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.lines().any(|l| l.contains("apt-get install") && l.contains(" curl")), "the image needs curl");
    for line in dockerfile.lines().filter(|l| l.starts_with("ENV ")) {
        let name = line[4..].split('=').next().unwrap().trim();
        if name.starts_with("ADSTREAM_") {
            assert!(accepted.contains(name), "Dockerfile sets {name}, which adstream does not read");
        }
    }
    for dep in ["kafka", "clickhouse"] {
        assert_eq!(svc["depends_on"][dep]["condition"].as_str(), Some("service_healthy"), "{dep}");
    }
    assert!(help.contains("--self-feed"));
    println!("adstream service: {} variables, all read by `adstream run`; health check {url}", env.len());
}

#[test]
fn the_dockerfile_builds_like_the_tests_from_what_the_crate_needs() {
    let dockerfile = read("Dockerfile");
    let runs: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("RUN cargo")).collect();
    assert_eq!(runs, vec![format!("RUN {BUILD}").as_str()], "the build command");
    // --locked must succeed: the committed lock file covers Cargo.toml.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1", "--no-deps"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(out.status.success(), "Cargo.lock is stale for --locked: {}", String::from_utf8_lossy(&out.stderr));
    // Everything the build reads is copied in: the manifests, src/, and
    // every directory an include_str! reaches.
    let copied: BTreeSet<String> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[1..words.len() - 1].iter().map(|w| w.trim_start_matches("./").to_string()).collect::<Vec<_>>()
        })
        .collect();
    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "src"].iter().map(|s| s.to_string()).collect();
    for entry in walk(&Path::new(ROOT).join("src")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for part in text.split("include_str!(\"").skip(1) {
            let rel = part.split('"').next().unwrap();
            let abs = entry.parent().unwrap().join(rel);
            let abs = abs.canonicalize().unwrap_or_else(|e| panic!("{}: {rel}: {e}", entry.display()));
            let top = abs.strip_prefix(Path::new(ROOT).canonicalize().unwrap()).unwrap().components().next().unwrap();
            needed.insert(top.as_os_str().to_string_lossy().into_owned());
        }
    }
    for n in &needed {
        assert!(copied.contains(n), "the Dockerfile does not COPY {n} (copies {copied:?})");
    }
    assert!(dockerfile.contains("COPY --from=build /src/target/release/adstream "));
    // The build image's Rust is at least the crate's rust-version.
    let want = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let image = dockerfile.lines().find(|l| l.starts_with("FROM rust:")).unwrap();
    let have = image.split(':').nth(1).unwrap().split('-').next().unwrap();
    let v = |s: &str| s.split('.').map(|x| x.parse::<u32>().unwrap()).collect::<Vec<_>>();
    assert!(v(have) >= v(&want), "build image Rust {have} < rust-version {want}");
    println!("Dockerfile: `{BUILD}`, lock file current, copies {needed:?}, Rust {have} >= {want}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
