//! Generator bench: `adstream generate --rate 0` into the real broker, one
//! fresh topic (3 partitions) per run; a message counts once its delivery
//! report says the broker has it (acks=all, idempotent producer: the
//! binary's defaults).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::procstat::run_measured;
use crate::report::{finish, Figure, Run, Target};
use crate::services::{brokers, delete_topic, number_after, unique};

pub struct GeneratorArgs {
    pub events: u64,
    pub reps: usize,
    pub adstream: String,
}

pub fn run(args: &GeneratorArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    let mut runs = Vec::new();
    let mut checks = Vec::new();
    for rep in 0..args.reps {
        let topic = unique("bench_gen", rep);
        let log = out.join(format!("generator-{rep}"));
        let usage = run_measured(
            Command::new(&args.adstream)
                .args(["generate", "--topic", &topic, "--rate", "0", "--seed", &(rep + 1).to_string()])
                .args(["--event-rate", "10000", "--count", &args.events.to_string()])
                .env("ADSTREAM_BROKERS", brokers()),
            &log,
            Duration::from_secs(1800),
            false,
        )?;
        let stdout = std::fs::read_to_string(log.with_extension("out"))?;
        let done = stdout.lines().find(|l| l.starts_with("Done:")).unwrap_or("").to_string();
        let delivered = number_after(&done, "Done:").unwrap_or(0.0);
        let secs = number_after(&done, "delivered in").unwrap_or(f64::NAN);
        let failed = number_after(&done, "Failed deliveries:").unwrap_or(f64::NAN);
        if let Err(e) = delete_topic(&topic) {
            eprintln!("  (could not delete {topic}: {e:#})");
        }
        anyhow::ensure!(
            usage.exit_code == 0 && delivered as u64 == args.events,
            "generate exited {} after delivering {delivered} of {} events: {done}",
            usage.exit_code,
            args.events
        );
        let mut run = Run::new();
        run.insert("events", delivered);
        run.insert("events_per_s", delivered / secs);
        run.insert("failed", failed);
        run.insert("wall_s", usage.wall_s);
        run.insert("cpu_s", usage.cpu_s);
        run.insert("cpu_s_per_million", usage.cpu_s / delivered * 1e6);
        run.insert("peak_rss_mb", usage.peak_rss_mb);
        println!("  run {}: {done}", rep + 1);
        runs.push(run);
        checks.push(json!({ "topic": topic, "delivered": delivered, "failed": failed }));
    }
    let figures = [
        Figure {
            label: "generator events/s (acked)",
            metric: "events_per_s",
            unit: "events/s",
            target: Target::AtLeast(3e5),
        },
        Figure { label: "generator delivery failures", metric: "failed", unit: "events", target: Target::AtMost(0.0) },
        Figure {
            label: "generator CPU s per million events",
            metric: "cpu_s_per_million",
            unit: "CPU s",
            target: Target::None,
        },
        Figure { label: "generator peak RSS", metric: "peak_rss_mb", unit: "MiB", target: Target::None },
    ];
    let config = json!({ "events": args.events, "reps": args.reps, "partitions": 3, "brokers": brokers() });
    finish(out, "generator", "Generator: adstream generate --rate 0 into Kafka", config, &runs, &figures, json!(checks))
}
