//! adstream: ad events from Kafka → event-time windows → ClickHouse.
//!
//! The flow, from `main`: [`cli`] parses flags; `run` wires a [`source`]
//! (Kafka consumer) through [`parse`] and [`window`] into a [`sink`]
//! (ClickHouse or console) inside [`pipeline`], which also owns offsets and
//! backpressure. [`generator`] is the traffic model behind `generate`,
//! `demo` and `run --self-feed`.

pub mod event;
pub mod money;
pub mod parse;
pub mod time;
pub mod window;
