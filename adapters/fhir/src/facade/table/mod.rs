//! The facade's one table: every resource type it serves, where the data comes from, the
//! interactions, search parameters (FHIR-21), `_include`s and operations of each, and the
//! action of the engine's route table ([`huizhen_core::security::ROUTES`]) each route checks.
//!
//! The router ([`super::routes`]), the CapabilityStatement ([`super::capability`]), the
//! search parser ([`super::search`]) and the index the `fhir_store` sink writes
//! ([`super::index`]) are all made from [`TABLE`], so the CapabilityStatement cannot list what
//! the router does not answer, and a search parameter is searchable exactly where it is listed.

use huizhen_core::security::Action;

/// How a search parameter compares (FHIR search parameter types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `system|code`, `code`, `system|`, `|code`; identifiers `system|value`.
    Token,
    /// `Type/id` or a bare id.
    Reference,
    /// A date, dateTime, instant or Period with the prefixes eq, ne, gt, lt, ge, le, sa, eb.
    Date,
    /// Whole normalised words (names: family, given, text).
    String,
}

impl Kind {
    /// The CapabilityStatement's `searchParam.type` code.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::Reference => "reference",
            Kind::Date => "date",
            Kind::String => "string",
        }
    }
}

/// A search parameter of a resource type.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    /// Dotted element paths into the resource JSON (arrays are walked through; a choice
    /// element is listed once per type: `effectiveDateTime`, `effectivePeriod`).
    pub paths: &'static [&'static str],
    /// For a reference: the only type it counts (`patient` → `Patient`), if one.
    pub target: Option<&'static str>,
    pub doc: &'static str,
}

pub(super) const fn p(
    name: &'static str,
    kind: Kind,
    paths: &'static [&'static str],
    doc: &'static str,
) -> Param {
    Param {
        name,
        kind,
        paths,
        target: None,
        doc,
    }
}

pub(super) const fn r(
    name: &'static str,
    paths: &'static [&'static str],
    target: Option<&'static str>,
    doc: &'static str,
) -> Param {
    Param {
        name,
        kind: Kind::Reference,
        paths,
        target,
        doc,
    }
}

/// Where a type's resources come from. A type may have several: a search merges them, a read
/// goes to the one whose ids it owns ([`Source::owns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The FHIR resource store (`fhir_store` sink): server-assigned UUIDs or the ids a
    /// transaction Bundle gave.
    Stored,
    /// The consultation workflow: Task `{id}`, ServiceRequest `cr-{id}`, Encounter
    /// `cs-{id}`, DiagnosticReport `co-{id}` (the signed opinion), Provenance
    /// `ev-{id}-{version}`, Consent `cn-{id}`.
    Consultation,
    /// The patient identity index: Patient `person-{n}`.
    Person,
    /// The expert registry: Practitioner and PractitionerRole `{expert id}`, Organization
    /// `{facility}`.
    Directory,
    /// Bookings: Appointment `bk-{id}`.
    Booking,
    /// Prescriptions: MedicationRequest `{id}`.
    Prescription,
    /// The audit trail: AuditEvent `{seq}`.
    Audit,
    /// The experts' availability: Schedule `{expert id}`, Slot `{expert id}.{start ms}`.
    Schedule,
}

/// The id prefix of a projection in a type the store also holds (`None`: the source owns
/// every id of its types).
pub fn prefix(source: Source, resource_type: &str) -> Option<&'static str> {
    match (source, resource_type) {
        (Source::Consultation, "ServiceRequest") => Some("cr-"),
        (Source::Consultation, "Encounter") => Some("cs-"),
        (Source::Consultation, "DiagnosticReport") => Some("co-"),
        (Source::Consultation, "Provenance") => Some("ev-"),
        (Source::Consultation, "Consent") => Some("cn-"),
        (Source::Person, "Patient") => Some("person-"),
        (Source::Booking, "Appointment") => Some("bk-"),
        _ => None,
    }
}

/// An `_include` (`Type:param` → the referenced resources of `target` type).
#[derive(Debug, Clone, Copy)]
pub struct Include {
    pub param: &'static str,
    pub target: &'static str,
}

/// An `_revinclude` (`Source:param` → resources of `source` type pointing at the match).
#[derive(Debug, Clone, Copy)]
pub struct RevInclude {
    pub source: &'static str,
    pub param: &'static str,
}

/// An operation (`$match`, `$ihe-pix`, `$everything`).
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    /// `POST` or `GET`.
    pub method: &'static str,
    /// On the type (`Patient/$match`) or an instance (`Patient/{id}/$everything`).
    pub instance: bool,
    pub action: Action,
    /// The OperationDefinition it implements.
    pub definition: &'static str,
    pub doc: &'static str,
}

/// One resource type the facade serves.
#[derive(Debug, Clone, Copy)]
pub struct ResourceDef {
    pub name: &'static str,
    pub sources: &'static [Source],
    /// The action of `GET /fhir/r4/{type}` (search).
    pub search: Action,
    /// The action of read and vread.
    pub read: Action,
    /// `GET /fhir/r4/{type}/{id}/_history/{vid}`.
    pub vread: bool,
    /// `PUT /fhir/r4/{type}/{id}` and its action.
    pub update: Option<Action>,
    pub params: &'static [Param],
    pub includes: &'static [Include],
    pub revincludes: &'static [RevInclude],
    pub operations: &'static [Operation],
    pub doc: &'static str,
}

impl ResourceDef {
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

mod resources;

pub use resources::{COMMON, TABLE};

/// The definition of `name`.
pub fn def(name: &str) -> Option<&'static ResourceDef> {
    TABLE.iter().find(|d| d.name == name)
}

/// A parameter of `def`, its own or a common one.
pub fn param(def: &ResourceDef, name: &str) -> Option<&'static Param> {
    def.param(name)
        .or_else(|| COMMON.iter().find(|p| p.name == name))
}

/// The types the `fhir_store` sink accepts in a transaction Bundle (those with a stored
/// source).
pub fn storable(name: &str) -> bool {
    def(name).is_some_and(|d| d.sources.contains(&Source::Stored))
}
