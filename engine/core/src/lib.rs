//! Huizhen engine core: configuration, the journal, the pipeline runner, built-in steps,
//! sources and sinks, and the HTTP API.
//!
//! Architecture invariant: this crate knows no HL7, FHIR, DICOM, AMQP or WebRTC. Protocol
//! adapters live in `adapters/` and plug in through the typetag registries of
//! [`sources::SourceConfig`], [`steps::StepConfig`] and [`sinks::SinkConfig`].

pub mod billing;
pub mod care;
pub mod clock;
pub mod cluster;
pub mod compliance;
pub mod config;
pub mod crypto;
pub mod expr;
pub mod extensions;
pub mod http;
pub mod listener;
pub mod media;
pub mod message;
pub mod objects;
pub mod patients;
pub mod pipetest;
pub mod runner;
pub mod security;
pub mod sinks;
pub mod sources;
pub mod steps;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod work;
pub mod workflow;

pub use runner::Engine;
