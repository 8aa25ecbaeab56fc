//! `insert_deduplication_token`s for the sink's inserts: ClickHouse drops an
//! insert whose token it has already seen for that table (within the
//! table's deduplication window), so re-sending a batch does not write its
//! rows twice.
//!
//! What makes two inserts "the same batch": the same set of rows, whatever
//! their order. A window row is identified by (topic, partition, window,
//! campaign, format, version), and its version (derived from the highest
//! Kafka offset it counts, plus finality) pins its numbers; the token hashes
//! that identity and the numbers of every row, order-independently (a sum of
//! per-row 128-bit hashes, with the row count). Late and rejected records
//! are identified by (topic, partition, offset). Server-filled columns
//! (`inserted_at`) are not part of it: they are exactly what makes
//! ClickHouse's own content hash differ between two sends of one batch.
//!
//! When it applies: a retry of the same batch after a failed or lost
//! response (the pipeline re-sends the batch it holds, unchanged), and any
//! replay that happens to cut a batch exactly as before. When it does not:
//! batches are cut by wall-clock time (`--flush-interval`), so after a
//! crash or a rebalance the replayed rows are usually grouped differently,
//! and a batch that differs by one row has another token. Those rows are
//! written again and collapse by version in the ReplacingMergeTree (FINAL
//! in the views): correctness never depends on the token, it only saves
//! duplicate parts and merge work. Also not across the deduplication
//! window: a token older than the last `replicated_deduplication_window`
//! inserts (or `replicated_deduplication_window_seconds`) is forgotten.

use xxhash_rust::xxh3::xxh3_128;

use crate::engine::batch::{Batch, LateRecord, RejectRecord};

/// An order-independent digest of a multiset of rows.
#[derive(Default)]
struct Digest {
    sum: u128,
    rows: u64,
    buf: Vec<u8>,
}

impl Digest {
    fn row(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        self.buf.clear();
        fill(&mut self.buf);
        self.sum = self.sum.wrapping_add(xxh3_128(&self.buf));
        self.rows += 1;
    }

    fn token(&self, kind: &str) -> String {
        format!("adstream-{kind}-{}-{:032x}", self.rows, self.sum)
    }
}

fn text(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// The token of the batch's `ad_window_parts` insert.
pub fn window_rows(topic: &str, batch: &Batch) -> String {
    let mut d = Digest::default();
    for r in &batch.rows {
        let w = &r.row;
        d.row(|b| {
            text(b, batch.rollup_name(r));
            text(b, topic);
            b.extend_from_slice(&r.partition.to_le_bytes());
            b.extend_from_slice(&w.window_start_us.to_le_bytes());
            b.extend_from_slice(&w.window_end_us.to_le_bytes());
            text(b, batch.campaign(r));
            text(b, w.key.ad_format.map_or("", |f| f.as_str()));
            text(b, w.key.country.map_or("", |c| c.as_str()));
            text(b, w.key.device.map_or("", |d| d.as_str()));
            b.extend_from_slice(&w.version.to_le_bytes());
            b.push(u8::from(w.is_final));
            b.extend_from_slice(&w.totals.impressions.to_le_bytes());
            b.extend_from_slice(&w.totals.clicks.to_le_bytes());
            b.extend_from_slice(&w.totals.revenue_micros.to_le_bytes());
        });
    }
    d.token("w")
}

fn positions(kind: &str, topic: &str, it: impl Iterator<Item = (i32, i64)>) -> String {
    let mut d = Digest::default();
    for (partition, offset) in it {
        d.row(|b| {
            text(b, topic);
            b.extend_from_slice(&partition.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
        });
    }
    d.token(kind)
}

/// The token of an `ad_late_events_log` insert.
pub fn late(topic: &str, late: &[LateRecord]) -> String {
    positions("l", topic, late.iter().map(|l| (l.partition, l.offset)))
}

/// The token of an `ad_rejected_events_log` insert.
pub fn rejected(topic: &str, rejected: &[RejectRecord]) -> String {
    positions("r", topic, rejected.iter().map(|r| (r.partition, r.offset)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::batch::OutRow;
    use crate::engine::event::AdFormat;
    use crate::engine::window::{SegmentKey, Totals, WindowRow};
    use crate::engine::{Dims, Rollup};

    fn batch(rows: &[(i32, i64, u32, u64, u64)]) -> Batch {
        let mut b = Batch {
            names: vec!["C001".into(), "C002".into()].into(),
            rollups: vec![Rollup::new(Dims::CAMPAIGN_FORMAT, 10_000_000)].into(),
            rollup_names: vec!["campaign_id,ad_format:10s".to_string()].into(),
            ..Default::default()
        };
        for &(partition, start, campaign, version, impressions) in rows {
            let row = WindowRow {
                rollup: 0,
                window_start_us: start,
                window_end_us: start + 10_000_000,
                key: SegmentKey {
                    campaign: Some(campaign),
                    ad_format: Some(AdFormat::Banner),
                    country: None,
                    device: None,
                },
                totals: Totals { impressions, clicks: 1, revenue_micros: 7 },
                version,
                is_final: version % 2 == 1,
            };
            b.rows.push(OutRow { partition, row });
        }
        b
    }

    #[test]
    fn the_same_rows_in_any_order_give_the_same_token() {
        let a = batch(&[(0, 0, 0, 10, 5), (1, 0, 0, 8, 3), (0, 10_000_000, 1, 12, 1)]);
        let b = batch(&[(0, 10_000_000, 1, 12, 1), (0, 0, 0, 10, 5), (1, 0, 0, 8, 3)]);
        assert_eq!(window_rows("t", &a), window_rows("t", &b));
    }

    #[test]
    fn any_difference_gives_another_token() {
        let base = [(0, 0, 0, 10, 5), (1, 0, 0, 8, 3)];
        let t = window_rows("t", &batch(&base));
        assert_ne!(t, window_rows("u", &batch(&base)), "topic");
        for other in [
            [(0, 0, 0, 10, 5), (2, 0, 0, 8, 3)],          // partition
            [(0, 0, 0, 10, 5), (1, 10_000_000, 0, 8, 3)], // window
            [(0, 0, 0, 10, 5), (1, 0, 1, 8, 3)],          // campaign
            [(0, 0, 0, 10, 5), (1, 0, 0, 9, 3)],          // version
            [(0, 0, 0, 10, 5), (1, 0, 0, 8, 4)],          // numbers
        ] {
            assert_ne!(t, window_rows("t", &batch(&other)), "{other:?}");
        }
        // A subset (a batch cut at another point) is another batch.
        assert_ne!(t, window_rows("t", &batch(&base[..1])));
        // A row twice is not the row once.
        assert_ne!(t, window_rows("t", &batch(&[base[0], base[1], base[1]])));
    }
}
