//! Test support: a local server that accepts every connection and never
//! answers, the stand-in for a ClickHouse or Redis that hangs.

/// Listens on 127.0.0.1 and holds every accepted socket open, reading
/// nothing, until the task is dropped; returns `scheme://host:port`.
pub async fn silent_listener(scheme: &str) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{scheme}://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, task)
}
