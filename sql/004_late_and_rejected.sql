-- Nothing is dropped silently: events whose window had already closed, and
-- messages that failed validation, are kept here with a reason. Keyed by
-- (topic, partition, offset), so a replay after a crash rewrites the same
-- rows instead of adding new ones; read them through the views. Kept 30
-- days after they were written (change with ALTER TABLE … MODIFY TTL).
CREATE TABLE IF NOT EXISTS {database}.ad_late_events_log
(
    topic        LowCardinality(String),
    partition    Int32,
    offset       Int64,
    event_id     String,
    event_time   DateTime64(6, 'UTC'),
    window_start DateTime64(3, 'UTC'),
    campaign_id  LowCardinality(String),
    ad_format    LowCardinality(String),
    country      LowCardinality(String),
    device       LowCardinality(String),
    event_type   LowCardinality(String),
    revenue      Decimal(18, 6),
    watermark    DateTime64(6, 'UTC'),
    reason       LowCardinality(String),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
TTL toDateTime(inserted_at) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE OR REPLACE VIEW {database}.ad_late_events AS
SELECT topic, partition, offset, event_id, event_time, window_start, campaign_id, ad_format,
       country, device, event_type, revenue, watermark, reason
FROM {database}.ad_late_events_log FINAL;

CREATE TABLE IF NOT EXISTS {database}.ad_rejected_events_log
(
    topic        LowCardinality(String),
    partition    Int32,
    offset       Int64,
    reason       LowCardinality(String),
    detail       String,
    raw          String,
    raw_size     UInt64,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
TTL toDateTime(inserted_at) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE OR REPLACE VIEW {database}.ad_rejected_events AS
SELECT topic, partition, offset, reason, detail, raw, raw_size
FROM {database}.ad_rejected_events_log FINAL;
