//! Offer deadlines and what to do when one passes (STANDARDS MATCH-20, CN-80), pure: the
//! engine's timer sweep calls [`on_deadline`] with its clock's time and the remaining ranked
//! candidates, and turns the [`NextStep`] into a command ([`NextStep::command`]).
//!
//! Defaults (CN-80, 《医疗质量安全核心制度要点》 会诊制度): critical and urgent offers must be
//! accepted within 10 minutes, routine ones within 24 hours. After 2 failed offers the case
//! fans out to the pool (first accept wins, FHIR-11); after 3 it escalates to the duty
//! coordinator. Each value can be overridden per province, per cooperation agreement and per
//! facility pair; the most specific override wins, field by field (facility pair over
//! agreement over province over the default).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Consultation;
use super::command::Command;
use super::event::Offeree;
use super::request::{FieldProblem, Urgency};
use super::state::State;

/// The SLA values in force for one consultation. In configuration, a value left out keeps
/// its default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaRule {
    /// Minutes a critical offer stays open.
    pub critical_minutes: u32,
    /// Minutes an urgent offer stays open.
    pub urgent_minutes: u32,
    /// Minutes a routine offer stays open.
    pub routine_minutes: u32,
    /// Failed offers (expired or declined) after which the next step is a fan-out.
    pub fan_out_after: u32,
    /// Failed offers after which the case goes to a coordinator.
    pub escalate_after: u32,
    /// How many candidates a fan-out offers at most.
    pub fan_out_size: usize,
    /// The coordinator or duty roster escalations go to.
    pub escalate_to: String,
}

impl Default for SlaRule {
    fn default() -> Self {
        SlaRule {
            critical_minutes: 10,
            urgent_minutes: 10,
            routine_minutes: 24 * 60,
            fan_out_after: 2,
            escalate_after: 3,
            fan_out_size: 5,
            escalate_to: "duty-coordinator".into(),
        }
    }
}

impl SlaRule {
    /// How long an offer of this urgency stays open.
    pub fn accept_within(&self, urgency: Urgency) -> TimeDelta {
        let minutes = match urgency {
            Urgency::Critical => self.critical_minutes,
            Urgency::Urgent => self.urgent_minutes,
            Urgency::Routine => self.routine_minutes,
        };
        TimeDelta::minutes(i64::from(minutes))
    }
}

/// Where an override applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SlaScope {
    /// Consultations requested from a province (GB/T 2260 code).
    Province {
        /// The province code.
        code: String,
    },
    /// Consultations under a cooperation agreement.
    Agreement {
        /// The agreement id.
        id: String,
    },
    /// Offers from one facility to another.
    FacilityPair {
        /// The inviting facility.
        requesting: String,
        /// The invited facility.
        expert: String,
    },
}

impl SlaScope {
    fn rank(&self) -> u8 {
        match self {
            SlaScope::Province { .. } => 1,
            SlaScope::Agreement { .. } => 2,
            SlaScope::FacilityPair { .. } => 3,
        }
    }

    fn matches(&self, key: &SlaKey<'_>) -> bool {
        match self {
            SlaScope::Province { code } => key.province == Some(code.as_str()),
            SlaScope::Agreement { id } => key.agreement == Some(id.as_str()),
            SlaScope::FacilityPair { requesting, expert } => {
                key.requesting_facility == requesting && key.expert_facility == Some(expert)
            }
        }
    }
}

/// Values an override changes; the others come from the less specific levels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaOverride {
    /// Where it applies.
    pub scope: SlaScope,
    /// Critical window, minutes.
    #[serde(default)]
    pub critical_minutes: Option<u32>,
    /// Urgent window, minutes.
    #[serde(default)]
    pub urgent_minutes: Option<u32>,
    /// Routine window, minutes.
    #[serde(default)]
    pub routine_minutes: Option<u32>,
    /// Failed offers before a fan-out.
    #[serde(default)]
    pub fan_out_after: Option<u32>,
    /// Failed offers before escalation.
    #[serde(default)]
    pub escalate_after: Option<u32>,
    /// Fan-out size.
    #[serde(default)]
    pub fan_out_size: Option<usize>,
    /// Escalation target.
    #[serde(default)]
    pub escalate_to: Option<String>,
}

impl SlaOverride {
    /// An override of nothing yet, for `scope` (fill in the fields).
    pub fn new(scope: SlaScope) -> SlaOverride {
        SlaOverride {
            scope,
            critical_minutes: None,
            urgent_minutes: None,
            routine_minutes: None,
            fan_out_after: None,
            escalate_after: None,
            fan_out_size: None,
            escalate_to: None,
        }
    }

    fn apply_to(&self, rule: &mut SlaRule) {
        let set = |slot: &mut u32, v: Option<u32>| *slot = v.unwrap_or(*slot);
        set(&mut rule.critical_minutes, self.critical_minutes);
        set(&mut rule.urgent_minutes, self.urgent_minutes);
        set(&mut rule.routine_minutes, self.routine_minutes);
        set(&mut rule.fan_out_after, self.fan_out_after);
        set(&mut rule.escalate_after, self.escalate_after);
        rule.fan_out_size = self.fan_out_size.unwrap_or(rule.fan_out_size);
        if let Some(to) = &self.escalate_to {
            rule.escalate_to = to.clone();
        }
    }
}

/// The SLA configuration: defaults and scoped overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaPolicy {
    /// The defaults (CN-80).
    #[serde(default)]
    pub default: SlaRule,
    /// Overrides; at most one per scope.
    #[serde(default)]
    pub overrides: Vec<SlaOverride>,
}

/// What an SLA lookup is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlaKey<'a> {
    /// The requesting facility's province.
    pub province: Option<&'a str>,
    /// The cooperation agreement.
    pub agreement: Option<&'a str>,
    /// The inviting facility.
    pub requesting_facility: &'a str,
    /// The invited facility, when one expert's facility is known.
    pub expert_facility: Option<&'a str>,
}

impl SlaPolicy {
    /// The rule for `key`: the default, then matching overrides from the least to the most
    /// specific, each replacing the fields it sets.
    pub fn resolve(&self, key: &SlaKey<'_>) -> SlaRule {
        let mut rule = self.default.clone();
        let mut matching: Vec<&SlaOverride> = self
            .overrides
            .iter()
            .filter(|o| o.scope.matches(key))
            .collect();
        matching.sort_by_key(|o| o.scope.rank());
        for o in matching {
            o.apply_to(&mut rule);
        }
        rule
    }

    /// The deadline of an offer made `now` for a consultation of `urgency` under `key`.
    pub fn deadline(
        &self,
        key: &SlaKey<'_>,
        urgency: Urgency,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        now + self.resolve(key).accept_within(urgency)
    }

    /// Checks the configuration: windows and counts above zero, escalation not before the
    /// fan-out's turn, a fan-out of at least two, scopes named and not repeated. Reports all
    /// problems, with paths (`overrides[2].urgent_minutes`).
    pub fn validate(&self) -> Result<(), Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut push = |path: String, problem: &str| {
            problems.push(FieldProblem {
                path,
                problem: problem.into(),
            })
        };
        let d = &self.default;
        for (name, v) in [
            ("critical_minutes", d.critical_minutes),
            ("urgent_minutes", d.urgent_minutes),
            ("routine_minutes", d.routine_minutes),
            ("fan_out_after", d.fan_out_after),
            ("escalate_after", d.escalate_after),
        ] {
            if v == 0 {
                push(format!("default.{name}"), "must be at least 1");
            }
        }
        if d.fan_out_size < 2 {
            push("default.fan_out_size".into(), "must be at least 2");
        }
        if d.escalate_to.trim().is_empty() {
            push("default.escalate_to".into(), "is blank");
        }
        for (i, o) in self.overrides.iter().enumerate() {
            let at = |field: &str| format!("overrides[{i}].{field}");
            for (name, v) in [
                ("critical_minutes", o.critical_minutes),
                ("urgent_minutes", o.urgent_minutes),
                ("routine_minutes", o.routine_minutes),
                ("fan_out_after", o.fan_out_after),
                ("escalate_after", o.escalate_after),
            ] {
                if v == Some(0) {
                    push(at(name), "must be at least 1");
                }
            }
            if o.fan_out_size.is_some_and(|n| n < 2) {
                push(at("fan_out_size"), "must be at least 2");
            }
            if o.escalate_to.as_ref().is_some_and(|t| t.trim().is_empty()) {
                push(at("escalate_to"), "is blank");
            }
            let blank = match &o.scope {
                SlaScope::Province { code } => code.trim().is_empty(),
                SlaScope::Agreement { id } => id.trim().is_empty(),
                SlaScope::FacilityPair { requesting, expert } => {
                    requesting.trim().is_empty() || expert.trim().is_empty()
                }
            };
            if blank {
                push(at("scope"), "names a blank province, agreement or facility");
            }
            if self.overrides[..i].iter().any(|p| p.scope == o.scope) {
                push(at("scope"), "repeats an earlier override's scope");
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl Consultation {
    /// The SLA key of this consultation for an offer to a facility (none: a pool).
    pub fn sla_key<'a>(&'a self, expert_facility: Option<&'a str>) -> SlaKey<'a> {
        let r = self.request();
        SlaKey {
            province: r.province.as_deref(),
            agreement: r.agreement.as_deref(),
            requesting_facility: &r.requesting_facility,
            expert_facility,
        }
    }
}

/// What the timer sweep should do with a consultation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Nothing yet: the current offer is open until then.
    Wait {
        /// The deadline.
        until: DateTime<Utc>,
    },
    /// Offer to the next candidate.
    ReOffer {
        /// The candidate.
        to: Offeree,
        /// The new offer's deadline.
        deadline: DateTime<Utc>,
    },
    /// Offer to a pool at once (first accept wins).
    FanOut {
        /// The pool.
        pool: Vec<Offeree>,
        /// The deadline.
        deadline: DateTime<Utc>,
    },
    /// Hand to a coordinator (MATCH-20: department head or duty officer).
    Escalate {
        /// The coordinator or roster.
        to: String,
        /// How many offers failed.
        failed_offers: u32,
    },
    /// Nothing to do: not waiting for an expert, or already escalated.
    Idle,
}

impl NextStep {
    /// The command that carries the step out (to run as the `system` actor); `None` for
    /// waiting and idling.
    pub fn command(&self) -> Option<Command> {
        match self {
            NextStep::Wait { .. } | NextStep::Idle => None,
            NextStep::ReOffer { to, deadline } => Some(Command::Offer {
                to: to.clone(),
                deadline: *deadline,
            }),
            NextStep::FanOut { pool, deadline } => Some(Command::FanOut {
                pool: pool.clone(),
                deadline: *deadline,
            }),
            NextStep::Escalate { to, .. } => Some(Command::Escalate { to: to.clone() }),
        }
    }
}

/// Who the next step may go to: the eligible experts of a match made at the deadline
/// (MATCH-20: availability and load may have changed since the last one), best first, and
/// which of them are on the on-call roster. Experts offered this consultation before are
/// skipped by [`on_deadline`] whatever the match says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextCandidates<'a> {
    /// The eligible experts, best first: a re-offer goes to the first one not offered before.
    pub ranked: &'a [Offeree],
    /// The experts of `ranked` on the on-call roster: a fan-out goes to them first.
    pub on_call: &'a [String],
}

impl<'a> From<&'a [Offeree]> for NextCandidates<'a> {
    /// Ranked candidates, nobody known to be on call.
    fn from(ranked: &'a [Offeree]) -> Self {
        NextCandidates {
            ranked,
            on_call: &[],
        }
    }
}

impl<'a> From<&'a Vec<Offeree>> for NextCandidates<'a> {
    fn from(ranked: &'a Vec<Offeree>) -> Self {
        ranked.as_slice().into()
    }
}

impl<'a, const N: usize> From<&'a [Offeree; N]> for NextCandidates<'a> {
    fn from(ranked: &'a [Offeree; N]) -> Self {
        ranked.as_slice().into()
    }
}

/// Whether [`on_deadline`] at `now` depends on the candidates: an offer whose deadline passed
/// or a declined attempt, not escalated, with fewer failed offers than `escalate_after`. The
/// engine matches again only then; every other case waits, idles or escalates without one.
pub fn needs_candidates(c: &Consultation, now: DateTime<Utc>, policy: &SlaPolicy) -> bool {
    let Some(attempt) = c.current_attempt() else {
        return false;
    };
    if attempt.escalated_to.is_some() {
        return false;
    }
    let due = match c.state() {
        State::Offered => now >= attempt.deadline,
        State::Declined => true,
        _ => false,
    };
    due && (c.attempts().len() as u32) < policy.resolve(&c.sla_key(None)).escalate_after
}

/// What to do at `now` for `c`, given the candidates still available (`candidates`: the
/// ranked experts, best first, and who of them is on call; experts offered before are skipped
/// here).
///
/// * Offered: before the deadline, wait; after it, the next step below.
/// * Reviewing (an expert opened the case): FHIR-10 allows no re-offer once the Task is
///   received, so a passed deadline escalates.
/// * Declined: the next step below at once.
/// * Otherwise, or once the current attempt was escalated: idle.
///
/// The next step after `n` failed offers: `n >= escalate_after` → escalate; `n >=
/// fan_out_after` and two or more candidates left → fan out to the on-call pool (MATCH-20):
/// the candidates on call, best first, topped up with the best of the others, at most
/// `fan_out_size`; a candidate left → re-offer to the best; none → escalate.
pub fn on_deadline<'a>(
    c: &Consultation,
    now: DateTime<Utc>,
    candidates: impl Into<NextCandidates<'a>>,
    policy: &SlaPolicy,
) -> NextStep {
    let candidates = candidates.into();
    let Some(attempt) = c.current_attempt() else {
        return NextStep::Idle;
    };
    if attempt.escalated_to.is_some() {
        return NextStep::Idle;
    }
    let rule = policy.resolve(&c.sla_key(None));
    let failed = c.attempts().len() as u32;
    let escalate = NextStep::Escalate {
        to: rule.escalate_to.clone(),
        failed_offers: failed,
    };
    match c.state() {
        State::Offered | State::Reviewing if now < attempt.deadline => NextStep::Wait {
            until: attempt.deadline,
        },
        State::Reviewing => escalate,
        State::Offered | State::Declined => {
            let offered_before = |o: &Offeree| {
                c.attempts()
                    .iter()
                    .any(|a| a.offerees.iter().any(|p| p.expert == o.expert))
            };
            let fresh: Vec<&Offeree> = candidates
                .ranked
                .iter()
                .filter(|o| !offered_before(o))
                .collect();
            let urgency = c.request().urgency;
            if failed >= rule.escalate_after {
                escalate
            } else if failed >= rule.fan_out_after && fresh.len() >= 2 {
                let on_call = |o: &Offeree| candidates.on_call.contains(&o.expert);
                let (first, rest): (Vec<&Offeree>, Vec<&Offeree>) =
                    fresh.iter().partition(|o| on_call(o));
                let pool: Vec<Offeree> = first
                    .into_iter()
                    .chain(rest)
                    .take(rule.fan_out_size)
                    .cloned()
                    .collect();
                NextStep::FanOut {
                    pool,
                    deadline: policy.deadline(&c.sla_key(None), urgency, now),
                }
            } else if let Some(next) = fresh.first() {
                NextStep::ReOffer {
                    to: (*next).clone(),
                    deadline: policy.deadline(&c.sla_key(Some(&next.facility)), urgency, now),
                }
            } else {
                escalate
            }
        }
        _ => NextStep::Idle,
    }
}
