-- The dashboard's query surface (superset/ charts read only these views and
-- those of 003, no SQL lives in the charts). Plain views over the rollups,
-- so they always show the same final numbers and need no FINAL.
--
-- Per-minute rollup (`campaign_id,ad_format:1m`, computed by the engine in
-- the same pass as the 10 s windows, so it equals the sum of its six 10 s
-- rows). Sums stay exact (UInt64, Decimal); ctr and ecpm are NULL when the
-- minute has no impressions. `windows` is how many 10 s windows of the
-- minute have rows (6 once the minute is complete).
CREATE OR REPLACE VIEW {database}.ad_metrics_1m AS
SELECT
    m.window_start AS minute,
    m.campaign_id AS campaign_id,
    m.ad_format AS ad_format,
    w.windows AS windows,
    m.impressions AS impressions,
    m.clicks AS clicks,
    m.revenue AS revenue,
    m.ctr AS ctr,
    m.ecpm AS ecpm,
    m.window_start AS window_start,
    m.window_end AS window_end
FROM
(
    SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm
    FROM {database}.ad_rollup_metrics
    WHERE rollup_name = 'campaign_id,ad_format:1m'
) AS m
LEFT JOIN
(
    SELECT toStartOfMinute(window_start) AS minute, campaign_id, ad_format, count() AS windows
    FROM {database}.ad_metrics_10s
    GROUP BY minute, campaign_id, ad_format
) AS w
ON m.window_start = w.minute AND m.campaign_id = w.campaign_id AND m.ad_format = w.ad_format;

-- The six most recent 10 s windows that have data (the last minute of
-- traffic, whatever the wall clock says), one row per (window, campaign,
-- format), with `is_final` telling whether the window has closed (its
-- numbers can still change while it is open). GLOBAL IN: on a cluster
-- (migrate --cluster) both sides read Distributed tables, and a plain IN
-- there is a "double-distributed" subquery, refused under the default
-- distributed_product_mode = 'deny'; on one server it is a plain IN.
CREATE OR REPLACE VIEW {database}.ad_metrics_latest AS
SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm, is_final
FROM {database}.ad_rollup_metrics
WHERE rollup_name = 'campaign_id,ad_format:10s'
  AND window_start GLOBAL IN
  (
      SELECT DISTINCT window_start
      FROM {database}.ad_metrics_10s
      ORDER BY window_start DESC
      LIMIT 6
  );
