//! The consultation's media room: who may join it, with which permissions, and in which order
//! (STANDARDS RTC-04, CN-05, CN-06).
//!
//! A room belongs to one consultation ([`room_id`]). A participant joins with a short-lived
//! signed token whose claims are [`RoomClaims`]; the engine signs and verifies them, this
//! module decides what they allow:
//!
//! - [`may_join`]: the token names this consultation's room, the consultation is accepted
//!   (`Scheduled`), in session or paused (RTC-04 (a); a finished consultation's tokens are
//!   void), the informed consent is on record (CN-05, RTC-04 (c)), the token's subject is still
//!   the consultation's expert, local physician or patient, and a physician's real-name
//!   verification passed (CN-11, RTC-04 (b));
//! - [`admission`]: the expert waits in the lobby until a local physician is present (CN-06,
//!   RTC-04 (d)), for the service types that have one.

use std::fmt;

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Consultation;
use super::gates::{RecordingConsent, Subject};
use super::request::ServiceType;
use super::state::State;

/// The room of a consultation: one per consultation, named after it.
pub fn room_id(consultation: &str) -> String {
    format!("room-{consultation}")
}

/// A participant's role in the room (RTC-04).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomRole {
    /// The invited (remote) physician.
    Expert,
    /// The physician accompanying the patient at the inviting facility (CN-06).
    LocalPhysician,
    /// The patient.
    Patient,
    /// A watcher admitted by the room (no publishing by default).
    Observer,
}

impl RoomRole {
    /// Every role, in declaration order.
    pub const ALL: [RoomRole; 4] = [
        RoomRole::Expert,
        RoomRole::LocalPhysician,
        RoomRole::Patient,
        RoomRole::Observer,
    ];

    /// `expert`, `local-physician`, `patient`, `observer`.
    pub fn code(self) -> &'static str {
        match self {
            RoomRole::Expert => "expert",
            RoomRole::LocalPhysician => "local-physician",
            RoomRole::Patient => "patient",
            RoomRole::Observer => "observer",
        }
    }

    /// The role of a code.
    pub fn parse(code: &str) -> Option<RoomRole> {
        RoomRole::ALL.into_iter().find(|r| r.code() == code)
    }

    /// What a participant of this role may do unless the issuer narrows it: everyone but an
    /// observer publishes audio and video; the physicians share screens, start recordings and
    /// admit; the patient never starts a recording (RTC-04 AT).
    pub fn default_permissions(self) -> Permissions {
        let physician = matches!(self, RoomRole::Expert | RoomRole::LocalPhysician);
        let publishes = self != RoomRole::Observer;
        Permissions {
            publish_audio: publishes,
            publish_video: publishes,
            publish_screen: physician,
            record: physician,
            admit: physician,
        }
    }
}

impl fmt::Display for RoomRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What a token allows in the room (RTC-04).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Send a microphone track.
    pub publish_audio: bool,
    /// Send a camera track.
    pub publish_video: bool,
    /// Send a screen-share track (an image or a report shown by the expert).
    pub publish_screen: bool,
    /// Start and stop a recording (with everyone's consent, RTC-30).
    pub record: bool,
    /// Admit an observer.
    pub admit: bool,
}

impl Permissions {
    /// The permissions of both `self` and `other` (an issuer narrows, never widens).
    pub fn intersect(self, other: Permissions) -> Permissions {
        Permissions {
            publish_audio: self.publish_audio && other.publish_audio,
            publish_video: self.publish_video && other.publish_video,
            publish_screen: self.publish_screen && other.publish_screen,
            record: self.record && other.record,
            admit: self.admit && other.admit,
        }
    }
}

/// The claims of a room token: bound to one consultation, one room, one participant, one role
/// and a validity window (RTC-04). Times are seconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// The participant: the expert's or local physician's practitioner id, the patient's
    /// person id, an observer's user id.
    pub sub: String,
    /// The consultation (the Task group id).
    pub consultation: String,
    /// The room ([`room_id`] of the consultation).
    pub room: String,
    /// The role in the room.
    pub role: RoomRole,
    /// What the participant may do.
    pub perms: Permissions,
    /// Not valid before.
    pub nbf: u64,
    /// Not valid after.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// The token's id (audited when issued and at each join).
    pub jti: String,
}

/// Why a participant may not join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "kebab-case")]
pub enum Refusal {
    /// The token names another room (a token for room A never opens room B).
    WrongRoom {
        /// The room of the token.
        token_room: String,
        /// The room asked for.
        room: String,
    },
    /// The consultation is not accepted, in session or paused (RTC-04 (a)); after it ends
    /// every token of its room is void.
    NotOpen {
        /// The consultation's state code.
        state: String,
    },
    /// No informed consent on record (CN-05).
    NoConsent,
    /// The token's subject is not (or no longer) the consultation's participant in that role.
    NotParticipant {
        /// The role claimed.
        role: RoomRole,
    },
    /// The physician's real-name verification has not passed (CN-11, RTC-04 (b)).
    NotVerified {
        /// The role.
        role: RoomRole,
    },
    /// The token is not valid yet or any more.
    OutsideWindow,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::WrongRoom { token_room, room } => {
                write!(f, "the token is for room {token_room}, not {room}")
            }
            Refusal::NotOpen { state } => write!(
                f,
                "the consultation is {state}: a room is open only while it is scheduled, in session or paused (RTC-04)"
            ),
            Refusal::NoConsent => {
                f.write_str("no informed consent recorded: nobody joins before it (CN-05)")
            }
            Refusal::NotParticipant { role } => {
                write!(f, "the token's subject is not this consultation's {role}")
            }
            Refusal::NotVerified { role } => write!(
                f,
                "the {role} has no passed real-name verification (CN-11, RTC-04)"
            ),
            Refusal::OutsideWindow => f.write_str("the token is not valid at this time"),
        }
    }
}

/// The participant of `role` in `c`: the accepted expert, the attached local physician or the
/// patient; `None` when the consultation has none (an observer is whoever the issuer names).
pub fn participant(c: &Consultation, role: RoomRole) -> Option<String> {
    match role {
        RoomRole::Expert => c.accepted_by().map(str::to_owned),
        RoomRole::LocalPhysician => c.gates().physician.as_ref().map(|p| p.practitioner.clone()),
        RoomRole::Patient => Some(c.patient().to_string()),
        RoomRole::Observer => None,
    }
}

/// Whether the room of `c` is open: accepted (`Scheduled`), in session or paused.
pub fn room_open(state: State) -> bool {
    matches!(state, State::Scheduled | State::InSession | State::Paused)
}

/// Whether the holder of `claims` may enter `room` of consultation `c` at `now` (seconds since
/// the epoch). The signature was checked by the engine; this checks what the claims mean.
pub fn may_join(
    c: &Consultation,
    room: &str,
    claims: &RoomClaims,
    now: u64,
) -> Result<(), Refusal> {
    if claims.room != room || claims.consultation != c.id() || room_id(c.id()) != room {
        return Err(Refusal::WrongRoom {
            token_room: claims.room.clone(),
            room: room.to_owned(),
        });
    }
    if now < claims.nbf || now >= claims.exp {
        return Err(Refusal::OutsideWindow);
    }
    if !room_open(c.state()) {
        return Err(Refusal::NotOpen {
            state: c.state().code().to_owned(),
        });
    }
    if c.gates().consent.is_none() {
        return Err(Refusal::NoConsent);
    }
    if claims.role != RoomRole::Observer {
        match participant(c, claims.role) {
            Some(p) if p == claims.sub => {}
            _ => return Err(Refusal::NotParticipant { role: claims.role }),
        }
    }
    if matches!(claims.role, RoomRole::Expert | RoomRole::LocalPhysician) {
        let subject = Subject::Physician {
            practitioner: claims.sub.clone(),
        };
        if !c.gates().verified(&subject) {
            return Err(Refusal::NotVerified { role: claims.role });
        }
    }
    Ok(())
}

/// Whether the expert must wait for a local physician (CN-06): in an institution-to-institution
/// consultation always, otherwise when a local physician is attached.
pub fn needs_local_physician(c: &Consultation) -> bool {
    c.request().service_type == ServiceType::InstitutionToInstitution
        || c.gates().physician.is_some()
}

/// What happens to a participant who may join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "admission", rename_all = "kebab-case")]
pub enum Admission {
    /// In the room: publishes and receives.
    Admit,
    /// In the lobby until `waiting_for` is present.
    Hold {
        /// Who must be present first.
        waiting_for: RoomRole,
    },
}

/// The admission of `joining` when `present` are in the room (CN-06, RTC-04 (d)): the expert is
/// held until a local physician is present when `local_physician_first`; everyone else enters.
pub fn admission(
    local_physician_first: bool,
    joining: RoomRole,
    present: &[RoomRole],
) -> Admission {
    if joining == RoomRole::Expert
        && local_physician_first
        && !present.contains(&RoomRole::LocalPhysician)
    {
        Admission::Hold {
            waiting_for: RoomRole::LocalPhysician,
        }
    } else {
        Admission::Admit
    }
}

/// The retention class of a call recording (CN-30: process records — text/image chat, audio
/// and video — are kept at least three years; the China rules enforce the purge).
pub const RECORDING_RETENTION_CLASS: &str = "process-record-audio-video";

/// The minimum retention of [`RECORDING_RETENTION_CLASS`], in months (CN-30: 3 years).
pub const RECORDING_RETENTION_MONTHS: u32 = 36;

/// Until when a recording started at `at` must be kept (CN-30).
pub fn recording_retained_until(at: DateTime<Utc>) -> DateTime<Utc> {
    at.checked_add_months(Months::new(RECORDING_RETENTION_MONTHS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Why a recording may not start, or must stop (CN-05, RTC-04, RTC-30).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "kebab-case")]
pub enum RecordingRefusal {
    /// The token does not allow recording (a patient's never does).
    NotPermitted {
        /// The role of the token.
        role: RoomRole,
    },
    /// The room is not open (the consultation is not scheduled, in session or paused).
    NotOpen {
        /// The consultation's state code.
        state: String,
    },
    /// No informed consent on record (CN-05).
    NoConsent,
    /// A participant in the room has not consented to recording (or withdrew).
    NoRecordingConsent {
        /// Their role.
        role: RoomRole,
        /// Who.
        participant: String,
    },
}

impl fmt::Display for RecordingRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordingRefusal::NotPermitted { role } => {
                write!(f, "a {role}'s room token does not allow recording (RTC-04)")
            }
            RecordingRefusal::NotOpen { state } => {
                write!(
                    f,
                    "the consultation is {state}: nothing is recorded outside an open room"
                )
            }
            RecordingRefusal::NoConsent => {
                f.write_str("no informed consent recorded: nothing is recorded before it (CN-05)")
            }
            RecordingRefusal::NoRecordingConsent { role, participant } => write!(
                f,
                "the {role} {participant} has no recording consent on file (RTC-30): nothing is recorded without everyone's"
            ),
        }
    }
}

/// The recording consent of `participant` in `role` that counts: the latest, unless withdrawn.
pub fn recording_consent<'a>(
    c: &'a Consultation,
    role: RoomRole,
    participant: &str,
) -> Option<&'a RecordingConsent> {
    c.gates()
        .recording_consents
        .iter()
        .rev()
        .find(|r| r.role == role && r.participant == participant)
        .filter(|r| !r.withdrawn)
}

/// Whether `permissions` may have the call of `c` recorded while `present` (role,
/// participant) are in the room: the token allows it, the room is open, the informed consent is
/// on record (CN-05) and every one present has a recording consent on file (RTC-30). The same
/// check runs again whenever someone joins a room that records: the recording stops when it
/// fails.
pub fn may_record(
    c: &Consultation,
    by: RoomRole,
    permissions: Permissions,
    present: &[(RoomRole, String)],
) -> Result<(), RecordingRefusal> {
    if !permissions.record {
        return Err(RecordingRefusal::NotPermitted { role: by });
    }
    recording_allowed(c, present)
}

/// [`may_record`] without the starter's permission: whether a running recording may go on.
pub fn recording_allowed(
    c: &Consultation,
    present: &[(RoomRole, String)],
) -> Result<(), RecordingRefusal> {
    if !room_open(c.state()) {
        return Err(RecordingRefusal::NotOpen {
            state: c.state().code().to_owned(),
        });
    }
    if c.gates().consent.is_none() {
        return Err(RecordingRefusal::NoConsent);
    }
    for (role, participant) in present {
        if recording_consent(c, *role, participant).is_none() {
            return Err(RecordingRefusal::NoRecordingConsent {
                role: *role,
                participant: participant.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expert_waits_for_the_local_physician() {
        use RoomRole::*;
        assert_eq!(
            admission(true, Expert, &[]),
            Admission::Hold {
                waiting_for: LocalPhysician
            }
        );
        assert_eq!(
            admission(true, Expert, &[Patient]),
            Admission::Hold {
                waiting_for: LocalPhysician
            }
        );
        assert_eq!(admission(true, Expert, &[LocalPhysician]), Admission::Admit);
        assert_eq!(admission(false, Expert, &[]), Admission::Admit);
        for r in [LocalPhysician, Patient, Observer] {
            assert_eq!(admission(true, r, &[]), Admission::Admit);
        }
    }

    #[test]
    fn roles_parse_back_and_patients_never_record() {
        for r in RoomRole::ALL {
            assert_eq!(RoomRole::parse(r.code()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.code())
            );
        }
        assert!(!RoomRole::Patient.default_permissions().record);
        assert!(RoomRole::Patient.default_permissions().publish_video);
        assert!(!RoomRole::Observer.default_permissions().publish_audio);
        assert!(RoomRole::Expert.default_permissions().record);
        let narrowed = RoomRole::Expert
            .default_permissions()
            .intersect(RoomRole::Patient.default_permissions());
        assert!(!narrowed.record && narrowed.publish_audio);
    }
}
