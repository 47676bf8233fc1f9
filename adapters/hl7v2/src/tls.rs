//! TLS for MLLP: the engine's TLS module (rustls with ring), shared with the HTTP server.

pub use huizhen_core::tls::*;
