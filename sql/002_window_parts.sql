-- One row per (window, rollup key, source topic partition): each
-- partition's contribution is written separately, so contributions built by
-- different processes (after a rebalance) never overwrite each other.
-- `version` = 2 × (1 + the highest Kafka offset counted in the row), + 1
-- once the row is final; a replay writes the same row with the same
-- version, a late update a higher one, the final row outranks all earlier
-- ones, and ReplacingMergeTree keeps the highest.
-- non_replicated_deduplication_window: a retried insert (same
-- insert_deduplication_token, see src/io/clickhouse/insert_token.rs) is
-- dropped instead of written twice; on a cluster, replicated tables do this
-- through Keeper.
--
-- Every rollup (`run --rollup`) writes here, named in `rollup_name` as
-- `dimensions:window` (`campaign_id,ad_format:10s`); a dimension the rollup
-- leaves out holds '' ("all": no event has an empty campaign, format,
-- country or device). So a new rollup needs no migration: its rows land in
-- this table and `ad_rollup_metrics` shows them. `rollup_name` leads the sorting
-- key, so a query over one rollup (a month of `ad_metrics_1h`) reads only
-- that rollup's rows, never the 10 s ones. A table from before rollups is
-- moved aside and copied in by `migrate` (src/io/clickhouse/upgrade.rs).
CREATE TABLE IF NOT EXISTS {database}.ad_window_parts
(
    rollup_name  LowCardinality(String),
    window_start DateTime64(3, 'UTC'),
    window_end   DateTime64(3, 'UTC'),
    campaign_id  LowCardinality(String),
    ad_format    LowCardinality(String),
    country      LowCardinality(String),
    device       LowCardinality(String),
    topic        LowCardinality(String),
    partition    Int32,
    impressions  UInt64,
    clicks       UInt64,
    revenue      Decimal(18, 6),
    version      UInt64,
    is_final     Bool,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (rollup_name, window_start, window_end, campaign_id, ad_format, country, device, topic, partition)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every source partition `run` reads into this database, registered from
-- the topic's metadata when it starts, before it writes any row: the
-- learner's "every partition" (`adstream learn` settles a window only once
-- every registered partition has closed it, so a partition whose first
-- rows come after the others' is never left out).
CREATE TABLE IF NOT EXISTS {database}.ad_source_partitions
(
    topic         LowCardinality(String),
    partition     Int32,
    registered_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition);
