//! End-to-end tests: the store suite on SQLite and PostgreSQL, the runner in process, and the
//! real `huizhen` binary over real sockets (crash safety, HTTP API, CLI).
//!
//! PostgreSQL comes from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each test creates and drops a database of its own. Without PostgreSQL those tests skip,
//! except under CI (`CI` is `true` or `1`), where they fail.

// Tests report skipped services on stderr.
#![allow(clippy::print_stderr)]

mod amqp;
mod audit;
mod billing;
mod buffer;
mod care;
mod cli;
mod cluster;
mod console;
mod consultation_events;
mod consultation_sla;
mod consultations;
mod crash;
mod devices;
mod dicom;
mod edge;
mod engine;
mod experts;
mod export;
mod fhir;
mod fhir_client;
mod fhir_mllp;
mod hl7_consultation;
mod http;
mod integrator;
mod journal_v2;
mod media;
mod mllp;
mod ops;
mod patients;
mod pipetest;
mod plugin_load;
mod plugins;
mod reload;
mod retention;
mod scenarios;
mod security;
mod sinks;
mod sources;
mod store;
mod support;
mod tls;
mod traces;

// Link the adapters' registrations (the `mllp` and `dicom` sources, `hl7v2` expressions).
use huizhen_amqp as _;
use huizhen_dicom as _;
// The FHIR adapter's registrations (`fhir_poll`, `fhir`, `hl7v2_to_fhir`, kind `fhir+json`, the
// `fhir_store` sink, the /fhir/r4 facade).
use huizhen_fhir as _;
// The `file`, `http` and `sql` sinks.
use huizhen_file as _;
use huizhen_hl7 as _;
use huizhen_http as _;
use huizhen_insurer as _;
use huizhen_mqtt as _;
use huizhen_sql as _;
// The call's signaling (/ws/signal) and SFU.
use huizhen_media as _;
