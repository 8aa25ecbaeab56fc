//! ClickHouse over HTTP: the client, the schema (`sql/`), the batch sink and
//! `adstream report`.

pub mod report;
pub mod retry;
pub mod schema;
mod sink;

pub use sink::{client, ClickHouseSink};
