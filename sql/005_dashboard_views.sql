-- The dashboard's query surface (superset/ charts read only these views, no
-- SQL lives in the charts). Both are plain views over ad_metrics_10s, so
-- they always show the same final numbers and need no FINAL.
--
-- Per-minute rollup: six 10 s windows per (minute, campaign, format). Sums
-- stay exact (UInt64, Decimal); ctr and ecpm are recomputed from the sums
-- (never averaged), NULL when the minute has no impressions. `windows` is
-- how many 10 s windows have rows yet (6 once the minute is complete).
CREATE OR REPLACE VIEW {database}.ad_metrics_1m AS
SELECT
    minute,
    campaign_id,
    ad_format,
    windows,
    sum_impressions AS impressions,
    sum_clicks AS clicks,
    sum_revenue AS revenue,
    if(sum_impressions = 0, NULL, sum_clicks / sum_impressions * 100) AS ctr,
    if(sum_impressions = 0, NULL, toFloat64(sum_revenue) / sum_impressions * 1000) AS ecpm
FROM
(
    SELECT
        toStartOfMinute(window_start) AS minute,
        campaign_id,
        ad_format,
        count() AS windows,
        sum(impressions) AS sum_impressions,
        sum(clicks) AS sum_clicks,
        CAST(sum(revenue) AS Decimal(18, 6)) AS sum_revenue
    FROM {database}.ad_metrics_10s
    GROUP BY minute, campaign_id, ad_format
);

-- The six most recent 10 s windows that have data (the last minute of
-- traffic, whatever the wall clock says), one row per (window, campaign,
-- format), with `is_final` telling whether the window has closed (its
-- numbers can still change while it is open). GLOBAL IN: on a cluster
-- (migrate --cluster) both sides read Distributed tables, and a plain IN
-- there is a "double-distributed" subquery, refused under the default
-- distributed_product_mode = 'deny'; on one server it is a plain IN.
CREATE OR REPLACE VIEW {database}.ad_metrics_latest AS
SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm, is_final
FROM {database}.ad_metrics
WHERE dateDiff('millisecond', window_start, window_end) = 10000
  AND window_start GLOBAL IN
  (
      SELECT DISTINCT window_start
      FROM {database}.ad_metrics_10s
      ORDER BY window_start DESC
      LIMIT 6
  );
