//! The one HTTP endpoint behind `run`'s `/metrics` + `/healthz` and
//! `learn`'s `/ctr` + `/metrics` + `/healthz`: the routes they share
//! ([`Routes`], [`serve`]) and the HTTP/1.1 accept loop, each connection
//! served on its own task by a synchronous responder (no handler awaits
//! anything).
//!
//! Slow or idle clients cannot pile up: a connection must send its request
//! headers within [`HEADER_TIMEOUT`] (hyper's header-read timer, which
//! also bounds the wait for the next request on a kept-alive connection),
//! lives at most [`CONNECTION_LIFETIME`], and at most [`MAX_CONNECTIONS`]
//! are served at once (one more is closed at once, so it costs nothing).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

/// What answers a request.
type Respond = Arc<dyn Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Time to send a request's headers (and between kept-alive requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

/// What an endpoint answers: `/metrics`, `/healthz` and `/` as every
/// endpoint does, and its own paths.
pub struct Routes {
    /// The Prometheus text, rendered after the counters were copied in
    /// (two scrapes never interleave).
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    /// `Ok` (200) or `Err` (503), one line each.
    pub health: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
    /// The body of `GET /`.
    pub index: &'static str,
    /// The body of a 404.
    pub not_found: &'static str,
    /// The endpoint's own paths (`/ctr`), given the path and the query:
    /// `None` for any other path.
    #[allow(clippy::type_complexity)]
    pub own: Box<dyn Fn(&str, &str) -> Option<Response<Full<Bytes>>> + Send + Sync>,
}

/// Serves `routes` on `listener` until the runtime ends: `GET` (and
/// `HEAD`) only.
pub fn serve(listener: tokio::net::TcpListener, routes: Routes, what: &'static str) {
    let render = Mutex::new(());
    let respond = move |req: &Request<hyper::body::Incoming>| {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        let path = req.uri().path();
        if let Some(r) = (routes.own)(path, req.uri().query().unwrap_or("")) {
            return r;
        }
        match path {
            "/metrics" => {
                let body = {
                    let _guard = render.lock();
                    (routes.metrics)()
                };
                reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
            }
            "/healthz" => match (routes.health)() {
                Ok(s) => text(StatusCode::OK, s + "\n"),
                Err(s) => text(StatusCode::SERVICE_UNAVAILABLE, s + "\n"),
            },
            "/" => text(StatusCode::OK, routes.index.into()),
            _ => text(StatusCode::NOT_FOUND, routes.not_found.into()),
        }
    };
    spawn(listener, Arc::new(respond), what);
}

/// Serves `listener` until the runtime ends.
fn spawn(listener: tokio::net::TcpListener, respond: Respond, what: &'static str) {
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
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}
