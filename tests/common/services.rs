//! The test services: where Kafka, ClickHouse and Redis are (`ADSTREAM_*`
//! URLs), whether each one is ours to stop, and stopping and starting them
//! through the repo's `scripts/<service>.sh` (the fault tests).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub fn brokers() -> String {
    std::env::var("ADSTREAM_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("ADSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// The test's Redis (`ADSTREAM_REDIS_URL`, as scripts/redis.sh serves it
/// on REDIS_PORT).
pub fn redis_url() -> String {
    std::env::var("ADSTREAM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// host:port of [`redis_url`].
pub fn redis_addr() -> String {
    let url = redis_url();
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let host_port = rest.split('/').next().unwrap_or_default();
    host_port.rsplit('@').next().unwrap_or_default().to_string()
}

/// Whether Kafka and ClickHouse belong to someone else (`scripts/test.sh`
/// sets this when the user gives ADSTREAM_BROKERS / ADSTREAM_CLICKHOUSE_URL):
/// then tests must not stop and start them.
pub fn external_services() -> bool {
    std::env::var("ADSTREAM_TEST_EXTERNAL_SERVICES").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0"
    })
}

/// Whether `service` (`kafka`, `clickhouse`, `redis`) is someone else's:
/// `ADSTREAM_TEST_EXTERNAL_SERVICES` is `1` (all of them) or names it in
/// a comma-separated list (scripts/test.sh lists those you pointed
/// elsewhere). Only a step that stops or restarts that service is skipped.
pub fn external_service(service: &str) -> bool {
    std::env::var("ADSTREAM_TEST_EXTERNAL_SERVICES")
        .is_ok_and(|v| v.trim() == "1" || v.split(',').any(|s| s.trim().eq_ignore_ascii_case(service)))
}

/// Runs `scripts/<script>.sh <action>` of this repo with the test's own
/// environment (so KAFKA_PORT, CLICKHOUSE_PORT etc. carry over); returns how
/// long it took.
pub fn service(script: &str, action: &str) -> Duration {
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(format!("scripts/{script}.sh"))
        .arg(action)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run service script");
    assert!(
        out.status.success(),
        "scripts/{script}.sh {action}: {}\n{}\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    t0.elapsed()
}

/// host:port of the Kafka broker or of ClickHouse's HTTP interface.
fn service_addr(script: &str) -> String {
    match script {
        "kafka" => brokers().split(',').next().unwrap_or_default().to_string(),
        _ => {
            let url = clickhouse_url();
            let rest = url.split("://").nth(1).unwrap_or(&url).to_string();
            rest.split('/').next().unwrap_or_default().to_string()
        }
    }
}

/// Whether `scripts/<script>.sh status` reports the service running.
pub fn service_running(script: &str) -> bool {
    Command::new("bash")
        .arg(format!("scripts/{script}.sh"))
        .arg("status")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops a service and brings it back when dropped, so a failing test does
/// not leave the next tests without Kafka or ClickHouse.
pub struct Outage {
    script: &'static str,
    up: bool,
}

impl Outage {
    /// `scripts/<script>.sh down`, checked with `status` and by the port
    /// refusing connections.
    pub fn begin(script: &'static str) -> (Self, Duration) {
        let took = service(script, "down");
        let outage = Outage { script, up: false };
        assert!(!service_running(script), "scripts/{script}.sh down left it running");
        let addr = service_addr(script);
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "{addr} still accepts connections after {script}.sh down"
        );
        (outage, took)
    }

    /// `scripts/<script>.sh up`, checked with `status`.
    pub fn end(mut self) -> Duration {
        self.up = true;
        let took = service(self.script, "up");
        assert!(service_running(self.script), "scripts/{}.sh up did not bring it back", self.script);
        took
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.up {
            let _ = Command::new("bash")
                .arg(format!("scripts/{}.sh", self.script))
                .arg("up")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
        }
    }
}
