//! TLS for the listeners (HTTP, MLLP, DICOM; STANDARDS HL7-04, CN-31) and for outbound
//! connections: rustls with the ring provider only, TLS 1.2 and 1.3.
//!
//! The listener takes a certificate chain and key (PEM files) and, for mutual TLS (node
//! authentication between facilities), a CA bundle that client certificates must chain to.
//! A plaintext client on a TLS port fails the handshake and gets no answer.
//!
//! [`connect`] is the one outbound connection routine of the senders (the `mllp` and
//! `hl7_app_ack` sinks, DICOM SCUs): TCP within the connect timeout, then, with TLS, the
//! handshake within the same timeout, the server's certificate checked against `tls.ca` and the
//! server name (webpki).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::TlsConnector;

/// A byte stream to a peer, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `to` (`HOST:PORT`) and, with `tls`, runs the handshake; both within `limit`.
/// The error says which step failed and why (`TLS handshake with 10.0.0.5:6661 failed:
/// invalid peer certificate: UnknownIssuer`).
pub async fn connect(
    to: &str,
    tls: Option<&ClientTls>,
    limit: Duration,
) -> Result<Box<dyn Io>, String> {
    let deadline = Instant::now() + limit;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(to)).await {
        Err(_) => return Err(format!("cannot connect to {to} within {limit:?}")),
        Ok(Err(e)) => return Err(format!("cannot connect to {to}: {e}")),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    match tokio::time::timeout_at(deadline, tls.connect(stream)).await {
        Err(_) => Err(format!(
            "TLS handshake with {to} not complete within {limit:?}"
        )),
        Ok(Err(e)) => Err(format!(
            "TLS handshake with {to} (server name {:?}) failed: {e}",
            tls.server_name()
        )),
        Ok(Ok(s)) => Ok(Box::new(s)),
    }
}

/// `tls:` under `http` (root config) or a listener source (`mllp`, `dicom`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (PEM).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
    }
    Ok(store)
}

/// Builds the listener side.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let chain = certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", cfg.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {} do not make a usable pair: {e}",
            cfg.cert.display(),
            cfg.key.display()
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Builds a client: trusts `ca` (PEM) if given, else the public web roots; presents
/// `identity` (cert, key) for mutual TLS if given.
pub fn connector(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<TlsConnector, String> {
    let roots = match ca {
        Some(p) => roots(p)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs(cert)?, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name to check the server certificate against, from `HOST:PORT`.
pub fn server_name(to: &str) -> Result<ServerName<'static>, String> {
    let host = match to.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => to,
    };
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a valid server name: {e}"))
}

/// `tls:` of an outbound connection (the `mllp` and `hl7_app_ack` sinks): whom to trust, who
/// to be, and which name the server's certificate must carry. The server's certificate is
/// checked by webpki against `ca` (chain, validity, key usage) and against the name: a
/// certificate from the right CA for another host is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM bundle of the CA certificates that may issue the server's certificate (a hospital
    /// network's own PKI). Default: the public (Mozilla) roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// This engine's certificate chain (PEM), presented when the server asks for one (mutual
    /// TLS). Goes with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must be valid for: a DNS name or an IP address.
    /// Default: the host of the destination address.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A client TLS setup ready to connect: the connector and the name checked.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ClientTlsConfig {
    /// Reads the files and builds the client for destination `to` (`HOST:PORT`). Errors name
    /// the key (`tls.ca`, `tls.cert`, …) and quote the file, so `validate` can point at it.
    pub fn client(&self, to: &str) -> Result<ClientTls, String> {
        let config = self.client_config()?;
        let name = match &self.server_name {
            Some(n) => ServerName::try_from(n.trim().to_owned()).map_err(|e| {
                format!("tls.server_name: {n:?} is not a DNS name or IP address: {e}")
            })?,
            None => server_name(to).map_err(|e| format!("tls: {e} (set tls.server_name)"))?,
        };
        Ok(ClientTls {
            connector: TlsConnector::from(config),
            name,
        })
    }

    /// The rustls client configuration alone (roots, client certificate; ring, TLS 1.2/1.3),
    /// for a client library that runs the handshake itself (the `mqtt` adapter's rumqttc,
    /// which checks the certificate against the broker's host name). `server_name` is not
    /// part of it.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let quoted = |p: &Path| format!("{:?}", p.display().to_string());
        let read_certs = |key: &str, p: &Path| {
            let certs = CertificateDer::pem_file_iter(p)
                .map_err(|e| format!("tls.{key}: cannot read {}: {e}", quoted(p)))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.{key}: bad PEM certificate in {}: {e}", quoted(p)))?;
            if certs.is_empty() {
                return Err(format!(
                    "tls.{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    quoted(p)
                ));
            }
            Ok(certs)
        };
        let roots = match &self.ca {
            Some(p) => {
                let mut store = rustls::RootCertStore::empty();
                for c in read_certs("ca", p)? {
                    store.add(c).map_err(|e| {
                        format!(
                            "tls.ca: {} holds an unusable CA certificate: {e}",
                            quoted(p)
                        )
                    })?;
                }
                store
            }
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("cert", cert)?;
                let pk = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "tls.key: cannot read a private key from {}: {e}",
                        quoted(key)
                    )
                })?;
                builder.with_client_auth_cert(chain, pk).map_err(|e| {
                    format!(
                        "tls.cert: {} and tls.key {} do not make a usable pair: {e}",
                        quoted(cert),
                        quoted(key)
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err("tls.cert: needs tls.key beside it".into()),
            (None, Some(_)) => return Err("tls.key: needs tls.cert beside it".into()),
        };
        Ok(Arc::new(config))
    }
}

impl ClientTls {
    /// The name the server's certificate is checked against.
    pub fn server_name(&self) -> String {
        self.name.to_str().into_owned()
    }

    /// Runs the handshake over `io`. An error names what was wrong (`invalid peer certificate:
    /// UnknownIssuer`, `… NotValidForName …`).
    pub async fn connect<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.connector.connect(self.name.clone(), io).await
    }
}
