//! The consultation aggregate through its public API (STANDARDS FHIR-10, FHIR-11, MATCH-20,
//! MATCH-21, CN-01 … CN-12, CN-21, CN-80): the transition table, random command sequences,
//! reasons, versions, gates, SLA escalation, patient merges, the signed opinion.

mod billing;
mod china;
mod gates;
mod load;
mod opinion;
mod outbound;
mod props;
mod room;
mod rules;
mod sla;
mod studies;
mod support;
mod table;
mod vital_alert;
