//! Exit codes, listed in each command's `--help` (`after_help`); the
//! commands' own codes are defined beside them (`cmd::generate`,
//! `cmd::predict`).

pub const TOP: &str = "Exit codes:
  0    success
  1    error (e.g. a service unreachable at start, or refusing for good)
  2    usage error (a bad flag, value or settings file)
  3    generate: some events were not delivered; predict: no prediction cached
  4    predict: the cached prediction is older than --max-age
  130  run, demo, generate, learn: a second SIGINT/SIGTERM (exited at once)";

pub const GENERATE: &str = "Exit codes:
  0    success: every event delivered
  1    error (e.g. Kafka unreachable at start)
  2    usage error (a bad flag, value or settings file)
  3    some events were not delivered (the summary line says how many)
  130  a second SIGINT/SIGTERM: exited at once (the first one stops cleanly)";

pub const RUN: &str = "Exit codes:
  0    success (stopped by SIGINT/SIGTERM, or --drain finished)
  1    error (e.g. a service unreachable at start, or ClickHouse refusing a
       write for good: that batch's offsets are not committed)
  2    usage error (a bad flag, value or settings file)
  130  a second SIGINT/SIGTERM: exited at once (the first one stops cleanly)";

pub const DEMO: &str = "Exit codes:
  0    success
  1    error
  2    usage error (a bad flag, value or settings file)
  130  a second SIGINT/SIGTERM: exited at once (the first one stops cleanly)";

pub const CLICKHOUSE: &str = "Exit codes:
  0    success
  1    error (e.g. ClickHouse unreachable, or refusing: wrong password, no grant)
  2    usage error (a bad flag, value or settings file)";

pub const LEARN: &str = "Exit codes:
  0    success (stopped by SIGINT/SIGTERM, or --once finished)
  1    error (e.g. ClickHouse unreachable at start or refusing for good,
       a bad --redis-url, missing tables or another writer with --once;
       Redis down is not an error: learning pauses until it is back)
  2    usage error (a bad flag, value or settings file)
  130  a second SIGINT/SIGTERM: exited at once (the first one stops cleanly)";

pub const PREDICT: &str = "Exit codes:
  0    success: the prediction is printed
  1    error (e.g. Redis unreachable, a bad --redis-url)
  2    usage error (a bad flag, value or settings file)
  3    no prediction cached for this segment (none learned yet, or expired)
  4    the cached prediction is older than --max-age";
