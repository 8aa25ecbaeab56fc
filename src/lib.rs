//! adstream: ad events from Kafka → event-time windows → ClickHouse.
//!
//! The flow, from `main`: [`cli`] parses flags; `run` is [`pipeline::run`],
//! which wires a [`source`] (the Kafka consumer) through the [`processor`]
//! ([`parse`] + [`window`]) into a [`sink`] (ClickHouse or console), and owns
//! offsets and backpressure. [`generator`] is the traffic model behind
//! `generate`, `demo` and `run --self-feed`; [`demo`] runs the same
//! processor on in-process traffic.

pub mod cli;
pub mod config;
pub mod demo;
pub mod event;
pub mod flat_json;
pub mod generator;
pub mod health;
pub mod insert_token;
pub mod metrics;
pub mod money;
pub mod parse;
pub mod pipeline;
pub mod processor;
pub mod report;
pub mod schema;
pub mod schema_cluster;
pub mod secret;
pub mod sink;
pub mod source;
pub mod stats;
pub mod time;
pub mod window;
