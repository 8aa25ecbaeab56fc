//! Timeouts for every ClickHouse call: a connect timeout
//! (`--clickhouse-connect-timeout`) and a request timeout
//! (`--clickhouse-request-timeout`).
//!
//! The `clickhouse` crate's HTTP client has neither, and its client trait is
//! sealed, so they live in the connector: [`TimeoutConnector`] wraps hyper's
//! `HttpConnector` (which has a connect timeout of its own) and hands out
//! connections whose reads and writes fail with `TimedOut` once one has
//! waited longer than the request timeout without any progress. A host that
//! accepts and never answers (a hung server, a black-holed proxy, a
//! half-open connection) then costs one request timeout, not the ~12
//! minutes TCP keepalive takes to give up, and the error is retried like
//! an outage (see [`super::retry`]: a timeout is transient). Being in the
//! connector, it covers every caller of [`super::client`]: the sink, the
//! schema migration, the learner's store, `report`.
//!
//! The clock is "no progress", not "whole request": a large insert that
//! keeps streaming, or a response that keeps arriving, is never cut. An
//! idle connection in the pool (dropped after 2 s anyway) that reaches the
//! timeout is closed, which the pool notices before reusing it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// An `HttpConnector` whose connections time out reads and writes that make
/// no progress for `io_timeout`.
#[derive(Clone)]
pub struct TimeoutConnector {
    inner: HttpConnector,
    io_timeout: Duration,
}

impl TimeoutConnector {
    /// `inner` should carry the connect timeout already.
    pub fn new(inner: HttpConnector, io_timeout: Duration) -> Self {
        TimeoutConnector { inner, io_timeout }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TimedIo, Box<dyn std::error::Error + Send + Sync>>> + Send>>;

impl tower_service::Service<Uri> for TimeoutConnector {
    type Response = TimedIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let io_timeout = self.io_timeout;
        Box::pin(async move {
            let io = connecting.await?;
            Ok(TimedIo { io, io_timeout, read_since: None, write_since: None })
        })
    }
}

/// A connection whose pending reads and writes fail after `io_timeout`
/// without progress.
pub struct TimedIo {
    io: TokioIo<TcpStream>,
    io_timeout: Duration,
    /// Armed when a read is first pending, cleared when one completes.
    read_since: Option<Pin<Box<Sleep>>>,
    write_since: Option<Pin<Box<Sleep>>>,
}

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "ClickHouse {what} made no progress for {after:?} (--clickhouse-request-timeout / \
             ADSTREAM_CLICKHOUSE_REQUEST_TIMEOUT)"
        ),
    )
}

/// Polls `timer` (arming it first) once the I/O itself is pending; `Ready`
/// with an error once it has run out. Clears it on progress.
fn watch<T>(
    r: Poll<io::Result<T>>,
    timer: &mut Option<Pin<Box<Sleep>>>,
    after: Duration,
    what: &str,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    match r {
        Poll::Ready(r) => {
            *timer = None;
            Poll::Ready(r)
        }
        Poll::Pending => {
            let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
            match t.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *timer = None;
                    Poll::Ready(Err(timed_out(what, after)))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl Read for TimedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        watch(r, &mut this.read_since, this.io_timeout, "response", cx)
    }
}

impl Write for TimedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        watch(r, &mut this.write_since, this.io_timeout, "request", cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        watch(r, &mut this.write_since, this.io_timeout, "request", cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        watch(r, &mut this.write_since, this.io_timeout, "request", cx)
    }
}

impl Connection for TimedIo {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::config::ClickHouseConfig;

    fn config(url: &str, request_timeout: std::time::Duration) -> ClickHouseConfig {
        ClickHouseConfig {
            url: crate::config::secret::Secret::new(url),
            database: "adtech".into(),
            user: "default".into(),
            password: None,
            connect_timeout: std::time::Duration::from_secs(1),
            request_timeout,
            tls: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_times_out_as_a_transient_error() {
        let (url, task) = crate::io::silent::silent_listener("http").await;
        let timeout = std::time::Duration::from_millis(400);
        let client = super::super::client(&config(&url, timeout)).unwrap();
        let t0 = Instant::now();
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), client.query("SELECT 1").fetch_one::<u8>())
            .await
            .expect("the request timeout must end the call, not the test's 20 s guard");
        let took = t0.elapsed();
        let e = r.unwrap_err();
        let class = super::super::retry::classify(&e);
        let text = format!("{:#}", anyhow::Error::from(e));
        assert!(took >= timeout, "gave up after {took:?}, before the timeout");
        assert!(text.contains("--clickhouse-request-timeout"), "the error names the setting: {text}");
        assert_eq!(class, super::super::retry::Class::Transient, "a timeout is retried like an outage: {text}");
        task.abort();
    }
}
