//! Plumbing for the engine's own TCP listeners (the `mllp` and `dicom` sources), free of any
//! protocol, in one place:
//!
//! * [`server`]: the accept loop — bind, allow-list ([`AllowList`], addresses and CIDR blocks),
//!   connection permits (`max_connections`, and what to do when they are all taken), the TLS
//!   handshake and its deadline ([`crate::tls`]), `TCP_NODELAY` — and [`ListenerSpec`], which
//!   checks a source's listener settings the same way for every protocol;
//! * [`limits`]: what each connection applies while it reads: how long one unit of the
//!   protocol (an MLLP frame, a DICOM PDU) may take to arrive ([`UnitClock`], [`read_some`]),
//!   the idle timeout between units, and how many bytes all connections of one listener may
//!   hold in buffers at once ([`ByteBudget`]).
//!
//! What these defend against (docs/security.md, "MLLP limits"): an idle timeout alone resets on
//! every byte, so a client trickling one byte a second holds a connection slot forever; the
//! unit deadline counts from the unit's first byte instead. Per-connection size limits alone let
//! `max_connections × max_frame_bytes` bytes pile up (256 × 16 MiB = 4 GiB); the budget caps
//! the sum: a connection whose next read would pass it stops reading (TCP back-pressure reaches
//! the sender) until other connections release bytes, and its unit deadline still runs, so a
//! crowd of half-sent frames ends in closed connections, not in memory exhaustion.
//!
//! The outbound side (connect within a deadline, then the TLS handshake) is
//! [`crate::tls::connect`].

pub mod limits;
pub mod server;

pub use limits::{
    AllowList, BudgetExhausted, BudgetHold, ByteBudget, ReadStop, UnitClock, open_to_all_warning,
    read_some,
};
pub use server::{Accepted, BoundServer, ListenerSpec, NoRefusal, TcpServer, WhenFull};
