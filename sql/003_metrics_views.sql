-- The query surface: exactly one row per (rollup, window, key) with final
-- numbers; callers need no FINAL and no GROUP BY. Each is the sum over the
-- source partitions of their latest (highest-version) rows.
-- ctr and ecpm are NULL when a window has clicks but no impressions.
--
-- Every rollup, configured or not: filter on `rollup_name`
-- (`campaign_id,ad_format:10s`, see `adstream run --help`).
CREATE OR REPLACE VIEW {database}.ad_rollup_metrics AS
SELECT
    rollup_name,
    window_start,
    window_end,
    campaign_id,
    ad_format,
    country,
    device,
    sum_impressions AS impressions,
    sum_clicks AS clicks,
    CAST(sum_revenue AS Decimal(18, 6)) AS revenue,
    if(sum_impressions = 0, NULL, sum_clicks / sum_impressions * 100) AS ctr,
    if(sum_impressions = 0, NULL, toFloat64(sum_revenue) / sum_impressions * 1000) AS ecpm,
    partitions,
    is_final
FROM
(
    -- FINAL: per (rollup, window, key, partition) keep only the highest version.
    SELECT
        rollup_name,
        window_start,
        window_end,
        campaign_id,
        ad_format,
        country,
        device,
        sum(impressions) AS sum_impressions,
        sum(clicks) AS sum_clicks,
        sum(revenue) AS sum_revenue,
        count() AS partitions,
        min(is_final) AS is_final
    FROM {database}.ad_window_parts FINAL
    GROUP BY rollup_name, window_start, window_end, campaign_id, ad_format, country, device
);

-- campaign × format at every window size configured (10 s, 1 m, 1 h by
-- default; `report` reads this).
CREATE OR REPLACE VIEW {database}.ad_metrics AS
SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm, partitions, is_final
FROM {database}.ad_rollup_metrics
WHERE rollup_name LIKE 'campaign\_id,ad\_format:%';

CREATE OR REPLACE VIEW {database}.ad_metrics_10s AS
SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm
FROM {database}.ad_rollup_metrics
WHERE rollup_name = 'campaign_id,ad_format:10s';

CREATE OR REPLACE VIEW {database}.ad_metrics_1h AS
SELECT window_start, window_end, campaign_id, ad_format, impressions, clicks, revenue, ctr, ecpm
FROM {database}.ad_rollup_metrics
WHERE rollup_name = 'campaign_id,ad_format:1h';

-- campaign × format × country × device: the segments.
CREATE OR REPLACE VIEW {database}.ad_metrics_segments_10s AS
SELECT window_start, window_end, campaign_id, ad_format, country, device, impressions, clicks, revenue, ctr, ecpm
FROM {database}.ad_rollup_metrics
WHERE rollup_name = 'campaign_id,ad_format,country,device:10s';

CREATE OR REPLACE VIEW {database}.ad_metrics_segments_1h AS
SELECT window_start, window_end, campaign_id, ad_format, country, device, impressions, clicks, revenue, ctr, ecpm
FROM {database}.ad_rollup_metrics
WHERE rollup_name = 'campaign_id,ad_format,country,device:1h';
