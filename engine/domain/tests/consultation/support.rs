//! Fixtures for the consultation tests: actors, a request, a fake signer and verifier, a
//! driver that runs commands and keeps the events, the path to each state, and the FHIR-10
//! table written out by hand from STANDARDS.md §2.2 (not derived from the code).

use chrono::{DateTime, TimeDelta, Utc};
use huizhen_domain::consultation::*;
use huizhen_domain::expert::{IcdCode, Title};
use huizhen_domain::signature::{Signature, SignatureError, SignatureVerifier, Signer};

pub const ID: &str = "C-2026-0001";
pub const PATIENT: u64 = 4711;
pub const REQUESTING_DOCTOR: &str = "dr-wang";
pub const LOCAL_PHYSICIAN: &str = "dr-liu";

pub fn t0() -> DateTime<Utc> {
    "2026-03-02T08:00:00Z".parse().expect("a valid time")
}

pub fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

pub fn local_doctor() -> Actor {
    Actor::new(REQUESTING_DOCTOR, Role::LocalDoctor)
}

pub fn coordinator() -> Actor {
    Actor::new("coord-1", Role::Coordinator)
}

pub fn system() -> Actor {
    Actor::new("engine", Role::System)
}

pub fn expert(id: &str) -> Actor {
    Actor::new(id, Role::Expert)
}

pub fn offeree(id: &str) -> Offeree {
    Offeree {
        expert: id.into(),
        facility: "F-EXP".into(),
    }
}

/// An urgent institution-to-institution request under agreement AG-1.
pub fn request() -> ConsultationRequest {
    ConsultationRequest {
        patient: PATIENT,
        requesting_facility: "F-REQ".into(),
        requesting_doctor: REQUESTING_DOCTOR.into(),
        province: Some("44".into()),
        urgency: Urgency::Urgent,
        department: "03.01".into(),
        min_title: Title::AssociateChief,
        icd10: Some(IcdCode::parse("I21.0").expect("a code")),
        reason: "胸痛 3 小时, 心电图 ST 段抬高".into(),
        purpose: "是否急诊 PCI".into(),
        case_summary: "男, 58 岁, 高血压史 10 年".into(),
        requested_time: RequestedTime::AsSoonAsPossible,
        attachments: Attachments {
            observations: vec!["Observation/ecg-1".into()],
            reports: vec!["DiagnosticReport/lab-7".into()],
            studies: vec!["1.2.840.113619.2.55.3.604688119".into()],
        },
        triage: Some(TriageOutput {
            plugin: PluginRef {
                name: "triage".into(),
                version: "1.2.0".into(),
            },
            urgency: Some(Urgency::Urgent),
            department: Some("03.01".into()),
            result: "STEMI suspected".into(),
        }),
        service_type: ServiceType::InstitutionToInstitution,
        agreement: Some("AG-1".into()),
        his_order: None,
    }
}

// ---------------------------------------------------------------------------------------------
// A fake signer: FNV-1a over (key, document). Enough to show that a changed byte fails; the
// engine's test CA does real certificates.
// ---------------------------------------------------------------------------------------------

const ROOT: &[u8] = b"test-root";

fn fnv(key: &[u8], document: &[u8]) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.iter().chain(document) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.to_be_bytes().to_vec()
}

pub struct FakeSigner {
    pub name: String,
}

impl Signer for FakeSigner {
    fn sign(&self, document: &[u8], at: DateTime<Utc>) -> Result<Signature, SignatureError> {
        Ok(Signature {
            algorithm: "fake-fnv".into(),
            value: fnv(self.name.as_bytes(), document),
            certificate_chain: vec![self.name.as_bytes().to_vec(), ROOT.to_vec()],
            signed_at: at,
            signer: self.name.clone(),
            timestamp_token: None,
        })
    }
}

pub struct FakeVerifier;

impl SignatureVerifier for FakeVerifier {
    fn verify(&self, document: &[u8], signature: &Signature) -> Result<String, SignatureError> {
        if signature.algorithm != "fake-fnv" {
            return Err(SignatureError::Algorithm(signature.algorithm.clone()));
        }
        let [leaf, root] = signature.certificate_chain.as_slice() else {
            return Err(SignatureError::Chain("expected leaf and root".into()));
        };
        if root.as_slice() != ROOT {
            return Err(SignatureError::Untrusted(
                String::from_utf8_lossy(root).into_owned(),
            ));
        }
        if fnv(leaf, document) != signature.value {
            return Err(SignatureError::Mismatch);
        }
        Ok(String::from_utf8_lossy(leaf).into_owned())
    }
}

pub fn opinion(consultation: &str, expert: &str) -> Opinion {
    Opinion {
        consultation: consultation.into(),
        expert: expert.into(),
        diagnoses: vec![Diagnosis {
            code: IcdCode::parse("I21.0").expect("a code"),
            text: "急性前壁心肌梗死".into(),
        }],
        treatment_plan: "急诊 PCI; 双联抗血小板".into(),
        advice: "转上级医院导管室".into(),
    }
}

pub fn signed_opinion(consultation: &str, expert: &str, at: DateTime<Utc>) -> SignedOpinion {
    let signer = FakeSigner {
        name: expert.into(),
    };
    sign_opinion(opinion(consultation, expert), &signer, at).expect("the fake signer signs")
}

pub fn decision() -> LocalDecision {
    LocalDecision {
        outcome: DecisionOutcome::Adopted,
        final_diagnoses: vec![IcdCode::parse("I21.0").expect("a code")],
        note: String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// A consultation with its events and a clock.
#[derive(Clone)]
pub struct Case {
    pub c: Consultation,
    pub events: Vec<Event>,
    pub now: DateTime<Utc>,
}

impl Case {
    /// Created from `request` at t0 by the local doctor.
    pub fn with(request: ConsultationRequest) -> Case {
        let actor = local_doctor();
        let created = Consultation::create(ID, request, &Context::new(t0(), &actor))
            .expect("a valid request");
        let c = Consultation::replay(std::slice::from_ref(&created)).expect("one created event");
        Case {
            c,
            events: vec![created],
            now: t0(),
        }
    }

    pub fn new() -> Case {
        Case::with(request())
    }

    /// Runs `command` as `actor` one second later; the refusal on failure.
    pub fn try_run(&mut self, actor: &Actor, command: Command) -> Result<Vec<Event>, ConsultError> {
        let at = self.now + TimeDelta::seconds(1);
        self.try_run_at(at, actor, command)
    }

    /// Runs `command` as `actor` at `at` (the clock moves there).
    pub fn try_run_at(
        &mut self,
        at: DateTime<Utc>,
        actor: &Actor,
        command: Command,
    ) -> Result<Vec<Event>, ConsultError> {
        self.now = at;
        let verifier = FakeVerifier;
        let ctx = Context::new(self.now, actor).with_verifier(&verifier);
        let (next, events) = self.c.execute(&command, &ctx)?;
        self.c = next;
        self.events.extend(events.iter().cloned());
        Ok(events)
    }

    /// Runs `command`, which must succeed.
    pub fn run(&mut self, actor: &Actor, command: Command) -> &mut Case {
        let action = command.action();
        let state = self.c.state();
        if let Err(e) = self.try_run(actor, command) {
            panic!("{action} in {state} refused: {e}");
        }
        self
    }

    /// Records every gate an institution-to-institution session needs, for experts E1…E4.
    pub fn gates(&mut self) -> &mut Case {
        let at = self.now;
        self.consent().attach_physician();
        for who in [LOCAL_PHYSICIAN, "E1", "E2", "E3", "E4"] {
            self.run(&system(), verification(physician(who), at));
        }
        self
    }

    /// The patient's signed consent, now (CN-05).
    pub fn consent(&mut self) -> &mut Case {
        let at = self.now;
        self.run(
            &local_doctor(),
            Command::RecordConsent {
                consent: Consent {
                    signer: ConsentSigner::Patient,
                    document: "DocumentReference/consent-1".into(),
                    signed_at: at,
                    not_suitable_to_inform_patient: false,
                },
            },
        )
    }

    /// Prior-diagnosis evidence (a discharge summary of E11.9) recorded by expert E1 (CN-10).
    pub fn prior_diagnosis(&mut self) -> &mut Case {
        self.run(
            &expert("E1"),
            Command::RecordPriorDiagnosis {
                evidence: PriorDiagnosis {
                    code: "E11.9".parse().unwrap(),
                    kind: EvidenceKind::DischargeSummary,
                    document: "DocumentReference/discharge-3".into(),
                },
            },
        )
    }

    /// The local physician LOCAL_PHYSICIAN attached (CN-06).
    pub fn attach_physician(&mut self) -> &mut Case {
        self.run(
            &local_doctor(),
            Command::AttachPhysician {
                physician: LocalPhysician {
                    practitioner: LOCAL_PHYSICIAN.into(),
                    licence: "110440000012345".into(),
                },
            },
        )
    }
}

/// A consultation of `service` taken to `scheduled` (no agreement unless
/// institution-to-institution).
pub fn scheduled(service: ServiceType) -> Case {
    let mut r = request();
    r.service_type = service;
    if service != ServiceType::InstitutionToInstitution {
        r.agreement = None;
    }
    let mut k = Case::with(r);
    advance(&mut k, State::Scheduled);
    k
}

pub fn physician(id: &str) -> Subject {
    Subject::Physician {
        practitioner: id.into(),
    }
}

pub fn verification(subject: Subject, at: DateTime<Utc>) -> Command {
    Command::RecordVerification {
        verification: Verification {
            subject,
            method: VerificationMethod::CaCertificate,
            verified_at: at,
            result: VerificationResult::Passed,
            provider_reference: Some("ca-txn-1".into()),
        },
    }
}

/// A step of a fixture path.
type Step = fn(&mut Case);

/// The steps from a created case (gates recorded) to each state on the main path.
fn main_path(until: State) -> Vec<Step> {
    let steps: [(State, Step); 6] = [
        (State::PendingLocalApproval, |k| {
            k.run(&local_doctor(), Command::Submit);
        }),
        (State::PendingMatch, |k| {
            k.run(&coordinator(), Command::Approve);
        }),
        (State::Offered, |k| {
            let deadline = k.now + minutes(10);
            k.run(
                &system(),
                Command::Offer {
                    to: offeree("E1"),
                    deadline,
                },
            );
        }),
        (State::Reviewing, |k| {
            k.run(&expert("E1"), Command::Open);
        }),
        (State::Scheduled, |k| {
            let expected_version = k.c.version();
            k.run(&expert("E1"), Command::Accept { expected_version });
        }),
        (State::InSession, |k| {
            k.run(&local_doctor(), Command::Start);
        }),
    ];
    if until == State::Drafting {
        return vec![];
    }
    let end = steps
        .iter()
        .position(|(s, _)| *s == until)
        .unwrap_or_else(|| panic!("{until} is not on the main path"));
    steps[..=end].iter().map(|(_, f)| *f).collect()
}

/// Walks `k` along the main path to `until` (drafting … in-session), without recording gates.
pub fn advance(k: &mut Case, until: State) {
    for step in main_path(until) {
        step(k);
    }
}

/// The path from creation (with every gate recorded) to `state`, as commands with actors.
pub fn reach(state: State) -> Case {
    let mut k = Case::new();
    k.gates();
    let pre = |k: &mut Case, s: State| {
        for step in main_path(s) {
            step(k);
        }
    };
    match state {
        State::Drafting
        | State::PendingLocalApproval
        | State::PendingMatch
        | State::Offered
        | State::Reviewing
        | State::Scheduled
        | State::InSession => pre(&mut k, state),
        State::Declined => {
            pre(&mut k, State::Offered);
            k.run(
                &expert("E1"),
                Command::Reject {
                    reason: "outside my subspecialty".into(),
                },
            );
        }
        State::Paused => {
            pre(&mut k, State::InSession);
            k.run(&local_doctor(), Command::Pause);
        }
        State::ReportPending => {
            pre(&mut k, State::InSession);
            k.run(&local_doctor(), Command::RequestReport);
        }
        State::ReportSigned => {
            pre(&mut k, State::InSession);
            let signed = signed_opinion(ID, "E1", k.now);
            k.run(&expert("E1"), Command::SignOpinion { signed });
            k.run(
                &local_doctor(),
                Command::RecordLocalDecision {
                    decision: decision(),
                },
            );
            k.run(&local_doctor(), Command::Complete);
        }
        State::Cancelled => {
            k.run(
                &local_doctor(),
                Command::Cancel {
                    reason: "patient transferred".into(),
                },
            );
        }
        State::Failed(code) => {
            let from = match code {
                FailReason::SlaBreached => State::PendingMatch,
                FailReason::NoShow => State::Scheduled,
                FailReason::TechnicalFailure => State::InSession,
            };
            pre(&mut k, from);
            k.run(
                &system(),
                Command::Fail {
                    code,
                    reason: "as the fixture needs".into(),
                },
            );
        }
        State::EnteredInError => {
            k.run(&coordinator(), Command::MarkEnteredInError);
        }
    }
    assert_eq!(k.c.state(), state, "the fixture reaches {state}");
    k
}

// ---------------------------------------------------------------------------------------------
// FHIR-10, written out from STANDARDS.md §2.2. `=` means the state does not change (a record,
// or an action that keeps the Task where it is). `fail` lists the failure codes separately.
// ---------------------------------------------------------------------------------------------

/// Records allowed before the session (consent, physician, verification, prior diagnosis).
const GATES: &str =
    "record_consent:= attach_physician:= record_verification:= record_prior_diagnosis:=";
/// Allowed in every state that is not terminal.
const LIVE: &str = "repoint_patient:= mark_entered_in_error:entered-in-error";

pub const TABLE: &[(&str, &str)] = &[
    (
        "drafting",
        "submit:pending-local-approval cancel:cancelled GATES LIVE",
    ),
    (
        "pending-local-approval",
        "approve:pending-match cancel:cancelled GATES LIVE",
    ),
    (
        "pending-match",
        "offer:offered fan_out:offered escalate:= cancel:cancelled fail:failed GATES LIVE",
    ),
    (
        "offered",
        "open:reviewing accept:scheduled reject:declined offer:offered fan_out:offered escalate:= cancel:cancelled GATES LIVE",
    ),
    (
        "reviewing",
        "accept:scheduled reject:declined escalate:= cancel:cancelled GATES LIVE",
    ),
    (
        "scheduled",
        "schedule:= start:in-session cancel:cancelled fail:failed GATES record_recording_consent:= LIVE",
    ),
    (
        "in-session",
        "pause:paused request_report:report-pending sign_opinion:= record_local_decision:= complete:report-signed fail:failed cancel:cancelled record_recording_consent:= LIVE",
    ),
    (
        "paused",
        "resume:in-session cancel:cancelled fail:failed record_recording_consent:= LIVE",
    ),
    (
        "report-pending",
        "sign_opinion:= record_local_decision:= complete:report-signed fail:failed LIVE",
    ),
    ("report-signed", "mark_entered_in_error:entered-in-error"),
    (
        "declined",
        "offer:offered fan_out:offered escalate:= GATES LIVE",
    ),
    ("cancelled", "mark_entered_in_error:entered-in-error"),
    ("sla-breached", "mark_entered_in_error:entered-in-error"),
    (
        "technical-failure",
        "mark_entered_in_error:entered-in-error",
    ),
    ("no-show", "mark_entered_in_error:entered-in-error"),
    ("entered-in-error", ""),
];

/// The failure codes each state may fail with (FHIR-10: no-show from scheduled; the failed
/// row's sla-breached and technical-failure elsewhere).
pub const FAIL_CODES: &[(&str, &[FailReason])] = &[
    (
        "pending-match",
        &[FailReason::SlaBreached, FailReason::TechnicalFailure],
    ),
    ("scheduled", &[FailReason::NoShow]),
    (
        "in-session",
        &[FailReason::SlaBreached, FailReason::TechnicalFailure],
    ),
    (
        "paused",
        &[FailReason::SlaBreached, FailReason::TechnicalFailure],
    ),
    (
        "report-pending",
        &[FailReason::SlaBreached, FailReason::TechnicalFailure],
    ),
];

/// Where `action` leads from `state` per the table: `Some("=")`, `Some("failed")`, a state
/// code, or `None` when the edge does not exist.
pub fn edge(state: State, action: Action) -> Option<String> {
    let row = TABLE
        .iter()
        .find(|(s, _)| *s == state.code())
        .unwrap_or_else(|| panic!("the table has a row for {state}"))
        .1
        .replace("GATES", GATES)
        .replace("LIVE", LIVE);
    row.split_whitespace().find_map(|cell| {
        let (a, to) = cell.split_once(':').expect("action:target");
        (a == action.name()).then(|| to.to_owned())
    })
}

/// The actions the table allows in `state`, sorted.
pub fn table_allowed(state: State) -> Vec<Action> {
    let mut out: Vec<Action> = Action::ALL
        .into_iter()
        .filter(|a| edge(state, *a).is_some())
        .collect();
    out.sort();
    out
}

pub fn fail_codes(state: State) -> &'static [FailReason] {
    FAIL_CODES
        .iter()
        .find(|(s, _)| *s == state.code())
        .map_or(&[], |(_, codes)| codes)
}
