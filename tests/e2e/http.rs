//! The HTTP server's limits against slow and greedy clients (issue 12, item 9): a slowloris
//! client (headers trickled a byte at a time) is cut off at `http.header_timeout`, an idle
//! keep-alive connection too, a connection over `http.max_connections` is closed at once, and a
//! TLS client that never finishes its handshake is cut off at `http.handshake_timeout`.

use std::time::{Duration, Instant};

use huizhen_core::Engine;
use huizhen_core::config::HttpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, fresh_db, loaded};

struct Server {
    engine: Engine,
    addr: std::net::SocketAddr,
    _db: crate::support::TestDb,
}

async fn server(cfg: HttpConfig, tls: Option<huizhen_core::tls::TlsAcceptor>) -> Server {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let p = "version: 1\nname: a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[p])).await.unwrap();
    let security = huizhen_core::security::Security::new(
        &huizhen_core::security::SecurityConfig {
            jwt_secret: Some("e2e-http-secret-0123456789abcdef0123".into()),
            ..Default::default()
        },
        engine.store.clone(),
    )
    .unwrap();
    let app = huizhen_core::http::router(engine.app_state(), &cfg, std::sync::Arc::new(security));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &cfg, tls, stop).await });
    Server {
        engine,
        addr,
        _db: db,
    }
}

/// Reads until the server closes the connection (EOF or reset); the time it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for more than {limit:?}"),
        }
    }
}

async fn health(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("an answer within 5s")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off() {
    let s = server(
        HttpConfig {
            header_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        },
        None,
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms: each byte would reset an idle timer, not this deadline.
    let (mut r, mut w) = c.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if w.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("a trickling client held its connection for 5s"),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    trickle.abort();
    // Others are served all along.
    assert!(health(s.addr).await.starts_with("HTTP/1.1 200"));
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let s = server(
        HttpConfig {
            header_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        },
        None,
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = closed_within(&mut c, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let s = server(
        HttpConfig {
            max_connections: 3,
            header_timeout: Duration::from_secs(30),
            ..HttpConfig::default()
        },
        None,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(s.addr).await.unwrap();
    let took = closed_within(&mut over, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    // A slot freed is a slot for the next client.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(health(s.addr).await.starts_with("HTTP/1.1 200"));
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_finishes_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    crate::tls::make_pki(dir.path());
    let acceptor = huizhen_core::tls::acceptor(&huizhen_core::tls::TlsConfig {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: None,
    })
    .unwrap();
    let s = server(
        HttpConfig {
            handshake_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        },
        Some(acceptor),
    )
    .await;
    // Connects and says nothing: no ClientHello.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let took = closed_within(&mut c, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}
