//! The generator allocates nothing per event once its buffers have grown,
//! in both traffic models (counted, with the bench's counting allocator,
//! not assumed). One test in this file: the counter is process-wide.

#[allow(dead_code)] // the bench's heap-peak helpers are not needed here
#[path = "../bench/alloc.rs"]
mod alloc;

use adstream::generator::{Generator, GeneratorConfig, Traffic, TrafficModel, DEFAULT_SEEDED_START_US};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[test]
fn no_allocation_per_generated_event_in_either_model() {
    const WARM_UP: u64 = 1_000;
    const EVENTS: u64 = 200_000;
    for (model, campaigns) in [
        (TrafficModel::Seed, 5),
        (TrafficModel::Segmented, 5),
        (TrafficModel::Seed, 100_000),
        (TrafficModel::Segmented, 100_000),
    ] {
        for seed in [Some(3), None] {
            let mut g = Generator::new(GeneratorConfig {
                seed,
                start_time_us: DEFAULT_SEEDED_START_US,
                // Spread over days, so every hour of the daily curve is drawn.
                event_rate: 1.0,
                jitter_us: 5_000_000,
            })
            .with_traffic(Traffic::new(model, campaigns));
            let (start, _) = alloc::counters();
            let (mut key, mut json) = (Vec::new(), Vec::new());
            let mut now = DEFAULT_SEEDED_START_US;
            let mut clock = || {
                now += 360_000_000; // six minutes a step: all hours
                now
            };
            for _ in 0..WARM_UP {
                g.next_into(&mut clock, &mut key, &mut json);
            }
            let (before, _) = alloc::counters();
            assert!(before > start, "the counter sees the buffers grow during the warm-up");
            let mut clicks = 0u64;
            for _ in 0..EVENTS {
                let m = g.next_into(&mut clock, &mut key, &mut json);
                clicks += u64::from(m.event_type == adstream::engine::EventType::Click);
            }
            let (after, _) = alloc::counters();
            println!(
                "{model:?}, {campaigns} campaigns, seed {seed:?}: {} allocations in {EVENTS} events ({clicks} clicks)",
                after - before
            );
            assert_eq!(after - before, 0, "{model:?} {campaigns} campaigns seed {seed:?}: allocations per event");
        }
    }
}
