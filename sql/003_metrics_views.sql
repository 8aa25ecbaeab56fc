-- The query surface: exactly one row per (window, campaign, format) with
-- final numbers; callers need no FINAL and no GROUP BY.
-- ctr and ecpm are NULL when a window has clicks but no impressions.
CREATE OR REPLACE VIEW {database}.ad_metrics AS
SELECT
    window_start,
    window_end,
    campaign_id,
    ad_format,
    sum_impressions AS impressions,
    sum_clicks AS clicks,
    CAST(sum_revenue AS Decimal(18, 6)) AS revenue,
    if(sum_impressions = 0, NULL, sum_clicks / sum_impressions * 100) AS ctr,
    if(sum_impressions = 0, NULL, toFloat64(sum_revenue) / sum_impressions * 1000) AS ecpm,
    partitions,
    is_final
FROM
(
    -- FINAL: per (window, key, partition) keep only the highest version.
    SELECT
        window_start,
        window_end,
        campaign_id,
        ad_format,
        sum(impressions) AS sum_impressions,
        sum(clicks) AS sum_clicks,
        sum(revenue) AS sum_revenue,
        count() AS partitions,
        min(is_final) AS is_final
    FROM {database}.ad_window_parts FINAL
    GROUP BY window_start, window_end, campaign_id, ad_format
);

CREATE OR REPLACE VIEW {database}.ad_metrics_10s AS
SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm
FROM {database}.ad_metrics
WHERE dateDiff('millisecond', window_start, window_end) = 10000;
