"""Splits a `perf record` profile of `adstream run` into the stages of the
consumer (BENCHMARKS.md, "Where the time goes"):

    perf report -i perf.data --no-children --sort comm,dso,sym --stdio | python3 bench/perf_split.py

Each sample is put in one stage by its thread and symbol (flat profile:
release builds have no frame pointers, so call chains are not trusted):

- librdkafka fetch: librdkafka's broker threads (`rdk:broker*`): fetch
  responses, LZ4, building one op per message, the copies and the kernel.
- message handling: librdkafka calls on the consume thread (the batch
  queue, message and op teardown), the consume loop, allocator and mutex
  work there.
- parse: the flat-JSON path and serde_json, UTF-8 checks, timestamp, money
  and enum parsing, `memcmp` (mostly the parser's expected-key checks).
- windows: the processor, per-partition windows, the interner, the
  dedup id set (`hashbrown` inserts, the event-id key).
- row encoding: building output rows and their RowBinary bytes.
- ClickHouse insert: the writer's HTTP client (hyper, tokio, the socket)
  and the block's LZ4 compression and checksum.
- other: everything else (the DLQ producer's poll thread, the clock,
  start-up).
"""

import re
import sys
from collections import defaultdict

RULES = [
    ("row encoding", r"rowbinary|RowBinary|row_binary|encode|serialize|Serialize|io::clickhouse::rows|to_rows|emit_rows|Row::"),
    ("ClickHouse insert", r"lz4_flex|cityhash|hyper|h2::|reqwest|tokio::net|mio::|clickhouse::insert|clickhouse::|sink::"),
    ("parse", r"flat_json|parse_event|parse_revenue|parse_timestamp|days_from_civil|from_utf8|serde_json|money::parse|::parse$|Country::parse|Device::parse|memcmp"),
    ("windows", r"window::|Interner|processor::|hashbrown|event_key|dedup|Dedup"),
    ("message handling", r"rd_kafka|rd_slice|rd_buf|ConsumeLoop|consume::|source::|_int_free|_int_malloc|malloc|free|calloc|pthread_mutex|memmove|memcpy|memset|cfree"),
]


def stage(comm, sym):
    if comm.startswith("rdk:broker"):
        return "librdkafka fetch"
    for name, pat in RULES:
        if re.search(pat, sym):
            if name == "message handling" and not (comm.startswith("tokio") or comm.startswith("consume")):
                return "other"
            return name
    return "other"


def main():
    totals = defaultdict(float)
    tops = defaultdict(list)
    line_re = re.compile(r"^\s+([0-9.]+)%\s+(\S.*?)\s{2,}(\S+)\s+\[[.k]\]\s+(.*)$")
    for line in sys.stdin:
        m = line_re.match(line)
        if not m:
            continue
        pct, comm, _dso, sym = float(m.group(1)), m.group(2).strip(), m.group(3), m.group(4).strip()
        s = stage(comm, sym)
        totals[s] += pct
        tops[s].append((pct, f"{comm}: {sym}"))
    order = ["librdkafka fetch", "message handling", "parse", "windows", "row encoding", "ClickHouse insert", "other"]
    print("| stage | share of CPU samples | largest symbols |")
    print("|---|---|---|")
    for s in order:
        top = ", ".join(f"{n.split(': ', 1)[1][:48]} {p:.1f}" for p, n in sorted(tops[s], reverse=True)[:3])
        print(f"| {s} | {totals[s]:.1f} % | {top} |")


if __name__ == "__main__":
    main()
