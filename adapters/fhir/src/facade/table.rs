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

const fn p(
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

const fn r(
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

/// Parameters every type has (FHIR's common search parameters), besides its own.
pub const COMMON: &[Param] = &[
    p("_id", Kind::Token, &["id"], "the logical id"),
    p(
        "_lastUpdated",
        Kind::Date,
        &["meta.lastUpdated"],
        "when the resource last changed",
    ),
];

const SUBJECT_PATIENT: Param = r(
    "patient",
    &["subject"],
    Some("Patient"),
    "the Patient the resource is about",
);
const SUBJECT: Param = r("subject", &["subject"], None, "who or what it is about");
const IDENTIFIER: Param = p(
    "identifier",
    Kind::Token,
    &["identifier"],
    "a business identifier",
);
const STATUS: Param = p("status", Kind::Token, &["status"], "the status");

/// Every type the facade serves, in the CapabilityStatement's order.
pub const TABLE: &[ResourceDef] = &[
    ResourceDef {
        name: "Patient",
        sources: &[Source::Stored, Source::Person],
        search: Action::ReadPatients,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            IDENTIFIER,
            p(
                "name",
                Kind::String,
                &["name"],
                "a whole word of a name (family, given, text); CJK names also as written",
            ),
            p(
                "family",
                Kind::String,
                &["name.family"],
                "a whole word of the family name",
            ),
            p("given", Kind::String, &["name.given"], "a whole given name"),
            p("birthdate", Kind::Date, &["birthDate"], "the birth date"),
            p("gender", Kind::Token, &["gender"], "administrative gender"),
            p(
                "telecom",
                Kind::Token,
                &["telecom"],
                "a phone number or other contact value",
            ),
        ],
        includes: &[],
        revincludes: &[],
        operations: &[
            Operation {
                name: "match",
                method: "POST",
                instance: false,
                action: Action::ReadPatients,
                definition: "http://hl7.org/fhir/OperationDefinition/Patient-match",
                doc: "PDQm ITI-119: candidates from the identity matcher with their match-grade and score",
            },
            Operation {
                name: "ihe-pix",
                method: "GET",
                instance: false,
                action: Action::ReadPatients,
                definition: "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
                doc: "PIXm ITI-83: the identifiers of a person in other facilities",
            },
            Operation {
                name: "everything",
                method: "GET",
                instance: true,
                action: Action::ReadClinical,
                definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                doc: "the patient's record the caller may see (an expert: only patients of consultations they own or owned)",
            },
        ],
        doc: "stored Patients (from conversion) and the persons of the identity index (person-{n})",
    },
    ResourceDef {
        name: "Observation",
        sources: &[Source::Stored],
        search: Action::ReadClinical,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            SUBJECT_PATIENT,
            SUBJECT,
            p("code", Kind::Token, &["code"], "the observation code"),
            p("category", Kind::Token, &["category"], "the category"),
            p(
                "date",
                Kind::Date,
                &["effectiveDateTime", "effectivePeriod", "effectiveInstant"],
                "the clinically relevant time",
            ),
            STATUS,
            IDENTIFIER,
            r(
                "encounter",
                &["encounter"],
                Some("Encounter"),
                "the encounter",
            ),
            r("based-on", &["basedOn"], None, "the order it fulfils"),
        ],
        includes: &[Include {
            param: "patient",
            target: "Patient",
        }],
        revincludes: &[],
        operations: &[],
        doc: "stored Observations",
    },
    ResourceDef {
        name: "DiagnosticReport",
        sources: &[Source::Stored, Source::Consultation],
        search: Action::ReadClinical,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            SUBJECT_PATIENT,
            SUBJECT,
            p("code", Kind::Token, &["code"], "the report code"),
            p("category", Kind::Token, &["category"], "the category"),
            p(
                "date",
                Kind::Date,
                &["effectiveDateTime", "effectivePeriod"],
                "the clinically relevant time",
            ),
            STATUS,
            IDENTIFIER,
            r(
                "result",
                &["result"],
                Some("Observation"),
                "an Observation of the report",
            ),
            r("based-on", &["basedOn"], None, "the order it fulfils"),
            r(
                "encounter",
                &["encounter"],
                Some("Encounter"),
                "the encounter",
            ),
        ],
        includes: &[
            Include {
                param: "result",
                target: "Observation",
            },
            Include {
                param: "patient",
                target: "Patient",
            },
        ],
        revincludes: &[],
        operations: &[],
        doc: "stored reports and the signed opinion of each consultation (co-{id})",
    },
    ResourceDef {
        name: "ServiceRequest",
        sources: &[Source::Stored, Source::Consultation],
        search: Action::ReadClinical,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            SUBJECT_PATIENT,
            SUBJECT,
            STATUS,
            p(
                "category",
                Kind::Token,
                &["category"],
                "the category (consult for consultations)",
            ),
            p(
                "priority",
                Kind::Token,
                &["priority"],
                "routine, urgent, asap, stat",
            ),
            r("performer", &["performer"], None, "the requested performer"),
            p(
                "authored",
                Kind::Date,
                &["authoredOn"],
                "when it was requested",
            ),
            r("requester", &["requester"], None, "who requested it"),
            IDENTIFIER,
            p("code", Kind::Token, &["code"], "what is requested"),
        ],
        includes: &[Include {
            param: "patient",
            target: "Patient",
        }],
        revincludes: &[],
        operations: &[],
        doc: "stored orders and the request of each consultation (cr-{id})",
    },
    ResourceDef {
        name: "Task",
        sources: &[Source::Consultation],
        search: Action::ReadConsultations,
        read: Action::ReadConsultations,
        vread: true,
        update: Some(Action::ActOnConsultations),
        params: &[
            r(
                "owner",
                &["owner"],
                None,
                "the expert (PractitionerRole) it is offered to or accepted by",
            ),
            STATUS,
            p(
                "business-status",
                Kind::Token,
                &["businessStatus"],
                "the consultation sub-state (FHIR-10)",
            ),
            r(
                "focus",
                &["focus"],
                None,
                "the consultation's ServiceRequest",
            ),
            r("patient", &["for"], Some("Patient"), "the patient"),
            p(
                "modified",
                Kind::Date,
                &["lastModified"],
                "the last transition",
            ),
            p(
                "period",
                Kind::Date,
                &["executionPeriod"],
                "from the request to the end",
            ),
            p(
                "group-identifier",
                Kind::Token,
                &["groupIdentifier"],
                "the consultation id",
            ),
            r("requester", &["requester"], None, "the requesting facility"),
            IDENTIFIER,
        ],
        includes: &[
            Include {
                param: "focus",
                target: "ServiceRequest",
            },
            Include {
                param: "patient",
                target: "Patient",
            },
            Include {
                param: "owner",
                target: "PractitionerRole",
            },
        ],
        revincludes: &[RevInclude {
            source: "Provenance",
            param: "target",
        }],
        operations: &[],
        doc: "each consultation (id = the consultation id); PUT moves it along FHIR-10 (If-Match required, FHIR-11)",
    },
    ResourceDef {
        name: "Encounter",
        sources: &[Source::Stored, Source::Consultation],
        search: Action::ReadClinical,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            SUBJECT_PATIENT,
            SUBJECT,
            STATUS,
            p(
                "class",
                Kind::Token,
                &["class"],
                "the encounter class (VR for a consultation session)",
            ),
            p("date", Kind::Date, &["period"], "the period"),
            IDENTIFIER,
            r("based-on", &["basedOn"], None, "the order"),
        ],
        includes: &[Include {
            param: "patient",
            target: "Patient",
        }],
        revincludes: &[],
        operations: &[],
        doc: "stored encounters and the session of each consultation (cs-{id}, class VR)",
    },
    ResourceDef {
        name: "Provenance",
        sources: &[Source::Consultation],
        search: Action::ReadConsultations,
        read: Action::ReadConsultations,
        vread: false,
        update: None,
        params: &[
            r("target", &["target"], None, "the Task"),
            p("recorded", Kind::Date, &["recorded"], "when"),
            r("agent", &["agent.who"], None, "who"),
        ],
        includes: &[],
        revincludes: &[],
        operations: &[],
        doc: "every event of every consultation (ev-{id}-{version}): who, when, which plugin decided",
    },
    ResourceDef {
        name: "DocumentReference",
        sources: &[Source::Stored],
        search: Action::ReadClinical,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            SUBJECT_PATIENT,
            SUBJECT,
            p("type", Kind::Token, &["type"], "the document type"),
            p("category", Kind::Token, &["category"], "the category"),
            p(
                "date",
                Kind::Date,
                &["date"],
                "when the reference was created",
            ),
            STATUS,
            IDENTIFIER,
        ],
        includes: &[Include {
            param: "patient",
            target: "Patient",
        }],
        revincludes: &[],
        operations: &[],
        doc: "stored documents",
    },
    ResourceDef {
        name: "Appointment",
        sources: &[Source::Stored, Source::Booking],
        search: Action::ReadAppointments,
        read: Action::ReadAppointments,
        vread: true,
        update: None,
        params: &[
            r("actor", &["participant.actor"], None, "a participant"),
            r(
                "patient",
                &["participant.actor"],
                Some("Patient"),
                "the patient",
            ),
            r(
                "practitioner",
                &["participant.actor"],
                Some("Practitioner"),
                "a practitioner",
            ),
            p("date", Kind::Date, &["start"], "the start"),
            STATUS,
            IDENTIFIER,
        ],
        includes: &[Include {
            param: "patient",
            target: "Patient",
        }],
        revincludes: &[],
        operations: &[],
        doc: "stored appointments (SIU) and the bookings of consultations (bk-{id})",
    },
    ResourceDef {
        name: "Practitioner",
        sources: &[Source::Directory],
        search: Action::ReadDirectory,
        read: Action::ReadDirectory,
        vread: false,
        update: None,
        params: &[
            IDENTIFIER,
            p("name", Kind::String, &["name"], "a whole word of the name"),
            p("active", Kind::Token, &["active"], "registration active"),
        ],
        includes: &[],
        revincludes: &[],
        operations: &[],
        doc: "the experts of the registry ({expert id})",
    },
    ResourceDef {
        name: "PractitionerRole",
        sources: &[Source::Directory],
        search: Action::ReadDirectory,
        read: Action::ReadDirectory,
        vread: false,
        update: None,
        params: &[
            p(
                "specialty",
                Kind::Token,
                &["specialty"],
                "a department of the expert",
            ),
            r(
                "organization",
                &["organization"],
                Some("Organization"),
                "the expert's facility",
            ),
            r(
                "practitioner",
                &["practitioner"],
                Some("Practitioner"),
                "the expert",
            ),
            p(
                "active",
                Kind::Token,
                &["active"],
                "registered and licence verified",
            ),
            p("role", Kind::Token, &["code"], "the professional title"),
            IDENTIFIER,
        ],
        includes: &[
            Include {
                param: "practitioner",
                target: "Practitioner",
            },
            Include {
                param: "organization",
                target: "Organization",
            },
        ],
        revincludes: &[],
        operations: &[],
        doc: "each expert at their facility ({expert id}): the owner of consultation Tasks",
    },
    ResourceDef {
        name: "Organization",
        sources: &[Source::Directory],
        search: Action::ReadDirectory,
        read: Action::ReadDirectory,
        vread: false,
        update: None,
        params: &[
            IDENTIFIER,
            p("name", Kind::String, &["name"], "a whole word of the name"),
            p("active", Kind::Token, &["active"], "active"),
        ],
        includes: &[],
        revincludes: &[],
        operations: &[],
        doc: "the facilities of the registry and its agreements ({facility})",
    },
    ResourceDef {
        name: "Consent",
        sources: &[Source::Consultation],
        search: Action::ReadClinical,
        read: Action::ReadClinical,
        vread: true,
        update: None,
        params: &[
            r("patient", &["patient"], Some("Patient"), "the patient"),
            STATUS,
            p(
                "category",
                Kind::Token,
                &["category"],
                "the category (LOINC 59284-0)",
            ),
            p("date", Kind::Date, &["dateTime"], "when it was signed"),
            IDENTIFIER,
        ],
        includes: &[],
        revincludes: &[],
        operations: &[],
        doc: "the informed consent recorded for each consultation (cn-{id}, CN-05)",
    },
    ResourceDef {
        name: "MedicationRequest",
        sources: &[Source::Prescription],
        search: Action::ReadPrescriptions,
        read: Action::ReadPrescriptions,
        vread: false,
        update: None,
        params: &[
            SUBJECT_PATIENT,
            SUBJECT,
            STATUS,
            p("intent", Kind::Token, &["intent"], "order"),
            p(
                "authoredon",
                Kind::Date,
                &["authoredOn"],
                "when it was drafted",
            ),
            p(
                "code",
                Kind::Token,
                &["medicationCodeableConcept"],
                "the drug code",
            ),
            IDENTIFIER,
        ],
        includes: &[],
        revincludes: &[],
        operations: &[],
        doc: "each line of each prescription ({prescription id}-{line}; CN-20)",
    },
    ResourceDef {
        name: "AuditEvent",
        sources: &[Source::Audit],
        search: Action::ReadAudit,
        read: Action::ReadAudit,
        vread: false,
        update: None,
        params: &[
            r(
                "patient",
                &["entity.what"],
                Some("Patient"),
                "the patient it was about",
            ),
            r("entity", &["entity.what"], None, "what it was about"),
            p("date", Kind::Date, &["recorded"], "when"),
            p(
                "agent",
                Kind::Token,
                &["agent.who.identifier"],
                "who (the actor's id, as a token)",
            ),
            p("action", Kind::Token, &["action"], "R, C, U, D or E"),
            p(
                "subtype",
                Kind::Token,
                &["subtype"],
                "the engine's action name",
            ),
            p(
                "outcome",
                Kind::Token,
                &["outcome"],
                "0 success, 4 denied, 8 failed",
            ),
        ],
        includes: &[],
        revincludes: &[],
        operations: &[],
        doc: "the audit trail ({seq}; IHE-05)",
    },
];

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
