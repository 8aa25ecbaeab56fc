//! [`Segment`]: campaign × format × country × device, named. The finest key
//! the windows keep (a [`SegmentKey`](crate::engine::SegmentKey) of the
//! segment rollup, with every dimension set and its campaign's name looked
//! up), and the unit the model learns, predicts and serves: the learner's
//! examples, the generator's truth (`generator::truth::SegmentTruth`) and the
//! Redis hashes and fields (`io::redis`, `hash_key`/`field`) are all keyed by
//! one.

use crate::engine::event::{AdFormat, Country, Device};

/// One segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Segment {
    pub campaign_id: String,
    pub ad_format: AdFormat,
    pub country: Country,
    pub device: Device,
}
