//! The one HTTP/1.1 accept loop behind `run`'s `/metrics` + `/healthz` and
//! `learn`'s `/ctr` + `/metrics` + `/healthz`: each connection served on
//! its own task by a synchronous responder (no handler awaits anything).
//!
//! Slow or idle clients cannot pile up: a connection must send its request
//! headers within [`HEADER_TIMEOUT`] (hyper's header-read timer, which
//! also bounds the wait for the next request on a kept-alive connection),
//! lives at most [`CONNECTION_LIFETIME`], and at most [`MAX_CONNECTIONS`]
//! are served at once (one more is closed at once, so it costs nothing).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

/// What answers a request.
pub type Respond = Arc<dyn Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Time to send a request's headers (and between kept-alive requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves `listener` until the runtime ends.
pub fn spawn(listener: tokio::net::TcpListener, respond: Respond, what: &'static str) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!("{what}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream); // full: closed at once
                continue;
            };
            let _ = stream.set_nodelay(true);
            let respond = respond.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req| {
                    let r = respond(&req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(io, svc);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
    });
}

/// A response with a content type; an impossible builder error gives an
/// empty 200 rather than a panic.
pub fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}
