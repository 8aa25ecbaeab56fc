//! Sources of ad events: Kafka (consumer and producer plumbing) and the
//! in-process generator driver that feeds `generate`, `run --self-feed`.

pub mod kafka;
pub mod producer;
pub mod queue;
