//! The policy: roles, principals, facility scopes, actions, the role × action matrix and
//! the route → action table.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The roles of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    Integrator,
    Auditor,
    Expert,
    LocalDoctor,
    Pharmacist,
    Patient,
    /// A drug-delivery partner (药品配送): reports delivery statuses of prescriptions, nothing
    /// else.
    Logistics,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Admin,
        Role::Integrator,
        Role::Auditor,
        Role::Expert,
        Role::LocalDoctor,
        Role::Pharmacist,
        Role::Patient,
        Role::Logistics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Integrator => "integrator",
            Role::Auditor => "auditor",
            Role::Expert => "expert",
            Role::LocalDoctor => "local-doctor",
            Role::Pharmacist => "pharmacist",
            Role::Patient => "patient",
            Role::Logistics => "logistics",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub role: Role,
    /// The caller's facility; `*` for platform staff who act for every facility.
    pub facility: String,
    /// `jwt` or `api-key`.
    pub method: &'static str,
}

/// Facilities whose data a principal may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Facilities(BTreeSet<String>),
}

impl Scope {
    pub fn allows(&self, facility: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Facilities(f) => f.contains(facility),
        }
    }

    /// `None` for every facility, else the list (for repository filters).
    pub fn facilities(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Facilities(f) => Some(f.iter().cloned().collect()),
        }
    }
}

/// What an endpoint does, for the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List pipelines and their state.
    ReadPipelines,
    /// Reload the pipeline files (every facility's pipelines: platform admins).
    ReloadPipelines,
    /// List and read messages (patient data).
    ReadMessages,
    /// Put messages back to work.
    ReprocessMessages,
    /// Send messages into an `http` source.
    Ingest,
    /// Read the audit trail.
    ReadAudit,
    /// See loaded plugins.
    ReadPlugins,
    /// Reload plugins.
    ManagePlugins,
    /// Read `/metrics` when it is not public.
    ReadMetrics,
    /// Search the patient identity index, read cross-references and the review queue.
    ReadPatients,
    /// Change identity links: review decisions, unlink, relink.
    LinkPatients,
    /// Match a consultation case to experts (the decision is stored).
    MatchExperts,
    /// Read a stored match decision (the explanation, MATCH-31).
    ReadMatchDecisions,
    /// Override a match decision (coordinators, with a reason).
    OverrideMatch,
    /// Read the expert fairness report (MATCH-30).
    ReadFairness,
    /// An expert's presence heartbeat.
    ExpertHeartbeat,
    /// Read consultations, their timelines and the live stream (facility-scoped).
    ReadConsultations,
    /// Create a consultation (for the caller's own facility).
    CreateConsultations,
    /// Act on a consultation (the domain decides which action each role may take).
    ActOnConsultations,
    /// Draft a prescription: a physician personally (CN-20).
    DraftPrescription,
    /// Revise, sign, submit, approve, reject or cancel a prescription (the domain checks who
    /// may do which).
    ActOnPrescription,
    /// Read prescriptions and the pharmacist's queue.
    ReadPrescriptions,
    /// A logistics partner's delivery callback.
    PrescriptionDelivery,
    /// Book or cancel an appointment.
    BookAppointment,
    /// Read an appointment.
    ReadAppointments,
    /// Record joining a booked session.
    JoinAppointment,
    /// An expert's daily waiting queue.
    ReadExpertQueue,
    /// Search the de-identified case library and read recommendations.
    ReadCases,
    /// Consultation statistics (no per-prescriber figures exist: CN-20).
    ReadStats,
    /// The regulator's daily records (CN-14): the supervision platform pulls them.
    ReadRegulatorReport,
    /// Read clinical resources through the FHIR facade (stored Observations, reports,
    /// documents, encounters, orders, a Patient by id, `$everything`): facility-scoped, and an
    /// expert only for the patients of consultations they own or owned (FHIR-22).
    ReadClinical,
    /// Read the directory through the FHIR facade: practitioners, their roles, organizations.
    ReadDirectory,
    /// Read settlements, their calls, invoices and ledger entries (facility-scoped).
    ReadSettlements,
    /// Open, confirm or cancel a settlement (for the billing facility).
    Settle,
    /// Run the daily reconciliation (platform staff).
    Reconcile,
    /// Read reconciliation reports (platform staff).
    ReadReconciliation,
    /// Search and retrieve imaging studies through DICOMweb (QIDO-RS, WADO-RS): staff for
    /// their facility scope, an expert only the studies of their consultations' patients.
    ReadStudies,
    /// Store imaging studies through DICOMweb (STOW-RS) into the caller's facility.
    StoreStudies,
    /// Get the room tokens of a consultation's call (RTC-04; the handler narrows an expert to
    /// their own token).
    IssueRoomTokens,
    /// List and download the call's recordings (RTC-30; decrypted, audited).
    ReadRecordings,
    /// Start or stop the call's recording (RTC-30; the handler narrows an expert to the
    /// accepted one and a local doctor to the requesting facility; consent rules as in
    /// signaling).
    RecordCall,
    /// Watch a pipeline's live messages, redacted (`GET /api/tap`, facility-scoped).
    TapPipelines,
    /// See a tapped message's headers, body and reasons (`phi=true`; checked by the handler).
    TapPhi,
    /// Read the device → patient bindings (facility-scoped).
    ReadDevices,
    /// Bind a device to a patient record or end its binding (in the caller's facility).
    ManageDevices,
}

impl Action {
    /// The role × action matrix (documented in docs/security.md; the authorisation test fails
    /// if a cell changes).
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::ReadPipelines => &[Admin, Integrator, Auditor],
            Action::ReloadPipelines => &[Admin],
            Action::ReadMessages => &[Admin, Integrator, Auditor],
            Action::ReprocessMessages => &[Admin, Integrator],
            Action::Ingest => &[Admin, Integrator],
            Action::ReadAudit => &[Admin, Auditor],
            Action::ReadPlugins => &[Admin, Integrator, Auditor],
            Action::ManagePlugins => &[Admin],
            Action::ReadMetrics => &[Admin, Integrator, Auditor],
            Action::ReadPatients => &[Admin, Integrator, Auditor, LocalDoctor],
            Action::LinkPatients => &[Admin, Integrator],
            Action::MatchExperts => &[Admin, Integrator, LocalDoctor],
            Action::ReadMatchDecisions => &[Admin, Integrator, Auditor, LocalDoctor],
            Action::OverrideMatch => &[Admin, Integrator],
            Action::ReadFairness => &[Admin, Integrator, Auditor],
            Action::ExpertHeartbeat => &[Expert],
            Action::ReadConsultations => &[Admin, Integrator, Auditor, Expert, LocalDoctor],
            Action::CreateConsultations => &[Admin, Integrator, LocalDoctor],
            Action::ActOnConsultations => &[Admin, Integrator, Expert, LocalDoctor],
            Action::DraftPrescription => &[Expert, LocalDoctor],
            Action::ActOnPrescription => &[Admin, Integrator, Expert, LocalDoctor, Pharmacist],
            Action::ReadPrescriptions => {
                &[Admin, Integrator, Auditor, Expert, LocalDoctor, Pharmacist]
            }
            Action::PrescriptionDelivery => &[Logistics],
            Action::BookAppointment => &[Admin, Integrator, Expert, LocalDoctor],
            Action::ReadAppointments => &[Admin, Integrator, Auditor, Expert, LocalDoctor],
            Action::JoinAppointment => &[Expert, LocalDoctor, Patient],
            Action::ReadExpertQueue => &[Admin, Integrator, Expert],
            Action::ReadCases => &[Admin, Integrator, Auditor, Expert, LocalDoctor],
            Action::ReadStats => &[Admin, Integrator, Auditor],
            Action::ReadRegulatorReport => &[Admin, Auditor],
            Action::ReadClinical => &[Admin, Integrator, Auditor, Expert, LocalDoctor],
            Action::ReadDirectory => &[Admin, Integrator, Auditor, Expert, LocalDoctor, Pharmacist],
            Action::ReadSettlements => &[Admin, Integrator, Auditor, LocalDoctor],
            Action::Settle => &[Admin, Integrator, LocalDoctor],
            Action::Reconcile => &[Admin, Integrator],
            Action::ReadReconciliation => &[Admin, Integrator, Auditor],
            Action::ReadStudies => &[Admin, Integrator, Auditor, Expert, LocalDoctor],
            Action::StoreStudies => &[Admin, Integrator, LocalDoctor],
            Action::IssueRoomTokens => &[Admin, Integrator, Expert, LocalDoctor],
            Action::ReadRecordings => &[Admin, Auditor, Expert, LocalDoctor],
            Action::RecordCall => &[Expert, LocalDoctor],
            Action::TapPipelines => &[Admin, Integrator, Auditor],
            Action::TapPhi => &[Admin, Integrator],
            Action::ReadDevices => &[Admin, Integrator, Auditor, LocalDoctor],
            Action::ManageDevices => &[Admin, Integrator, LocalDoctor],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::ReadPipelines => "pipeline.read",
            Action::ReloadPipelines => "pipeline.reload",
            Action::ReadMessages => "message.read",
            Action::ReprocessMessages => "message.reprocess",
            Action::Ingest => "message.ingest",
            Action::ReadAudit => "audit.read",
            Action::ReadPlugins => "plugin.read",
            Action::ManagePlugins => "plugin.reload",
            Action::ReadMetrics => "metrics.read",
            Action::ReadPatients => "patient.read",
            Action::LinkPatients => "patient.link",
            Action::MatchExperts => "expert.match",
            Action::ReadMatchDecisions => "match-decision.read",
            Action::OverrideMatch => "match-decision.override",
            Action::ReadFairness => "expert.fairness",
            Action::ExpertHeartbeat => "expert.heartbeat",
            Action::ReadConsultations => "consultation.read",
            Action::CreateConsultations => "consultation.create",
            Action::ActOnConsultations => "consultation.act",
            Action::DraftPrescription => "prescription.draft",
            Action::ActOnPrescription => "prescription.act",
            Action::ReadPrescriptions => "prescription.read",
            Action::PrescriptionDelivery => "prescription.delivery",
            Action::BookAppointment => "appointment.book",
            Action::ReadAppointments => "appointment.read",
            Action::JoinAppointment => "appointment.join",
            Action::ReadExpertQueue => "expert.queue",
            Action::ReadCases => "case.read",
            Action::ReadStats => "stats.read",
            Action::ReadRegulatorReport => "regulator.read",
            Action::ReadClinical => "clinical.read",
            Action::ReadDirectory => "directory.read",
            Action::ReadSettlements => "settlement.read",
            Action::Settle => "settlement.act",
            Action::Reconcile => "reconciliation.run",
            Action::ReadReconciliation => "reconciliation.read",
            Action::ReadStudies => "study.read",
            Action::StoreStudies => "study.store",
            Action::IssueRoomTokens => "room.token.issue",
            Action::ReadRecordings => "recording.read",
            Action::RecordCall => "recording.control",
            Action::TapPipelines => "pipeline.tap",
            Action::TapPhi => "pipeline.tap.phi",
            Action::ReadDevices => "device.read",
            Action::ManageDevices => "device.manage",
        }
    }
}

/// Every endpoint that needs a token: (method, axum route pattern, action). Endpoints not listed
/// here and not public are refused.
pub const ROUTES: &[(&str, &str, Action)] = &[
    ("GET", "/api/pipelines", Action::ReadPipelines),
    ("GET", "/api/pipelines/history", Action::ReadPipelines),
    ("POST", "/api/pipelines/reload", Action::ReloadPipelines),
    ("GET", "/api/tap", Action::TapPipelines),
    ("GET", "/api/pipelines/{name}/shadow", Action::ReadPlugins),
    (
        "POST",
        "/api/pipelines/{name}/shadow/{plugin}/{action}",
        Action::ManagePlugins,
    ),
    ("GET", "/api/backlog", Action::ReadPipelines),
    ("GET", "/api/cluster", Action::ReadPipelines),
    ("GET", "/api/messages", Action::ReadMessages),
    ("GET", "/api/messages/{id}", Action::ReadMessages),
    (
        "POST",
        "/api/messages/{id}/reprocess",
        Action::ReprocessMessages,
    ),
    ("POST", "/api/messages/{id}/dead", Action::ReprocessMessages),
    ("POST", "/in/{*path}", Action::Ingest),
    ("GET", "/api/audit", Action::ReadAudit),
    ("GET", "/api/audit/verify", Action::ReadAudit),
    ("GET", "/api/plugins", Action::ReadPlugins),
    ("POST", "/api/plugins/{name}/reload", Action::ManagePlugins),
    ("GET", "/metrics", Action::ReadMetrics),
    ("POST", "/api/patients/match", Action::ReadPatients),
    ("GET", "/api/patients/identifiers", Action::ReadPatients),
    (
        "GET",
        "/api/patients/{person_id}/identifiers",
        Action::ReadPatients,
    ),
    ("GET", "/api/patients/review", Action::ReadPatients),
    (
        "POST",
        "/api/patients/review/{id}/accept",
        Action::LinkPatients,
    ),
    (
        "POST",
        "/api/patients/review/{id}/reject",
        Action::LinkPatients,
    ),
    (
        "POST",
        "/api/patients/{person_id}/unlink",
        Action::LinkPatients,
    ),
    (
        "POST",
        "/api/patients/{person_id}/relink",
        Action::LinkPatients,
    ),
    // Expert matching (http/experts.rs).
    ("POST", "/api/experts/match", Action::MatchExperts),
    ("POST", "/api/experts/heartbeat", Action::ExpertHeartbeat),
    ("GET", "/api/experts/fairness", Action::ReadFairness),
    (
        "GET",
        "/api/match-decisions/{id}",
        Action::ReadMatchDecisions,
    ),
    (
        "POST",
        "/api/match-decisions/{id}/override",
        Action::OverrideMatch,
    ),
    // The consultation workflow (http/consultations/).
    ("POST", "/api/consultations", Action::CreateConsultations),
    ("GET", "/api/consultations", Action::ReadConsultations),
    (
        "GET",
        "/api/consultations/events",
        Action::ReadConsultations,
    ),
    ("GET", "/api/consultations/{id}", Action::ReadConsultations),
    (
        "POST",
        "/api/consultations/{id}/{action}",
        Action::ActOnConsultations,
    ),
    // The care workflow (http/care/).
    ("POST", "/api/prescriptions", Action::DraftPrescription),
    ("GET", "/api/prescriptions", Action::ReadPrescriptions),
    ("GET", "/api/prescriptions/{id}", Action::ReadPrescriptions),
    (
        "POST",
        "/api/prescriptions/{id}/delivery",
        Action::PrescriptionDelivery,
    ),
    (
        "POST",
        "/api/prescriptions/{id}/{action}",
        Action::ActOnPrescription,
    ),
    ("POST", "/api/appointments", Action::BookAppointment),
    ("GET", "/api/appointments/{id}", Action::ReadAppointments),
    (
        "POST",
        "/api/appointments/{id}/cancel",
        Action::BookAppointment,
    ),
    (
        "POST",
        "/api/appointments/{id}/join",
        Action::JoinAppointment,
    ),
    ("GET", "/api/experts/{id}/queue", Action::ReadExpertQueue),
    ("GET", "/api/cases", Action::ReadCases),
    ("GET", "/api/cases/recommend", Action::ReadCases),
    ("GET", "/api/stats", Action::ReadStats),
    (
        "GET",
        "/api/compliance/regulator/daily",
        Action::ReadRegulatorReport,
    ),
    // The FHIR facade (huizhen-fhir, adapters/fhir/src/facade/table.rs; its unit test holds
    // these rows equal to the routes it mounts).
    ("GET", "/fhir/r4/Patient", Action::ReadPatients),
    ("POST", "/fhir/r4/Patient/$match", Action::ReadPatients),
    ("GET", "/fhir/r4/Patient/$ihe-pix", Action::ReadPatients),
    ("GET", "/fhir/r4/Patient/{id}", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/Patient/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    (
        "GET",
        "/fhir/r4/Patient/{id}/$everything",
        Action::ReadClinical,
    ),
    ("GET", "/fhir/r4/Observation", Action::ReadClinical),
    ("GET", "/fhir/r4/Observation/{id}", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/Observation/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    ("GET", "/fhir/r4/DiagnosticReport", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/DiagnosticReport/{id}",
        Action::ReadClinical,
    ),
    (
        "GET",
        "/fhir/r4/DiagnosticReport/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    ("GET", "/fhir/r4/ServiceRequest", Action::ReadClinical),
    ("GET", "/fhir/r4/ServiceRequest/{id}", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/ServiceRequest/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    ("GET", "/fhir/r4/Task", Action::ReadConsultations),
    ("GET", "/fhir/r4/Task/{id}", Action::ReadConsultations),
    ("PUT", "/fhir/r4/Task/{id}", Action::ActOnConsultations),
    (
        "GET",
        "/fhir/r4/Task/{id}/_history/{vid}",
        Action::ReadConsultations,
    ),
    ("GET", "/fhir/r4/Encounter", Action::ReadClinical),
    ("GET", "/fhir/r4/Encounter/{id}", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/Encounter/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    (
        "GET",
        "/fhir/r4/Encounter/{id}/$everything",
        Action::ReadClinical,
    ),
    ("GET", "/fhir/r4/Provenance", Action::ReadConsultations),
    ("GET", "/fhir/r4/Provenance/{id}", Action::ReadConsultations),
    ("GET", "/fhir/r4/DocumentReference", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/DocumentReference/{id}",
        Action::ReadClinical,
    ),
    (
        "GET",
        "/fhir/r4/DocumentReference/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    ("GET", "/fhir/r4/Appointment", Action::ReadAppointments),
    ("GET", "/fhir/r4/Appointment/{id}", Action::ReadAppointments),
    (
        "GET",
        "/fhir/r4/Appointment/{id}/_history/{vid}",
        Action::ReadAppointments,
    ),
    ("GET", "/fhir/r4/Practitioner", Action::ReadDirectory),
    ("GET", "/fhir/r4/Practitioner/{id}", Action::ReadDirectory),
    ("GET", "/fhir/r4/PractitionerRole", Action::ReadDirectory),
    (
        "GET",
        "/fhir/r4/PractitionerRole/{id}",
        Action::ReadDirectory,
    ),
    ("GET", "/fhir/r4/Organization", Action::ReadDirectory),
    ("GET", "/fhir/r4/Organization/{id}", Action::ReadDirectory),
    ("GET", "/fhir/r4/Consent", Action::ReadClinical),
    ("GET", "/fhir/r4/Consent/{id}", Action::ReadClinical),
    (
        "GET",
        "/fhir/r4/Consent/{id}/_history/{vid}",
        Action::ReadClinical,
    ),
    (
        "GET",
        "/fhir/r4/MedicationRequest",
        Action::ReadPrescriptions,
    ),
    (
        "GET",
        "/fhir/r4/MedicationRequest/{id}",
        Action::ReadPrescriptions,
    ),
    ("GET", "/fhir/r4/AuditEvent", Action::ReadAudit),
    ("GET", "/fhir/r4/AuditEvent/{id}", Action::ReadAudit),
    ("GET", "/fhir/r4/Schedule", Action::ReadAppointments),
    ("GET", "/fhir/r4/Schedule/{id}", Action::ReadAppointments),
    ("GET", "/fhir/r4/Slot", Action::ReadAppointments),
    ("GET", "/fhir/r4/Slot/{id}", Action::ReadAppointments),
    // Billing (http/billing.rs).
    ("POST", "/api/consultations/{id}/settlement", Action::Settle),
    (
        "GET",
        "/api/consultations/{id}/settlement",
        Action::ReadSettlements,
    ),
    ("GET", "/api/settlements/{id}", Action::ReadSettlements),
    ("POST", "/api/settlements/{id}/confirm", Action::Settle),
    ("POST", "/api/settlements/{id}/cancel", Action::Settle),
    (
        "POST",
        "/api/billing/reconciliation/{day}",
        Action::Reconcile,
    ),
    (
        "GET",
        "/api/billing/reconciliation/{day}",
        Action::ReadReconciliation,
    ),
    // DICOMweb (huizhen-dicom, adapters/dicom/src/web; its unit test holds route_rows()
    // against this table).
    ("GET", "/dicomweb/studies", Action::ReadStudies),
    ("POST", "/dicomweb/studies", Action::StoreStudies),
    ("GET", "/dicomweb/series", Action::ReadStudies),
    ("GET", "/dicomweb/instances", Action::ReadStudies),
    ("GET", "/dicomweb/studies/{study}", Action::ReadStudies),
    ("POST", "/dicomweb/studies/{study}", Action::StoreStudies),
    (
        "GET",
        "/dicomweb/studies/{study}/metadata",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/instances",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/metadata",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
        Action::ReadStudies,
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        Action::ReadStudies,
    ),
    // The consultation's call (http/consultations/room.rs).
    (
        "POST",
        "/api/consultations/{id}/room/tokens",
        Action::IssueRoomTokens,
    ),
    (
        "POST",
        "/api/consultations/{id}/recording",
        Action::RecordCall,
    ),
    (
        "GET",
        "/api/consultations/{id}/recordings",
        Action::ReadRecordings,
    ),
    (
        "GET",
        "/api/consultations/{id}/recordings/{recording}",
        Action::ReadRecordings,
    ),
    (
        "GET",
        "/api/consultations/{id}/call",
        Action::ReadConsultations,
    ),
    // Device → patient bindings (http/devices.rs, issue 25).
    ("GET", "/api/devices/bindings", Action::ReadDevices),
    ("POST", "/api/devices/bindings", Action::ManageDevices),
    (
        "POST",
        "/api/devices/{device}/unbind",
        Action::ManageDevices,
    ),
];

/// Endpoints open to anyone (the FHIR CapabilityStatement is public, as SMART clients expect:
/// it says what the facade does, never what data there is).
///
/// The FHIR facade's catch-alls (`/fhir/r4`, `/fhir/r4/{*rest}`) only ever answer an
/// OperationOutcome 404/405, like the engine's own 404 for an unknown path.
pub const PUBLIC: &[&str] = &[
    "/health",
    "/ready",
    "/fhir/r4/metadata",
    "/fhir/r4",
    "/fhir/r4/{*rest}",
    // The call's signaling and page (huizhen-media): authenticated by the room token each
    // carries (RTC-04), not by a bearer token.
    "/ws/signal",
    "/call/{room}",
    // The web console (huizhen-console): its pages and assets hold no data, and its login,
    // logout and session routes check the session cookie or the credentials themselves; the
    // data comes from the API above, under the session's principal.
    "/ui",
    "/ui/",
    "/ui/assets/{file}",
    "/ui/login",
    "/ui/logout",
    "/ui/session",
    "/ui/password",
    "/ui/totp",
    "/ui/totp/confirm",
    "/ui/oidc/start",
    "/ui/oidc/callback",
];
