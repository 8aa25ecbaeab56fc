//! ClickHouse over HTTP: the client, the schema (`sql/`), the batch sink and
//! `adstream report`.

mod insert_token;
pub mod learn_store;
pub mod report;
pub mod retry;
pub mod schema;
pub mod schema_cluster;
mod sink;
mod timeout;
mod upgrade;

pub use sink::{client, is_https, tls_connector, ClickHouseSink};
