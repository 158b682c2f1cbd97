//! The standalone HTTP server's limits over loopback: more idle connections than the cap cannot lock
//! out `/api/health`; slow headers and slow bodies are cut off.

use std::sync::Arc;
use std::time::Duration;

use secmon::app::App;
use secmon::config::intake::ServerLimits;
use secmon::config::{Config, TenantConfig};
use secmon::host::standalone::{self, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(limits: ServerLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut config = Config::default();
    config.tenants.push(TenantConfig { id: "t".into(), name: "contoso".into(), credential: None });
    let store = Arc::new(secmon::store::sqlite::SqliteStore::in_memory().unwrap());
    let app =
        App::builder(config).backend(store).graph(Arc::new(secmon::graph::fake::FakeGraph::new())).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let router = secmon::functions::router(app.clone());
    let limits = Limits { server: limits, max_body: app.config.webhook.max_body_bytes };
    tokio::spawn(standalone::serve(listener, router, limits, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn health(addr: std::net::SocketAddr) -> u16 {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let resp = client.get(format!("http://{addr}/api/health")).timeout(Duration::from_secs(5)).send().await.unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn more_idle_connections_than_the_cap_do_not_lock_out_health() {
    let limits = ServerLimits { max_connections: 8, ..ServerLimits::default() };
    let (addr, _stop) = server(limits).await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..5 {
        // Just started and never polled, so "starting" (200), and answered: the newest connection
        // closed the longest-idle one.
        assert_eq!(health(addr).await, 200);
    }
    // The oldest idle connections were closed by the server.
    let mut closed = 0;
    for s in idle.iter_mut().take(10) {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert!(closed > 0, "idle connections beyond the cap are shed");
}

#[tokio::test]
async fn slow_headers_idle_connections_and_slow_bodies_are_cut_off() {
    let limits = ServerLimits {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        max_connections: 16,
        ..ServerLimits::default()
    };
    let (addr, _stop) = server(limits).await;

    // Headers that never finish: the connection is closed.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");

    // A body that never arrives: 408.
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /api/doorbell HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), body.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // A keep-alive connection left idle after a request is closed.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "closed after idling");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"), "answered (starting) before it was closed");
}
