//! TLS for MLLP: the engine's TLS module (rustls with ring), shared with the HTTP server, and
//! the one outbound connection routine of the two MLLP senders (`mllp` and `hl7_app_ack`
//! sinks): TCP within the connect timeout, then, with `tls:`, the handshake within the same
//! timeout, the server's certificate checked against `tls.ca` and the server name (webpki).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use huizhen_core::tls::*;

/// A byte stream to a receiver, plain or TLS.
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
