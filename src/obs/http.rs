//! The one HTTP/1.1 accept loop behind `run`'s `/metrics` + `/healthz` and
//! `learn`'s `/ctr` + `/metrics` + `/healthz`: each connection served on
//! its own task by a synchronous responder (no handler awaits anything).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

/// What answers a request.
pub type Respond = Arc<dyn Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `listener` until the runtime ends.
pub fn spawn(listener: tokio::net::TcpListener, respond: Respond, what: &'static str) {
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
            let _ = stream.set_nodelay(true);
            let respond = respond.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = respond(&req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
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
