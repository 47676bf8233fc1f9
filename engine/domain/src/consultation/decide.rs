//! [`decide`]: a command against a consultation gives the events to persist, or the reason it
//! is refused. Pure: the time, the actor and the verifier come in through the [`Context`].
//!
//! The checks run in a fixed order, so a refusal names the first thing to fix: the context
//! (actor, plugin identity), the role ([`Action::roles`]), a lost acceptance race (412
//! `Taken`), the state's edges (409 with the allowed actions), the reason (422), then the
//! action's own guards (who exactly, versions, deadlines, gates, data).

use crate::signature::SignatureVerifier;

use super::aggregate::{Attempt, Consultation};
use super::command::{Command, Context};
use super::error::ConsultError;
use super::event::{Appointment, Event, EventKind, Offeree, Role};
use super::gates::{
    Consent, ConsentSigner, LocalPhysician, PriorDiagnosis, RecordingConsent, Subject, Verification,
};
use super::opinion::{LocalDecision, SignedOpinion, verify_opinion};
use super::request::FieldProblem;
use super::state::{Action, State};

/// Decides `command` against `c`: the events (versions `c.version() + 1`, …) or the refusal.
pub fn decide(
    c: &Consultation,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, ConsultError> {
    let action = command.action();
    check_context(Some(action), ctx)?;
    if !action.roles().contains(&ctx.actor.role) {
        return Err(ConsultError::RoleNotAllowed {
            action: action.name(),
            role: ctx.actor.role,
        });
    }
    if action == Action::Accept
        && let Some(by) = taken_by_other(c, &ctx.actor.id)
    {
        return Err(ConsultError::Taken { by: by.to_owned() });
    }
    let state = c.state();
    if !state.allows(action) {
        return Err(ConsultError::InvalidTransition {
            from: state,
            action,
            allowed: state.allowed_actions(),
        });
    }
    if action.needs_reason() && command.reason().is_none_or(|r| r.trim().is_empty()) {
        return Err(ConsultError::MissingReason { action });
    }
    let kinds = kinds(c, command, ctx)?;
    let reason = command.reason().or(ctx.reason);
    Ok(stamp(c.version(), ctx, reason, kinds))
}

/// The events for an allowed action whose guards pass.
fn kinds(
    c: &Consultation,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<EventKind>, ConsultError> {
    let action = command.action();
    let actor = ctx.actor;
    Ok(match command {
        Command::Submit => vec![EventKind::Submitted],
        Command::Approve => vec![EventKind::Approved],
        Command::Offer { to, deadline } => {
            check_offerees(action, std::slice::from_ref(to), "to")?;
            offer(c, ctx, vec![to.clone()], false, *deadline)?
        }
        Command::FanOut { pool, deadline } => {
            if pool.len() < 2 {
                return Err(ConsultError::invalid(
                    Some(action),
                    "pool",
                    format!("a fan-out needs at least two experts, got {}", pool.len()),
                ));
            }
            check_offerees(action, pool, "pool")?;
            offer(c, ctx, pool.clone(), true, *deadline)?
        }
        Command::Open => vec![EventKind::Opened {
            attempt: open_attempt_for(c, action, &actor.id)?.number,
        }],
        Command::Accept { expected_version } => {
            let attempt = open_attempt_for(c, action, &actor.id)?.number;
            if *expected_version != c.version() {
                return Err(ConsultError::VersionConflict {
                    expected: *expected_version,
                    actual: c.version(),
                });
            }
            vec![EventKind::Accepted { attempt }]
        }
        Command::Reject { .. } => {
            let (attempt, expert) = if actor.role == Role::Expert {
                let a = open_attempt_for(c, action, &actor.id)?;
                (a.number, Some(actor.id.clone()))
            } else {
                (current(c, action)?.number, None)
            };
            vec![EventKind::Rejected { attempt, expert }]
        }
        Command::Escalate { to } => {
            blank(action, "to", to)?;
            let attempt = match c.state() {
                State::PendingMatch => None,
                _ => c.current_attempt().map(|a| a.number),
            };
            vec![EventKind::Escalated {
                attempt,
                to: to.clone(),
            }]
        }
        Command::Schedule { appointment } => {
            only_accepted_expert(c, action, ctx)?;
            check_appointment(appointment)?;
            vec![EventKind::AppointmentBooked {
                appointment: appointment.clone(),
            }]
        }
        Command::RecordConsent { consent } => {
            check_consent(consent, ctx)?;
            vec![EventKind::ConsentRecorded {
                consent: consent.clone(),
            }]
        }
        Command::RecordRecordingConsent { consent } => {
            if actor.role == Role::Expert && consent.participant != actor.id {
                return Err(not_assigned(
                    action,
                    actor,
                    "an expert records only their own recording consent",
                ));
            }
            check_recording_consent(c, consent, ctx)?;
            vec![EventKind::RecordingConsentRecorded {
                consent: consent.clone(),
            }]
        }
        Command::AttachPhysician { physician } => {
            check_physician(physician)?;
            vec![EventKind::PhysicianAttached {
                physician: physician.clone(),
            }]
        }
        Command::RecordVerification { verification } => {
            check_verification(verification, ctx)?;
            vec![EventKind::VerificationRecorded {
                verification: verification.clone(),
            }]
        }
        Command::RecordPriorDiagnosis { evidence } => {
            if actor.role == Role::Expert && !involved_expert(c, &actor.id) {
                return Err(not_assigned(
                    action,
                    actor,
                    "only the accepted or offered expert",
                ));
            }
            check_evidence(evidence)?;
            vec![EventKind::PriorDiagnosisRecorded {
                evidence: evidence.clone(),
            }]
        }
        Command::Start => {
            only_accepted_expert(c, action, ctx)?;
            let missing = match &ctx.start {
                Some(s) => c.missing_under(&s.rules, Some(&s.facts)),
                None => c.missing_for_start(),
            };
            if !missing.is_empty() {
                return Err(ConsultError::Missing { action, missing });
            }
            vec![EventKind::Started]
        }
        Command::Pause => {
            only_accepted_expert(c, action, ctx)?;
            vec![EventKind::Paused]
        }
        Command::Resume => {
            only_accepted_expert(c, action, ctx)?;
            vec![EventKind::Resumed]
        }
        Command::RequestReport => {
            only_accepted_expert(c, action, ctx)?;
            vec![EventKind::ReportRequested]
        }
        Command::SignOpinion { signed } => sign(c, ctx, signed)?,
        Command::RecordLocalDecision { decision } => local_decision(c, ctx, decision)?,
        Command::Complete => {
            only_accepted_expert(c, action, ctx)?;
            let missing = c.missing_for_completion();
            if !missing.is_empty() {
                return Err(ConsultError::Missing { action, missing });
            }
            vec![EventKind::Completed]
        }
        Command::Cancel { .. } => vec![EventKind::Cancelled],
        Command::Fail { code, .. } => {
            let allowed = c.state().fail_reasons();
            if !allowed.contains(code) {
                return Err(ConsultError::FailReasonNotAllowed {
                    from: c.state(),
                    reason: *code,
                    allowed: allowed.to_vec(),
                });
            }
            vec![EventKind::Failed { code: *code }]
        }
        Command::MarkEnteredInError => vec![EventKind::EnteredInError],
        Command::RepointPatient { from, to } => {
            if *from != c.patient() {
                return Err(ConsultError::PatientMismatch {
                    current: c.patient(),
                    from: *from,
                });
            }
            if from == to {
                return Err(ConsultError::invalid(
                    Some(action),
                    "to",
                    "is the same person as `from`",
                ));
            }
            vec![EventKind::PatientRepointed {
                from: *from,
                to: *to,
            }]
        }
    })
}

/// The events of `n` kinds, numbered from `version + 1`, stamped with the context.
pub(crate) fn stamp(
    version: u64,
    ctx: &Context<'_>,
    reason: Option<&str>,
    kinds: Vec<EventKind>,
) -> Vec<Event> {
    kinds
        .into_iter()
        .zip(version + 1..)
        .map(|(kind, version)| Event {
            version,
            at: ctx.now,
            actor: ctx.actor.clone(),
            reason: reason.map(str::to_owned),
            plugin: ctx.plugin.cloned(),
            kind,
        })
        .collect()
}

/// The context every command needs: an actor id, a named plugin when a plugin acts.
pub(crate) fn check_context(action: Option<Action>, ctx: &Context<'_>) -> Result<(), ConsultError> {
    let mut problems = Vec::new();
    let mut problem = |path: &str, what: &str| {
        problems.push(FieldProblem {
            path: path.into(),
            problem: what.into(),
        })
    };
    if ctx.actor.id.trim().is_empty() {
        problem("actor.id", "is blank");
    }
    match ctx.plugin {
        None if ctx.actor.role == Role::Plugin => problem(
            "plugin",
            "is required when a plugin acts (which plugin version decided)",
        ),
        Some(p) if p.name.trim().is_empty() => problem("plugin.name", "is blank"),
        Some(p) if p.version.trim().is_empty() => problem("plugin.version", "is blank"),
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConsultError::Invalid { action, problems })
    }
}

/// The expert who holds the case, when it is held by someone other than `actor` (FHIR-11:
/// the loser of an acceptance race is told the case is taken).
fn taken_by_other<'c>(c: &'c Consultation, actor: &str) -> Option<&'c str> {
    let held = matches!(
        c.state(),
        State::Scheduled | State::InSession | State::Paused | State::ReportPending
    );
    c.accepted_by().filter(|by| held && *by != actor)
}

fn current(c: &Consultation, action: Action) -> Result<&Attempt, ConsultError> {
    // Every state that allows offer-bound actions has an attempt; this guards the invariant.
    c.current_attempt()
        .ok_or_else(|| ConsultError::invalid(Some(action), "attempt", "no attempt is open"))
}

/// The current attempt, when it is open to `expert`.
fn open_attempt_for<'c>(
    c: &'c Consultation,
    action: Action,
    expert: &str,
) -> Result<&'c Attempt, ConsultError> {
    let attempt = current(c, action)?;
    if attempt.is_open_to(expert) {
        Ok(attempt)
    } else {
        Err(ConsultError::NotAssigned {
            action,
            actor: expert.to_owned(),
            why: format!(
                "attempt {} is offered to {}",
                attempt.number,
                attempt
                    .remaining()
                    .iter()
                    .map(|o| o.expert.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

fn involved_expert(c: &Consultation, expert: &str) -> bool {
    c.accepted_by() == Some(expert) || c.current_attempt().is_some_and(|a| a.is_open_to(expert))
}

fn not_assigned(action: Action, actor: &super::event::Actor, why: &str) -> ConsultError {
    ConsultError::NotAssigned {
        action,
        actor: actor.id.clone(),
        why: why.into(),
    }
}

/// An expert acting after acceptance must be the one who accepted.
fn only_accepted_expert(
    c: &Consultation,
    action: Action,
    ctx: &Context<'_>,
) -> Result<(), ConsultError> {
    if ctx.actor.role == Role::Expert && c.accepted_by() != Some(ctx.actor.id.as_str()) {
        return Err(not_assigned(action, ctx.actor, "only the accepted expert"));
    }
    Ok(())
}

/// A new attempt; from `offered`, only once the current deadline passed (the old attempt
/// expires in the same decision).
fn offer(
    c: &Consultation,
    ctx: &Context<'_>,
    offerees: Vec<Offeree>,
    fan_out: bool,
    deadline: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<EventKind>, ConsultError> {
    let action = if fan_out {
        Action::FanOut
    } else {
        Action::Offer
    };
    if deadline <= ctx.now {
        return Err(ConsultError::invalid(
            Some(action),
            "deadline",
            format!("{deadline} is not after now ({})", ctx.now),
        ));
    }
    let mut kinds = Vec::new();
    if c.state() == State::Offered {
        let open = current(c, action)?;
        if ctx.now < open.deadline {
            return Err(ConsultError::OfferStillOpen {
                deadline: open.deadline,
            });
        }
        kinds.push(EventKind::OfferExpired {
            attempt: open.number,
        });
    }
    let number = c.attempts().len() as u32 + 1;
    kinds.push(EventKind::Offered {
        attempt: number,
        offerees,
        fan_out,
        deadline,
    });
    Ok(kinds)
}

fn check_offerees(action: Action, offerees: &[Offeree], path: &str) -> Result<(), ConsultError> {
    let mut problems = Vec::new();
    for (i, o) in offerees.iter().enumerate() {
        let at = if path == "to" {
            path.to_owned()
        } else {
            format!("{path}[{i}]")
        };
        for (field, value) in [("expert", &o.expert), ("facility", &o.facility)] {
            if value.trim().is_empty() {
                problems.push(FieldProblem {
                    path: format!("{at}.{field}"),
                    problem: "is blank".into(),
                });
            }
        }
        if offerees[..i].iter().any(|p| p.expert == o.expert) {
            problems.push(FieldProblem {
                path: format!("{at}.expert"),
                problem: format!("`{}` appears twice", o.expert),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConsultError::Invalid {
            action: Some(action),
            problems,
        })
    }
}

fn blank(action: Action, path: &str, value: &str) -> Result<(), ConsultError> {
    if value.trim().is_empty() {
        Err(ConsultError::invalid(Some(action), path, "is blank"))
    } else {
        Ok(())
    }
}

fn check_appointment(a: &Appointment) -> Result<(), ConsultError> {
    if a.end <= a.start {
        return Err(ConsultError::invalid(
            Some(Action::Schedule),
            "appointment.end",
            format!("{} is not after appointment.start {}", a.end, a.start),
        ));
    }
    if let Some(r) = &a.reference {
        blank(Action::Schedule, "appointment.reference", r)?;
    }
    Ok(())
}

fn check_consent(consent: &Consent, ctx: &Context<'_>) -> Result<(), ConsultError> {
    let action = Some(Action::RecordConsent);
    blank(Action::RecordConsent, "consent.document", &consent.document)?;
    if consent.signed_at > ctx.now {
        return Err(ConsultError::invalid(
            action,
            "consent.signed_at",
            format!("{} is in the future", consent.signed_at),
        ));
    }
    if consent.signer != ConsentSigner::Patient && !consent.not_suitable_to_inform_patient {
        return Err(ConsultError::invalid(
            action,
            "consent.not_suitable_to_inform_patient",
            "must be set when a guardian or relative signs instead of the patient (CN-05)",
        ));
    }
    Ok(())
}

fn check_recording_consent(
    c: &Consultation,
    consent: &RecordingConsent,
    ctx: &Context<'_>,
) -> Result<(), ConsultError> {
    let action = Action::RecordRecordingConsent;
    blank(action, "consent.document", &consent.document)?;
    blank(action, "consent.participant", &consent.participant)?;
    if consent.signed_at > ctx.now {
        return Err(ConsultError::invalid(
            Some(action),
            "consent.signed_at",
            format!("{} is in the future", consent.signed_at),
        ));
    }
    if consent.role != super::room::RoomRole::Observer
        && super::room::participant(c, consent.role).as_deref() != Some(&consent.participant)
    {
        return Err(ConsultError::invalid(
            Some(action),
            "consent.participant",
            format!(
                "{} is not this consultation's {}",
                consent.participant, consent.role
            ),
        ));
    }
    Ok(())
}

fn check_physician(p: &LocalPhysician) -> Result<(), ConsultError> {
    blank(
        Action::AttachPhysician,
        "physician.practitioner",
        &p.practitioner,
    )?;
    blank(Action::AttachPhysician, "physician.licence", &p.licence)
}

fn check_verification(v: &Verification, ctx: &Context<'_>) -> Result<(), ConsultError> {
    let action = Action::RecordVerification;
    if let Subject::Physician { practitioner } = &v.subject {
        blank(action, "verification.subject.practitioner", practitioner)?;
    }
    if let Some(r) = &v.provider_reference {
        blank(action, "verification.provider_reference", r)?;
    }
    if v.verified_at > ctx.now {
        return Err(ConsultError::invalid(
            Some(action),
            "verification.verified_at",
            format!("{} is in the future", v.verified_at),
        ));
    }
    Ok(())
}

fn check_evidence(e: &PriorDiagnosis) -> Result<(), ConsultError> {
    blank(
        Action::RecordPriorDiagnosis,
        "evidence.document",
        &e.document,
    )
}

/// The expert's signed opinion: the accepted expert, for this consultation, complete, and the
/// signature verified over the canonical bytes (CN-07, CN-21).
fn sign(
    c: &Consultation,
    ctx: &Context<'_>,
    signed: &SignedOpinion,
) -> Result<Vec<EventKind>, ConsultError> {
    let action = Action::SignOpinion;
    only_accepted_expert(c, action, ctx)?;
    let opinion = &signed.opinion;
    let mut problems: Vec<FieldProblem> = opinion
        .problems()
        .into_iter()
        .map(|p| FieldProblem {
            path: format!("signed.opinion.{}", p.path),
            problem: p.problem,
        })
        .collect();
    if !opinion.consultation.trim().is_empty() && opinion.consultation != c.id() {
        problems.push(FieldProblem {
            path: "signed.opinion.consultation".into(),
            problem: format!("names `{}`, not this consultation", opinion.consultation),
        });
    }
    if !opinion.expert.trim().is_empty() && opinion.expert != ctx.actor.id {
        problems.push(FieldProblem {
            path: "signed.opinion.expert".into(),
            problem: format!("names `{}`, not the signing expert", opinion.expert),
        });
    }
    if !problems.is_empty() {
        return Err(ConsultError::Invalid {
            action: Some(action),
            problems,
        });
    }
    let verifier: &dyn SignatureVerifier = ctx.verifier.ok_or(ConsultError::VerifierMissing)?;
    let verified_signer = verify_opinion(signed, verifier).map_err(ConsultError::Signature)?;
    Ok(vec![EventKind::OpinionSigned {
        signed: signed.clone(),
        verified_signer,
    }])
}

/// The local doctor's decision: by the requesting doctor or the attached local physician,
/// after the opinion (CN-07).
fn local_decision(
    c: &Consultation,
    ctx: &Context<'_>,
    decision: &LocalDecision,
) -> Result<Vec<EventKind>, ConsultError> {
    let action = Action::RecordLocalDecision;
    let actor = &ctx.actor.id;
    let attached = c
        .gates()
        .physician
        .as_ref()
        .map(|p| p.practitioner.as_str());
    if *actor != c.request().requesting_doctor && attached != Some(actor.as_str()) {
        return Err(not_assigned(
            action,
            ctx.actor,
            "only the requesting doctor or the attached local physician",
        ));
    }
    if c.opinion().is_none() {
        return Err(ConsultError::Missing {
            action,
            missing: vec![super::gates::Requirement::SignedOpinion],
        });
    }
    let problems: Vec<FieldProblem> = decision
        .problems()
        .into_iter()
        .map(|p| FieldProblem {
            path: format!("decision.{}", p.path),
            problem: p.problem,
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConsultError::Invalid {
            action: Some(action),
            problems,
        });
    }
    Ok(vec![EventKind::LocalDecisionRecorded {
        decision: decision.clone(),
    }])
}
