"""The Spark Structured Streaming peer of adstream: the same job on the same
topic, for the comparison in BENCHMARKS.md.

Reads the Kafka topic from the earliest offset, parses the JSON events,
10-second tumbling event-time windows with a 5-second watermark (adstream's
default allowed lateness) per campaign and ad format: impressions, clicks,
revenue (exact decimal), CTR and eCPM. Trigger availableNow: process what the
topic holds, then stop. Output mode update, each micro-batch's changed
windows appended to --out as JSON lines with the batch id, so the last
update of every window (including those still open at the end, which
adstream's --drain also writes) can be compared with adstream's.

Prints one line `PEER_SUMMARY {json}` with the input row count, the
start-up time (process start to the query starting: JVM and session) and
the time spent in the query.
"""

import time

T_START = time.time()

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402

import pyspark  # noqa: E402

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--jars", required=True, help="directory of the Kafka connector jars")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()

    # The connector's runtime dependencies, less those Spark already ships
    # (a second scala-library or hadoop-client on the class path breaks it).
    def artifact(path):
        return re.sub(r"-[0-9][^-]*(-[a-z0-9]+)?\.jar$", "", os.path.basename(path))

    shipped = {artifact(j) for j in glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "*.jar"))}
    jars = ",".join(sorted(j for j in glob.glob(os.path.join(args.jars, "*.jar")) if artifact(j) not in shipped))
    spark = (
        SparkSession.builder.master(args.master)
        .appName("adstream-spark-peer")
        .config("spark.jars", jars)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "3")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")

    schema = T.StructType(
        [
            T.StructField("event_id", T.StringType()),
            T.StructField("timestamp", T.StringType()),
            T.StructField("user_id", T.StringType()),
            T.StructField("campaign_id", T.StringType()),
            T.StructField("ad_format", T.StringType()),
            T.StructField("country", T.StringType()),
            T.StructField("device", T.StringType()),
            T.StructField("event_type", T.StringType()),
            T.StructField("revenue", T.DecimalType(18, 6)),
        ]
    )
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.brokers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    events = (
        raw.select(F.from_json(F.col("value").cast("string"), schema).alias("e"))
        .select("e.*")
        .withColumn("ts", F.to_timestamp("timestamp"))
        # The same validation adstream applies to these fields; generated
        # events all pass.
        .where(
            F.col("ts").isNotNull()
            & F.col("event_type").isin("impression", "click")
            & F.col("ad_format").isin("banner", "interstitial", "rewarded_video")
            & F.col("campaign_id").isNotNull()
            & F.col("revenue").isNotNull()
        )
    )
    windows = (
        events.withWatermark("ts", "5 seconds")
        .groupBy(F.window("ts", "10 seconds"), "campaign_id", "ad_format")
        .agg(
            F.sum(F.when(F.col("event_type") == "impression", 1).otherwise(0)).alias("impressions"),
            F.sum(F.when(F.col("event_type") == "click", 1).otherwise(0)).alias("clicks"),
            F.sum("revenue").alias("revenue"),
        )
        .select(
            F.col("window.start").cast("long").alias("window_start"),
            "campaign_id",
            "ad_format",
            "impressions",
            "clicks",
            F.col("revenue").cast("string").alias("revenue"),
            F.when(F.col("impressions") == 0, None)
            .otherwise(F.col("clicks") / F.col("impressions") * 100)
            .alias("ctr"),
            F.when(F.col("impressions") == 0, None)
            .otherwise(F.col("revenue").cast("double") / F.col("impressions") * 1000)
            .alias("ecpm"),
        )
    )

    out = open(args.out, "w")

    def write_batch(df, batch_id):
        for row in df.collect():
            d = row.asDict()
            d["batch"] = batch_id
            out.write(json.dumps(d) + "\n")
        out.flush()

    t0 = time.time()
    query = (
        windows.writeStream.outputMode("update")
        .foreachBatch(write_batch)
        .option("checkpointLocation", args.checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    query_s = time.time() - t0
    input_rows = sum(p.get("numInputRows", 0) for p in query.recentProgress)
    out.close()
    print(
        "PEER_SUMMARY "
        + json.dumps(
            {
                "input_rows": input_rows,
                "startup_s": t0 - T_START,
                "query_s": query_s,
                "batches": len(query.recentProgress),
            }
        ),
        flush=True,
    )
    spark.stop()


if __name__ == "__main__":
    main()
