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
    for (svc, port) in [("kafka", &kafka_port), ("clickhouse", &ch_port)] {
        assert!(
            ports(&doc["services"][svc]).contains(&format!("{port}:{port}")),
            "{svc} must publish {port}:{port}: {:?}",
            ports(&doc["services"][svc])
        );
    }
    // The metrics and /ctr endpoints: on the host's loopback only.
    for (svc, port) in [("adstream", metrics_port.as_str()), ("learn", "9465")] {
        assert!(
            ports(&doc["services"][svc]) == [format!("127.0.0.1:{port}:{port}")],
            "{svc} must publish 127.0.0.1:{port}:{port} only: {:?}",
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
fn the_learn_and_redis_services_match_the_script_and_the_binary() {
    let doc = compose();
    let (redis, learn) = (&doc["services"]["redis"], &doc["services"]["learn"]);
    // Redis: a pinned image, on the native script's port, persisting nothing
    // as scripts/redis.sh does (it is a cache).
    let image = redis["image"].as_str().expect("redis image");
    assert!(image.starts_with("redis:7.") && !image.ends_with(":latest"), "{image}");
    let redis_port = script_default("scripts/redis.sh", "REDIS_PORT");
    assert!(ports(redis).contains(&format!("{redis_port}:{redis_port}")), "{:?}", ports(redis));
    let script = read("scripts/redis.sh");
    assert!(script.contains("save \"\"") && script.contains("appendonly no"), "scripts/redis.sh persists nothing");
    let cmd = strings(&redis["command"]);
    assert!(
        cmd.windows(2).any(|w| w == ["--save", ""]) && cmd.windows(2).any(|w| w == ["--appendonly", "no"]),
        "{cmd:?}"
    );
    // learn: its command parses, every variable is one `learn` reads.
    let command = strings(&learn["command"]);
    assert_eq!(command, ["learn"]);
    let help = adstream(&["learn", "--help"]);
    let accepted = help_envs(&help);
    let env = env_map(learn);
    for (k, _) in &env {
        assert!(accepted.contains(k), "docker-compose.yml sets {k}, which `adstream learn` does not read");
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{k} unset"));
    assert_eq!(get("ADSTREAM_REDIS_URL"), format!("redis://redis:{redis_port}"));
    assert_eq!(port_of(&help_default(&help, "--redis-url")), redis_port, "learn's default Redis is the script's");
    assert_eq!(get("ADSTREAM_CLICKHOUSE_URL"), "http://clickhouse:8123");
    let adstream_env = env_map(&doc["services"]["adstream"]);
    let run_db = adstream_env.iter().find(|(k, _)| k == "ADSTREAM_DATABASE").map(|(_, v)| v.clone());
    assert_eq!(Some(get("ADSTREAM_DATABASE")), run_db, "learn reads the database run writes");
    // Its endpoint: the binary's default port, published, asked by the health check.
    let metrics = get("ADSTREAM_METRICS_ADDR");
    let port = port_of(&help_default(&help, "--metrics-addr")).to_string();
    assert_eq!(port_of(&metrics), port);
    assert!(metrics.starts_with("0.0.0.0:"), "{metrics}");
    assert!(ports(learn).contains(&format!("127.0.0.1:{port}:{port}")), "{:?}", ports(learn));
    assert!(read("Dockerfile").lines().any(|l| l.trim() == format!("EXPOSE {port}")));
    let check = strings(&learn["healthcheck"]["test"]);
    assert!(check.contains(&format!("http://127.0.0.1:{port}/healthz")), "{check:?}");
    for dep in ["clickhouse", "redis"] {
        assert_eq!(learn["depends_on"][dep]["condition"].as_str(), Some("service_healthy"), "{dep}");
    }
    println!(
        "redis {image} on {redis_port}; learn: {} variables read by `adstream learn`, /healthz on {port}",
        env.len()
    );
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

/// The inner texts of every `<tag>…</tag>` in `xml` (comments removed
/// first; the tag must not nest in itself, which holds for our files).
fn xml_all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str()).skip(1).map(|s| s.split(close.as_str()).next().unwrap().trim()).collect()
}

fn xml_one<'a>(xml: &'a str, tag: &str) -> &'a str {
    let all = xml_all(xml, tag);
    assert_eq!(all.len(), 1, "<{tag}> once: {all:?}");
    all[0]
}

/// The variable of `<tag from_env="VAR"/>`.
fn xml_from_env<'a>(xml: &'a str, tag: &str) -> &'a str {
    let at = xml.find(&format!("<{tag} from_env=\"")).unwrap_or_else(|| panic!("<{tag} from_env=…/>"));
    xml[at..].split('"').nth(1).unwrap()
}

fn strip_comments(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        rest = rest[i..].split_once("-->").map_or("", |(_, r)| r);
    }
    out + rest
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[test]
fn the_cluster_profile_matches_its_config_files_and_the_binary() {
    let doc = compose();
    let all = services(&doc);
    let in_profile: BTreeSet<String> = all
        .iter()
        .filter(|(_, s)| strings(&s["profiles"]).contains(&"cluster".to_string()))
        .map(|(n, _)| n.clone())
        .collect();
    let ch = strip_comments(&read("deploy/cluster/clickhouse.xml"));
    let keeper = strip_comments(&read("deploy/cluster/keeper.xml"));

    // remote_servers: one cluster, 2 shards × 2 replicas, each replica a
    // ClickHouse service of the profile whose macros name its shard.
    let remote = xml_one(&ch, "remote_servers");
    let cluster = remote.trim_start_matches('<').split('>').next().unwrap().to_string();
    let shards = xml_all(remote, "shard");
    assert_eq!(shards.len(), 2, "{remote}");
    let (shard_var, replica_var) = (xml_from_env(&ch, "shard"), xml_from_env(&ch, "replica"));
    let server_image = doc["services"]["clickhouse"]["image"].as_str().unwrap();
    let mut replicas = BTreeSet::new();
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(xml_one(shard, "internal_replication"), "true", "replicated tables replicate themselves");
        let reps = xml_all(shard, "replica");
        assert_eq!(reps.len(), 2, "{shard}");
        for r in reps {
            let host = xml_one(r, "host");
            let svc = &doc["services"][host];
            assert!(in_profile.contains(host), "{host} is not a service of the cluster profile");
            assert_eq!(svc["image"].as_str(), Some(server_image), "{host}: the single-node server's pinned image");
            assert_eq!(svc["hostname"].as_str(), Some(host), "{host}: replicas find each other by hostname");
            let env = env_map(svc);
            let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(get(shard_var), Some((i + 1).to_string()), "{host}: {{shard}} macro");
            assert_eq!(get(replica_var).as_deref(), Some(host), "{host}: {{replica}} macro");
            assert_eq!(xml_one(r, "port"), "9000", "{host}: the native port");
            assert_eq!(get("CLICKHOUSE_USER").as_deref(), Some(xml_one(r, "user")), "{host}: inter-server user");
            assert_eq!(get("CLICKHOUSE_PASSWORD").as_deref(), Some(xml_one(r, "password")), "{host}");
            let mounts = strings(&svc["volumes"]);
            assert!(
                mounts
                    .iter()
                    .any(|m| m.starts_with("./deploy/cluster/clickhouse.xml:/etc/clickhouse-server/config.d/")),
                "{host}: {mounts:?}"
            );
            assert!(replicas.insert(host.to_string()), "{host} twice");
        }
    }

    // Keeper: the servers' <zookeeper> nodes are the Raft ensemble of
    // keeper.xml, each a service of the profile with its own server id.
    let keeper_port = xml_one(&keeper, "tcp_port");
    let raft = xml_all(xml_one(&keeper, "raft_configuration"), "server");
    assert_eq!(raft.len(), 3, "three Keeper nodes");
    let zk: Vec<(String, String)> = xml_all(xml_one(&ch, "zookeeper"), "node")
        .iter()
        .map(|n| (xml_one(n, "host").to_string(), xml_one(n, "port").to_string()))
        .collect();
    let id_var = xml_from_env(&keeper, "server_id");
    let mut ids = BTreeSet::new();
    for s in &raft {
        let (id, host) = (xml_one(s, "id"), xml_one(s, "hostname"));
        assert!(zk.contains(&(host.to_string(), keeper_port.to_string())), "{host}:{keeper_port} not in {zk:?}");
        let svc = &doc["services"][host];
        assert!(in_profile.contains(host), "{host}");
        assert_eq!(svc["hostname"].as_str(), Some(host));
        let image = svc["image"].as_str().unwrap();
        assert_eq!(image.rsplit_once(':').map(|t| t.1), server_image.rsplit_once(':').map(|t| t.1), "{image}");
        let env = env_map(svc);
        assert_eq!(env.iter().find(|(k, _)| k == id_var).map(|(_, v)| v.as_str()), Some(id), "{host}: server id");
        assert!(strings(&svc["volumes"])
            .contains(&"./deploy/cluster/keeper.xml:/etc/clickhouse-keeper/keeper_config.xml:ro".to_string()));
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 3);
    assert_eq!(zk.len(), 3);

    // adstream: two replicas passing --cluster with the cluster's name,
    // every variable one `adstream run` reads, ClickHouse on a cluster node.
    let svc = &doc["services"]["adstream-cluster"];
    assert!(in_profile.contains("adstream-cluster"));
    assert_eq!(svc["deploy"]["replicas"].as_i64(), Some(2));
    let command: Vec<String> = strings(&svc["command"]);
    let at = command.iter().position(|c| c == "--cluster").expect("--cluster");
    assert_eq!(command[at + 1], cluster, "the name in remote_servers");
    let mut with_help: Vec<&str> = command.iter().map(String::as_str).collect();
    with_help.push("--help");
    let accepted = help_envs(&adstream(&with_help));
    assert!(accepted.contains("ADSTREAM_CLUSTER"));
    let env = env_map(svc);
    for (k, _) in &env {
        assert!(accepted.contains(k), "adstream-cluster sets {k}, which `adstream run` does not read");
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{k}"));
    let url = get("ADSTREAM_CLICKHOUSE_URL");
    let host = url.trim_start_matches("http://").split(':').next().unwrap();
    assert!(replicas.contains(host) && port_of(&url) == "8123", "{url} is not a cluster node's HTTP port");
    assert_eq!(svc["depends_on"][host]["condition"].as_str(), Some("service_healthy"));
    let advertised =
        env_map(&doc["services"]["kafka"]).into_iter().find(|(k, _)| k == "KAFKA_ADVERTISED_LISTENERS").unwrap().1;
    assert!(advertised.contains(&format!("//{}", get("ADSTREAM_BROKERS"))));
    assert_ne!(get("ADSTREAM_GROUP"), get_default_group(&doc), "its own consumer group");

    // No two services publish the same host port.
    let mut published = BTreeSet::new();
    for (name, s) in &all {
        for p in ports(s) {
            // `[IP:]HOST_PORT:CONTAINER_PORT`
            let parts: Vec<&str> = p.split(':').collect();
            let host_port = parts[parts.len().saturating_sub(2)].to_string();
            assert!(published.insert(host_port.clone()), "{name}: host port {host_port} published twice");
        }
    }
    assert_eq!(in_profile.len(), 3 + 4 + 1, "{in_profile:?}");
    println!(
        "cluster profile: {cluster} = {} shards × 2 replicas {replicas:?}, Keeper {ids:?} on {keeper_port}, \
         adstream ×2 with --cluster {cluster}; host ports {published:?}",
        shards.len()
    );
}

fn get_default_group(doc: &Yaml) -> String {
    env_map(&doc["services"]["adstream"]).into_iter().find(|(k, _)| k == "ADSTREAM_GROUP").unwrap().1
}

/// `--flag value` of a command list.
fn arg_after(cmd: &[String], flag: &str) -> String {
    let at = cmd.iter().position(|c| c == flag).unwrap_or_else(|| panic!("{flag} not in {cmd:?}"));
    cmd[at + 1].clone()
}

#[test]
fn the_tls_profile_connects_every_service_over_tls_with_matching_settings() {
    let doc = compose();
    let all = services(&doc);
    let in_profile: BTreeSet<String> = all
        .iter()
        .filter(|(_, s)| strings(&s["profiles"]).contains(&"tls".to_string()))
        .map(|(n, _)| n.clone())
        .collect();
    let want: BTreeSet<String> =
        ["tls-certs", "kafka-tls", "clickhouse-tls", "redis-tls", "adstream-tls", "learn-tls"].map(String::from).into();
    assert_eq!(in_profile, want);
    let svc = |n: &str| &doc["services"][n];
    let env_of = |n: &str| env_map(svc(n));
    let get = |n: &str, k: &str| {
        env_of(n).into_iter().find(|(name, _)| name == k).map(|(_, v)| v).unwrap_or_else(|| panic!("{n}: {k} unset"))
    };
    // Every service that reads the certificates mounts the volume the
    // certificate job writes, and waits for it (through its servers).
    let certs = svc("tls-certs");
    assert_eq!(strings(&certs["entrypoint"]), ["bash", "/adstream/scripts/tls.sh", "certs"]);
    let tls_dir = get("tls-certs", "TLS_DIR");
    let volume = strings(&certs["volumes"]).into_iter().find(|v| v.ends_with(&format!(":{tls_dir}"))).expect("volume");
    let volume = volume.split(':').next().unwrap().to_string();
    assert!(doc["volumes"].as_hash().unwrap().keys().any(|k| k.as_str() == Some(&volume)), "{volume} declared");
    let script = read("scripts/tls.sh");
    for var in ["TLS_DIR", "TLS_SERVER_NAMES", "TLS_SHARED"] {
        assert!(script.contains(&format!("${{{var}")), "scripts/tls.sh reads {var}");
    }
    let names: BTreeSet<String> = get("tls-certs", "TLS_SERVER_NAMES").split(',').map(String::from).collect();
    for n in ["kafka-tls", "clickhouse-tls", "redis-tls", "adstream-tls", "learn-tls"] {
        let mounted = strings(&svc(n)["volumes"]).contains(&format!("{volume}:{tls_dir}:ro"));
        assert!(mounted, "{n} mounts {volume} read-only at {tls_dir}");
    }
    for n in ["kafka-tls", "clickhouse-tls", "redis-tls"] {
        assert!(names.contains(n), "the server certificate names {n} (hostname verification): {names:?}");
        assert_eq!(svc(n)["depends_on"]["tls-certs"]["condition"].as_str(), Some("service_completed_successfully"));
        assert_eq!(svc(n)["hostname"].as_str(), Some(n));
    }
    let ca = format!("{tls_dir}/ca.pem");

    // adstream-tls: Kafka over SASL_SSL with the broker's mechanism and
    // its PLAIN user, ClickHouse over HTTPS on the server's https_port.
    let run_accepts = help_envs(&adstream(&["run", "--help"]));
    for (k, _) in env_of("adstream-tls") {
        assert!(run_accepts.contains(&k), "adstream-tls sets {k}, which `adstream run` does not read");
    }
    let kafka = env_of("kafka-tls");
    let kget = |k: &str| kafka.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{k}"));
    let brokers = get("adstream-tls", "ADSTREAM_BROKERS");
    let advertised = kget("KAFKA_ADVERTISED_LISTENERS");
    let listener = advertised
        .split(',')
        .find_map(|l| l.strip_suffix(&format!("://{brokers}")))
        .unwrap_or_else(|| panic!("{brokers} is not advertised: {advertised}"));
    let protocol = kget("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
        .split(',')
        .find_map(|m| m.strip_prefix(&format!("{listener}:")).map(String::from))
        .expect("the listener's protocol");
    assert_eq!(protocol, "SASL_SSL");
    assert_eq!(get("adstream-tls", "ADSTREAM_KAFKA_SECURITY_PROTOCOL").to_uppercase(), protocol);
    let mechanism = get("adstream-tls", "ADSTREAM_KAFKA_SASL_MECHANISM");
    assert!(kget("KAFKA_SASL_ENABLED_MECHANISMS").split(',').any(|m| m == mechanism), "{mechanism}");
    // KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_…: the image maps `__` to `_`.
    let jaas = kget(&format!("KAFKA_LISTENER_NAME_{}_PLAIN_SASL_JAAS_CONFIG", listener.replace('_', "__")));
    let user = get("adstream-tls", "ADSTREAM_KAFKA_SASL_USERNAME");
    let password = get("adstream-tls", "ADSTREAM_KAFKA_SASL_PASSWORD");
    assert!(jaas.contains(&format!("user_{user}=\"{password}\"")), "the PLAIN user of the broker: {jaas}");
    assert_eq!(get("adstream-tls", "ADSTREAM_KAFKA_SSL_CA_FILE"), ca);
    assert_eq!(kget("KAFKA_SSL_TRUSTSTORE_LOCATION"), ca);
    assert!(kget("KAFKA_SSL_KEYSTORE_LOCATION").starts_with(&format!("{tls_dir}/")));
    assert!(
        kget("KAFKA_LISTENERS").split(',').filter(|l| !l.starts_with("SASL_SSL")).all(|l| l.contains("//127.0.0.1:")),
        "plaintext listeners only on the container's loopback"
    );
    let ch = strip_comments(&read("deploy/tls/clickhouse.xml"));
    let https_port = xml_one(&ch, "https_port");
    assert!(ch.contains("<http_port remove=\"1\"/>"), "HTTPS only");
    assert!(strings(&svc("clickhouse-tls")["volumes"]).iter().any(|v| v.starts_with("./deploy/tls/clickhouse.xml:")));
    for n in ["adstream-tls", "learn-tls"] {
        assert_eq!(get(n, "ADSTREAM_CLICKHOUSE_URL"), format!("https://clickhouse-tls:{https_port}"), "{n}");
        assert_eq!(get(n, "ADSTREAM_CLICKHOUSE_CA_FILE"), ca, "{n}");
        assert_eq!(get(n, "ADSTREAM_CLICKHOUSE_USER"), get("clickhouse-tls", "CLICKHOUSE_USER"), "{n}");
        assert_eq!(get(n, "ADSTREAM_CLICKHOUSE_PASSWORD"), get("clickhouse-tls", "CLICKHOUSE_PASSWORD"), "{n}");
    }
    assert_eq!(xml_one(&ch, "certificateFile"), format!("{tls_dir}/server.pem"));
    assert_eq!(xml_one(&ch, "caConfig"), ca);

    // learn-tls: Redis over TLS, its port and ACL user from redis-server's command.
    let learn_accepts = help_envs(&adstream(&["learn", "--help"]));
    for (k, _) in env_of("learn-tls") {
        assert!(learn_accepts.contains(&k), "learn-tls sets {k}, which `adstream learn` does not read");
    }
    let redis = strings(&svc("redis-tls")["command"]);
    assert_eq!(arg_after(&redis, "--port"), "0", "no plaintext port");
    let tls_port = arg_after(&redis, "--tls-port");
    assert_eq!(get("learn-tls", "ADSTREAM_REDIS_URL"), format!("rediss://redis-tls:{tls_port}"));
    assert_eq!(arg_after(&redis, "--tls-ca-cert-file"), ca);
    assert_eq!(get("learn-tls", "ADSTREAM_REDIS_CA_FILE"), ca);
    let redis_user = get("learn-tls", "ADSTREAM_REDIS_USER");
    let acl = redis.iter().position(|c| c == &redis_user).expect("the ACL user");
    assert_eq!(redis[acl + 1], "on");
    assert_eq!(redis[acl + 2], format!(">{}", get("learn-tls", "ADSTREAM_REDIS_PASSWORD")));
    assert!(redis.windows(3).any(|w| w == ["--user", "default", "off"]), "the default user is off");
    assert_eq!(get("learn-tls", "ADSTREAM_DATABASE"), get("adstream-tls", "ADSTREAM_DATABASE"));
    println!(
        "tls profile: Kafka {listener} ({mechanism}) at {brokers}, ClickHouse https on {https_port}, \
         Redis TLS on {tls_port} as {redis_user}; certificates for {names:?} in {volume}"
    );
}
