"""The Quix Streams peer of adstream: the same job on the same topic, for
the comparison in BENCHMARKS.md.

Reads the topic from the earliest offset with a fresh consumer group, takes
each event's time from its `timestamp` field, keeps the events adstream
would accept, regroups them by campaign × ad format (`group_by`: Quix
writes them to a repartition topic and reads them back, the only way it
windows by a key that is not the message key), then
`tumbling_window(10 s, grace 5 s)` with a reduce into impressions, clicks
and revenue (integer micro-units: the JSON number times 10^6, rounded,
which is exact for the generator's 4 decimals) and `.final()`: a window is
emitted once, when its partition's stream time passes its end plus the
grace. Windows still open when the input ends are never emitted (Quix has
no end-of-input flush), so the comparison covers the windows that closed.

Quix keeps one stream time per partition of the repartition topic, which
receives all input partitions interleaved: when one input partition runs
ahead of another by more than the grace, the events of the one behind are
dropped as late (the `on_late` callback counts them and their windows,
reported as `late_dropped` and `late_windows`).

Stops by itself once every input event has reached the window or been
dropped as late (--events in all) and that message is processed.

Prints one line `PEER_SUMMARY {json}` with the events the windows saw, the
start-up time (process start to the first event reaching the window) and
the time from then to the stop.
"""

import argparse
import json
import time

T_START = time.time()

from datetime import datetime, timezone  # noqa: E402

from quixstreams import Application  # noqa: E402

FORMATS = ("banner", "interstitial", "rewarded_video")
TYPES = ("impression", "click")


def event_ms(value, headers, timestamp, timestamp_type):
    ts = value.get("timestamp") if isinstance(value, dict) else None
    try:
        return int(datetime.fromisoformat(ts).replace(tzinfo=timezone.utc).timestamp() * 1000)
    except (TypeError, ValueError):
        return timestamp


def valid(e):
    # The same validation adstream applies to these fields; generated
    # events all pass.
    return (
        isinstance(e, dict)
        and e.get("event_type") in TYPES
        and e.get("ad_format") in FORMATS
        and isinstance(e.get("campaign_id"), str)
        and isinstance(e.get("revenue"), (int, float))
        and isinstance(e.get("timestamp"), str)
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--events", type=int, required=True)
    args = ap.parse_args()

    seen = {"n": 0, "first": None, "late": 0, "late_windows": set()}
    holder = {}

    # Called after each message (of the input or the repartition topic) is
    # fully processed, closed windows emitted included.
    def processed(topic_name, partition, offset):
        if seen["n"] + seen["late"] >= args.events:
            holder["app"].stop()

    app = holder["app"] = Application(
        broker_address=args.brokers,
        on_message_processed=processed,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=event_ms)
    sdf = app.dataframe(topic)
    sdf = sdf.filter(valid)
    sdf = sdf.group_by(lambda e: e["campaign_id"] + "|" + e["ad_format"], name="campaign_format")

    def init(e):
        seen["n"] += 1
        if seen["first"] is None:
            seen["first"] = time.time()
        click = e["event_type"] == "click"
        return [0 if click else 1, 1 if click else 0, round(e["revenue"] * 1_000_000)]

    def reduce(acc, e):
        seen["n"] += 1
        if e["event_type"] == "click":
            acc[1] += 1
        else:
            acc[0] += 1
        acc[2] += round(e["revenue"] * 1_000_000)
        return acc

    # Quix drops an event whose window has closed for its partition's stream
    # time; count them and their windows (no log line per event).
    def on_late(value, key, timestamp_ms, late_by_ms, start, end, name, topic, partition, offset):
        seen["late"] += 1
        seen["late_windows"].add(start // 1000)
        return False

    sdf = sdf.tumbling_window(duration_ms=10_000, grace_ms=5_000, on_late=on_late).reduce(reduce, init).final()

    out = open(args.out, "w")
    rows = {"n": 0}

    def write(value, key, timestamp, headers):
        campaign, fmt = key.split("|", 1)
        impressions, clicks, micros = value["value"]
        out.write(
            json.dumps(
                {
                    "window_start": value["start"] // 1000,
                    "campaign_id": campaign,
                    "ad_format": fmt,
                    "impressions": impressions,
                    "clicks": clicks,
                    "revenue": f"{micros // 1_000_000}.{micros % 1_000_000:06d}",
                }
            )
            + "\n"
        )
        rows["n"] += 1

    sdf.update(write, metadata=True)

    app.run()
    t_end = time.time()
    out.close()
    first = seen["first"] or t_end
    print(
        "PEER_SUMMARY "
        + json.dumps(
            {
                "counted": seen["n"],
                "late_dropped": seen["late"],
                "late_windows": sorted(seen["late_windows"]),
                "rows": rows["n"],
                "startup_s": first - T_START,
                "query_s": t_end - first,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
