"""The Apache Flink peer of adstream: the same job on the same topic, in
Flink SQL, for the comparison in BENCHMARKS.md.

A Kafka JSON source table over the topic, read from the earliest offset to
the offsets that were latest when the job started ('scan.bounded.mode' =
'latest-offset', so the job ends by itself), with a watermark 5 seconds
behind the event time (adstream's default allowed lateness; Flink's Kafka
source keeps one watermark per partition). `TUMBLE` windows of 10 seconds
per campaign and ad format: impressions, clicks and revenue as an exact
DECIMAL. At the end of the bounded input Flink advances the watermark to
the maximum, so the windows still open at the end are emitted too, as
adstream's `--drain` writes them. The rows are collected into this
process and written to --out as JSON lines.

Runs in the local mini-cluster that PyFlink starts (one JVM under this
Python process), parallelism 2 (this machine's cores).

Prints one line `PEER_SUMMARY {json}` with the events counted in the windows, the
start-up time (process start to the job submitted) and the time from
submission to the last row.
"""

import argparse
import calendar
import json
import os
import time

T_START = time.time()

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jars", required=True, help="directory of the Kafka SQL connector jar")
    ap.add_argument("--group", default="adstream-flink-peer")
    ap.add_argument("--parallelism", type=int, default=2)
    args = ap.parse_args()

    jars = sorted(os.path.join(os.path.abspath(args.jars), j) for j in os.listdir(args.jars) if j.endswith(".jar"))
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.jars", ";".join("file://" + j for j in jars))
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.name", "adstream-flink-peer")

    t_env.execute_sql(
        f"""
        CREATE TABLE events (
            event_id STRING,
            `timestamp` STRING,
            campaign_id STRING,
            ad_format STRING,
            event_type STRING,
            revenue DECIMAL(18, 6),
            -- A watermark needs millisecond precision at most: the first 23
            -- characters (truncated, never rounded into the next window).
            ts AS TO_TIMESTAMP(SUBSTRING(`timestamp` FROM 1 FOR 23), 'yyyy-MM-dd''T''HH:mm:ss.SSS'),
            WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{args.topic}',
            'properties.bootstrap.servers' = '{args.brokers}',
            'properties.group.id' = '{args.group}',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'format' = 'json',
            'json.fail-on-missing-field' = 'false',
            'json.ignore-parse-errors' = 'true'
        )
        """
    )
    # The same validation adstream applies to these fields; generated
    # events all pass.
    result = t_env.execute_sql(
        """
        SELECT window_start, campaign_id, ad_format,
               SUM(CASE WHEN event_type = 'impression' THEN 1 ELSE 0 END) AS impressions,
               SUM(CASE WHEN event_type = 'click' THEN 1 ELSE 0 END) AS clicks,
               CAST(SUM(revenue) AS STRING) AS revenue
        FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
        WHERE event_type IN ('impression', 'click')
          AND ad_format IN ('banner', 'interstitial', 'rewarded_video')
          AND campaign_id IS NOT NULL AND revenue IS NOT NULL AND ts IS NOT NULL
        GROUP BY window_start, window_end, campaign_id, ad_format
        """
    )
    t_submitted = time.time()
    rows = 0
    counted = 0
    with open(args.out, "w") as out:
        with result.collect() as results:
            for r in results:
                start = calendar.timegm(r[0].timetuple())
                d = {
                    "window_start": start,
                    "campaign_id": r[1],
                    "ad_format": r[2],
                    "impressions": int(r[3]),
                    "clicks": int(r[4]),
                    "revenue": str(r[5]),
                }
                counted += d["impressions"] + d["clicks"]
                out.write(json.dumps(d) + "\n")
                rows += 1
    t_end = time.time()
    print(
        "PEER_SUMMARY "
        + json.dumps(
            {
                "counted": counted,
                "rows": rows,
                "startup_s": t_submitted - T_START,
                "query_s": t_end - t_submitted,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
