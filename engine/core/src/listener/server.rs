//! The accept loop every TCP listener source runs (`mllp`, `dicom`): bind, admit peers by the
//! allow-list, hold one of `max_connections` permits per connection, run the TLS handshake
//! within its deadline, set `TCP_NODELAY`, and hand the stream to the protocol's handler.
//!
//! A source declares its YAML fields itself (with its own defaults and documentation) and
//! passes them here as a [`ListenerSpec`], which checks them the same way for every protocol
//! and builds a [`TcpServer`]. What happens when every permit is taken is the protocol's
//! choice ([`WhenFull`]): MLLP leaves the connection in the kernel's listen backlog until a
//! permit frees (the sender's connect waits, nothing is lost); DICOM accepts it and answers
//! A-ASSOCIATE-RJ "local limit exceeded" so the modality retries later instead of hanging.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{AllowList, open_to_all_warning};
use crate::tls::{Io, TlsAcceptor, TlsConfig};

/// How long a TLS handshake may take on a listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handled at once by the [`WhenFull::Refuse`] handler (beyond that, a connection
/// that finds every permit taken is closed without an answer).
const REFUSALS_AT_ONCE: usize = 16;

/// The listener settings of a source, as its config gives them.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSpec<'a> {
    /// The source type (`mllp`, `dicom`): the prefix of warnings and the name in logs.
    pub kind: &'static str,
    /// `HOST:PORT` to bind.
    pub listen: &'a str,
    /// Addresses and CIDR blocks allowed to connect; empty allows every peer.
    pub allow: &'a [String],
    pub tls: Option<&'a TlsConfig>,
    /// Connections served at once.
    pub max_connections: usize,
    /// The timeouts of the source (the unit's and the idle one), each with its YAML key,
    /// checked to be longer than 0.
    pub timeouts: [(&'static str, Duration); 2],
}

impl ListenerSpec<'_> {
    /// Checks the settings and reads the TLS files (no socket is opened: `validate` calls it).
    /// Errors name the key.
    pub fn build(&self) -> Result<TcpServer, String> {
        let _: SocketAddr = self.listen.parse().map_err(|_| {
            format!(
                "listen: {:?} is not an address like 127.0.0.1:2575",
                self.listen
            )
        })?;
        let allow = AllowList::parse(self.allow)?;
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        let zero: Vec<&str> = self
            .timeouts
            .iter()
            .filter(|(_, d)| d.is_zero())
            .map(|(k, _)| *k)
            .collect();
        if !zero.is_empty() {
            return Err(format!("{} must be longer than 0", zero.join(" and ")));
        }
        let tls = self.tls.map(crate::tls::acceptor).transpose()?;
        Ok(TcpServer {
            kind: self.kind,
            listen: self.listen.to_owned(),
            allow: Arc::new(allow),
            tls,
            max_connections: self.max_connections,
        })
    }

    /// The warning for a non-loopback listener without an allow-list (see
    /// [`open_to_all_warning`]), prefixed with the source type.
    pub fn warnings(&self) -> Vec<String> {
        match AllowList::parse(self.allow) {
            Ok(allow) => open_to_all_warning(self.listen, &allow)
                .map(|w| format!("{}: {w}", self.kind))
                .into_iter()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A connection handed to the protocol: the byte stream (after the TLS handshake, if any) and
/// the peer.
pub struct Accepted {
    pub stream: Box<dyn Io>,
    pub peer: SocketAddr,
    /// Whether the stream is TLS.
    pub tls: bool,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// What the listener does with a connection while all `max_connections` permits are taken.
pub enum WhenFull<R> {
    /// Stop accepting until a permit frees: the connection waits in the listen backlog.
    Wait,
    /// Accept it (allow-list and TLS as usual) and let this handler answer it (a protocol
    /// refusal), at most a few at once; it holds no permit.
    Refuse(R),
}

/// No refusal handler (for [`WhenFull::Wait`]).
pub type NoRefusal = fn(Accepted) -> std::future::Ready<()>;

/// A checked listener, ready to run.
#[derive(Clone)]
pub struct TcpServer {
    kind: &'static str,
    listen: String,
    allow: Arc<AllowList>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("kind", &self.kind)
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl TcpServer {
    /// `mllp 127.0.0.1:2575 (TLS)`, for `/api/pipelines`.
    pub fn describe(&self) -> String {
        let tls = if self.tls.is_some() { " (TLS)" } else { "" };
        format!("{} {}{tls}", self.kind, self.listen)
    }

    pub fn listen(&self) -> &str {
        &self.listen
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Binds the listening socket: the step a source takes when it starts, so that a port in
    /// use stops the start (`huizhen run`, a reload) with the reason.
    pub async fn bind(self) -> Result<BoundServer, String> {
        let listener = TcpListener::bind(&self.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.listen))?;
        Ok(BoundServer {
            server: self,
            listener,
        })
    }

    /// [`TcpServer::bind`], then [`BoundServer::run`].
    pub async fn run<H, F, R, RF>(
        self,
        pipeline: &str,
        shutdown: CancellationToken,
        when_full: WhenFull<R>,
        handler: H,
    ) -> Result<(), String>
    where
        H: Fn(Accepted, CancellationToken) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
        R: Fn(Accepted) -> RF + Send + Sync + 'static,
        RF: Future<Output = ()> + Send + 'static,
    {
        self.bind()
            .await?
            .run(pipeline, shutdown, when_full, handler)
            .await
    }
}

/// A listener whose socket is bound: it accepts once it runs.
pub struct BoundServer {
    server: TcpServer,
    listener: TcpListener,
}

impl BoundServer {
    /// Accepts until `shutdown`; each admitted connection runs `handler` in a task of its own
    /// (with a clone of `shutdown`); an `Err` it returns is logged as why the connection ended.
    /// The socket closes when this returns.
    pub async fn run<H, F, R, RF>(
        self,
        pipeline: &str,
        shutdown: CancellationToken,
        when_full: WhenFull<R>,
        handler: H,
    ) -> Result<(), String>
    where
        H: Fn(Accepted, CancellationToken) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
        R: Fn(Accepted) -> RF + Send + Sync + 'static,
        RF: Future<Output = ()> + Send + 'static,
    {
        let BoundServer {
            server: this,
            listener,
        } = self;
        let this = &this;
        let label = this.kind.to_uppercase();
        tracing::info!(pipeline, listen = %this.listen, "{label} listener started");
        let permits = Arc::new(Semaphore::new(this.max_connections));
        let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
        let handler = Arc::new(handler);
        let (refuse, wait) = match when_full {
            WhenFull::Wait => (None, true),
            WhenFull::Refuse(r) => (Some(Arc::new(r)), false),
        };
        let pipeline: Arc<str> = pipeline.into();
        loop {
            // With `Wait`, no accept before a permit: the kernel's backlog holds the rest.
            let waited = if wait {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    p = permits.clone().acquire_owned() => Some(p.map_err(|e| e.to_string())?),
                }
            } else {
                None
            };
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "{label} accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if !this.allow.admits(peer.ip()) {
                tracing::warn!(pipeline = &*pipeline, %peer, "{label} connection refused: peer not in the allow list");
                drop(tcp);
                continue;
            }
            let permit = match waited {
                Some(p) => Some(p),
                None => permits.clone().try_acquire_owned().ok(),
            };
            let refusal = match (&permit, &refuse) {
                (Some(_), _) => None,
                (None, Some(r)) => match refusals.clone().try_acquire_owned() {
                    Ok(slot) => Some((r.clone(), slot)),
                    Err(_) => {
                        tracing::warn!(pipeline = &*pipeline, %peer, max = this.max_connections, "{label} connection closed: max_connections are open and refusals are busy");
                        continue;
                    }
                },
                (None, None) => continue,
            };
            let _ = tcp.set_nodelay(true);
            let tls = this.tls.clone();
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            let pipeline = pipeline.clone();
            let label = label.clone();
            tokio::spawn(async move {
                let accepted = match tls {
                    None => Accepted {
                        stream: Box::new(tcp),
                        peer,
                        tls: false,
                    },
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => Accepted {
                                stream: Box::new(s),
                                peer,
                                tls: true,
                            },
                            Ok(Err(e)) => {
                                tracing::warn!(pipeline = &*pipeline, %peer, error = %format!("TLS handshake failed (a plaintext client on a TLS port?): {e}"), "{label} connection ended");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(pipeline = &*pipeline, %peer, error = "TLS handshake timed out", "{label} connection ended");
                                return;
                            }
                        }
                    }
                };
                if let Some((refuse, _slot)) = refusal {
                    tracing::warn!(pipeline = &*pipeline, %peer, "{label} connection refused: max_connections are open");
                    refuse(accepted).await;
                    return;
                }
                let _permit = permit;
                if let Err(e) = handler(accepted, shutdown).await {
                    tracing::warn!(pipeline = &*pipeline, %peer, error = %e, "{label} connection ended");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn spec<'a>(listen: &'a str, allow: &'a [String]) -> ListenerSpec<'a> {
        ListenerSpec {
            kind: "test",
            listen,
            allow,
            tls: None,
            max_connections: 1,
            timeouts: [
                ("pdu_timeout", Duration::from_secs(1)),
                ("idle_timeout", Duration::from_secs(1)),
            ],
        }
    }

    #[test]
    fn settings_are_checked_with_their_keys() {
        let none: Vec<String> = Vec::new();
        let e = spec("localhost", &none).build().unwrap_err();
        assert!(e.starts_with("listen:"), "{e}");
        let bad = vec!["10.0.0.0/40".to_owned()];
        let e = spec("127.0.0.1:1", &bad).build().unwrap_err();
        assert!(e.starts_with("allow:"), "{e}");
        let mut s = spec("127.0.0.1:1", &none);
        s.max_connections = 0;
        assert!(s.build().unwrap_err().contains("max_connections"));
        let mut s = spec("127.0.0.1:1", &none);
        s.timeouts[1].1 = Duration::ZERO;
        assert_eq!(s.build().unwrap_err(), "idle_timeout must be longer than 0");
        s.timeouts[0].1 = Duration::ZERO;
        assert_eq!(
            s.build().unwrap_err(),
            "pdu_timeout and idle_timeout must be longer than 0"
        );
        let open = spec("0.0.0.0:104", &none).warnings();
        assert!(open.len() == 1 && open[0].starts_with("test: listens on 0.0.0.0:104"));
        assert_eq!(
            spec("127.0.0.1:1", &none).build().unwrap().describe(),
            "test 127.0.0.1:1"
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// With `Refuse`, a connection over `max_connections` reaches the refusal handler at once
    /// (it does not wait in the backlog); the one holding the permit is served.
    #[tokio::test]
    async fn over_the_cap_goes_to_the_refusal_handler() {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let none: Vec<String> = Vec::new();
        let server = spec(&listen, &none).build().unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(server.run(
            "p",
            stop.clone(),
            WhenFull::Refuse(|mut a: Accepted| async move {
                let _ = a.stream.write_all(b"busy").await;
            }),
            |mut a: Accepted, _stop| async move {
                // Echo one byte, then hold the connection until the peer closes.
                let mut b = [0u8; 1];
                while a.stream.read(&mut b).await.map_err(|e| e.to_string())? > 0 {
                    a.stream.write_all(&b).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            },
        ));
        let mut first = loop {
            if let Ok(s) = tokio::net::TcpStream::connect(&listen).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        first.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        first.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x", "the first connection is served");
        let mut second = tokio::net::TcpStream::connect(&listen).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer))
            .await
            .expect("the refusal comes at once")
            .unwrap();
        assert_eq!(answer, b"busy");
        stop.cancel();
        run.await.unwrap().unwrap();
    }
}
