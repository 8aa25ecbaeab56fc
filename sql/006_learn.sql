-- The CTR learner (`adstream learn`, src/learn/ and src/pipeline/learn/):
-- its model snapshots, its per-window quality and its predictions. Every
-- table is keyed so that a learner restarted from its last snapshot, which
-- relearns the windows after it with the same model, rewrites the same
-- rows instead of adding new ones (ReplacingMergeTree keeps one per key).
-- `model` is the learner's name (`learn --model`, default `ctr`), so several
-- models can share a database.

-- The system of record of the model. A row is one consistent state: the
-- weights, the counters and what has been learned (the windows up to
-- `learned_through`, plus the per-segment counts of the windows still open
-- to revision, in `snapshot`), written in one INSERT. `learn` restores the
-- newest one at start. `impressions`/`clicks` are everything the model has
-- learned: equal to the sums of `ad_metrics_segments_10s` over the windows
-- up to `learned_through`, once those are final everywhere.
CREATE TABLE IF NOT EXISTS {database}.ad_ctr_model
(
    model           LowCardinality(String),
    version         UInt64,
    learned_through DateTime64(3, 'UTC'),
    windows         UInt64,
    revisions       UInt64,
    examples        UInt64,
    impressions     UInt64,
    clicks          UInt64,
    snapshot        String,
    saved_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model, version);

-- Progressive validation: each window's segments scored by the model as it
-- was just before it learned them (He et al. 2014 for the normalized
-- entropy). NULL where a figure is undefined (no clicks, no impressions).
CREATE TABLE IF NOT EXISTS {database}.ad_ctr_quality
(
    model              LowCardinality(String),
    window_start       DateTime64(3, 'UTC'),
    window_end         DateTime64(3, 'UTC'),
    model_version      UInt64,
    examples           UInt64,
    impressions        UInt64,
    clicks             UInt64,
    log_loss           Nullable(Float64),
    normalized_entropy Nullable(Float64),
    calibration        Nullable(Float64),
    auc                Nullable(Float64),
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model, window_start)
-- A row per model and window: 8,640 a day; kept 90 days after written.
TTL toDateTime(inserted_at) + INTERVAL 90 DAY;

CREATE OR REPLACE VIEW {database}.ad_ctr_quality_10s AS
SELECT model, window_start, window_end, model_version, examples, impressions, clicks,
       log_loss, normalized_entropy, calibration, auc
FROM {database}.ad_ctr_quality FINAL;

-- Per window and segment: the CTR the model predicted before learning the
-- window, beside the CTR observed in it (both in %, as the dashboard's ctr).
CREATE TABLE IF NOT EXISTS {database}.ad_ctr_predictions
(
    model         LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    campaign_id   LowCardinality(String),
    ad_format     LowCardinality(String),
    country       LowCardinality(String),
    device        LowCardinality(String),
    model_version UInt64,
    predicted_ctr Float64,
    impressions   UInt64,
    clicks        UInt64,
    observed_ctr  Nullable(Float64),
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model, window_start, campaign_id, ad_format, country, device)
-- A row per segment and window (1.8 million a day with 210 segments): kept
-- 7 days after written.
TTL toDateTime(inserted_at) + INTERVAL 7 DAY;

-- Predicted vs observed CTR per window and format: the prediction weighted
-- by impressions (predicted clicks ÷ impressions), beside clicks ÷
-- impressions.
CREATE OR REPLACE VIEW {database}.ad_ctr_by_format_10s AS
SELECT
    model,
    window_start,
    window_end,
    ad_format,
    sum_impressions AS impressions,
    sum_clicks AS clicks,
    if(sum_impressions = 0, NULL, sum_predicted_clicks / sum_impressions * 100) AS predicted_ctr,
    if(sum_impressions = 0, NULL, sum_clicks / sum_impressions * 100) AS observed_ctr
FROM
(
    SELECT
        model,
        window_start,
        window_end,
        ad_format,
        sum(impressions) AS sum_impressions,
        sum(clicks) AS sum_clicks,
        sum(predicted_ctr / 100 * impressions) AS sum_predicted_clicks
    FROM {database}.ad_ctr_predictions FINAL
    GROUP BY model, window_start, window_end, ad_format
);

-- Every window the learner let go of (it left its ledger: closed on every
-- partition, or past `learn --revise-horizon` while a partition had not
-- closed it), with what the model learned of it in all. Together with the
-- segment rollup this accounts for every impression: learned once, or in
-- `ad_ctr_abandoned`. One row per window and model (8,640 a day), kept 90
-- days.
CREATE TABLE IF NOT EXISTS {database}.ad_ctr_settled
(
    model         LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    reason        LowCardinality(String),
    impressions   UInt64,
    clicks        UInt64,
    model_version UInt64,
    settled_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(model_version)
ORDER BY (model, window_start)
TTL toDateTime(settled_at) + INTERVAL 90 DAY;

-- What `ad_metrics_segments_10s` holds beyond what the model learned, per
-- window the learner let go of (and every window between those that never
-- reached its ledger): rows written after the window was let go (a
-- partition idle for longer than the revision horizon, then waking up).
-- `reason`: `revise_horizon` (let go while a partition had not closed it),
-- `closed` (written after every partition had closed it: every partition
-- the learner knew of, which is every one in `ad_source_partitions` or
-- that had written a row of the rollup when it passed), `never_learned`
-- (a window with no rows when the learner passed and settled it).
CREATE OR REPLACE VIEW {database}.ad_ctr_abandoned AS
SELECT
    b.model AS model,
    w.window_start AS window_start,
    w.window_end AS window_end,
    if(s.model = '', 'never_learned', s.reason) AS reason,
    toInt64(w.impressions) - toInt64(s.impressions) AS impressions,
    toInt64(w.clicks) - toInt64(s.clicks) AS clicks
FROM
(
    SELECT model, min(window_start) AS lo, max(window_start) AS hi
    FROM {database}.ad_ctr_settled FINAL
    GROUP BY model
) AS b
CROSS JOIN
(
    SELECT window_start, any(window_end) AS window_end, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM {database}.ad_metrics_segments_10s
    GROUP BY window_start
) AS w
LEFT JOIN (SELECT * FROM {database}.ad_ctr_settled FINAL) AS s
    ON s.model = b.model AND s.window_start = w.window_start
WHERE w.window_start >= b.lo AND w.window_start <= b.hi
  AND (toInt64(w.impressions) != toInt64(s.impressions) OR toInt64(w.clicks) != toInt64(s.clicks));
