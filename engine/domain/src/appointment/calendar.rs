//! The calendar: bookings for scheduled consultations, with conflict detection, cancellation,
//! joins, no-shows, and each expert's daily waiting queue.
//!
//! The store loads an expert's schedule and the bookings that matter (the days concerned) into
//! a [`Calendar`], calls one operation, and persists the booking it returns. Every operation
//! takes `now`; nothing reads a clock.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::slots::{AppointmentConfig, AppointmentConfigError, Slot, availability, slots};
use crate::expert::model::Schedule;

/// How soon the consultation is needed: the domain's one [`Urgency`](crate::Urgency). It
/// orders bookings that start at the same time in the waiting queue (critical first).
pub use crate::urgency::Urgency;

/// Who joins a session. The patient side is present when the patient or the accompanying
/// local doctor joined (for an institution-to-institution session the patient sits with the
/// local doctor, CN-06).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Participant {
    /// The invited expert.
    Expert,
    /// The inviting facility's doctor.
    LocalDoctor,
    /// The patient (or a relative on their behalf).
    Patient,
}

/// The side a no-show is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The expert did not join.
    Expert,
    /// Neither the patient nor the local doctor joined.
    Patient,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Expert => "expert",
            Side::Patient => "patient",
        })
    }
}

/// Where a booking is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BookingStatus {
    /// Booked, waiting for the session (holds the slot).
    Booked,
    /// Both sides joined (holds the slot until its end).
    Attended,
    /// Cancelled: the slot is free again.
    Cancelled,
    /// A side did not join within the grace period.
    NoShow,
}

impl BookingStatus {
    /// True while the booking occupies its expert's and patient's time.
    pub fn holds_time(self) -> bool {
        matches!(self, BookingStatus::Booked | BookingStatus::Attended)
    }

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Booked => "booked",
            BookingStatus::Attended => "attended",
            BookingStatus::Cancelled => "cancelled",
            BookingStatus::NoShow => "no-show",
        }
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is asked: a time with an expert for a consultation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    /// The new booking's id (the Appointment id).
    pub booking_id: String,
    /// The scheduled consultation.
    pub consultation_id: String,
    /// The expert.
    pub expert_id: String,
    /// The patient (master person id).
    pub patient_id: String,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End (UTC, exclusive).
    pub end: DateTime<Utc>,
    /// The consultation's urgency.
    #[serde(default)]
    pub urgency: Urgency,
}

/// A join recorded for a booking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// Who.
    pub participant: Participant,
    /// When.
    pub at: DateTime<Utc>,
}

/// A booking (an Appointment with its Slot busy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Booking {
    /// The booking id.
    pub id: String,
    /// The consultation.
    pub consultation_id: String,
    /// The expert.
    pub expert_id: String,
    /// The patient.
    pub patient_id: String,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End (UTC, exclusive).
    pub end: DateTime<Utc>,
    /// The consultation's urgency.
    pub urgency: Urgency,
    /// Where it is.
    pub status: BookingStatus,
    /// When it was booked.
    pub booked_at: DateTime<Utc>,
    /// Joins, in order.
    #[serde(default)]
    pub joins: Vec<Join>,
    /// Who cancelled, why, when.
    #[serde(default)]
    pub cancellation: Option<Cancellation>,
    /// For a no-show: the sides that did not join.
    #[serde(default)]
    pub absent: Vec<Side>,
}

/// A cancellation's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    /// Who (a person id).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Booking {
    fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.start < end && start < self.end
    }

    fn side_joined(&self, side: Side) -> bool {
        self.joins.iter().any(|j| match side {
            Side::Expert => j.participant == Participant::Expert,
            Side::Patient => j.participant != Participant::Expert,
        })
    }
}

/// A booking that became a no-show in a sweep: what the consultation workflow needs to fail
/// the consultation with `no-show` (FHIR-10) and the Appointment to `noshow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoShow {
    /// The booking.
    pub booking_id: String,
    /// Its consultation.
    pub consultation_id: String,
    /// The sides that did not join.
    pub absent: Vec<Side>,
}

/// One entry of an expert's waiting queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// 1 for the first.
    pub position: usize,
    /// The booking.
    pub booking_id: String,
    /// Its consultation.
    pub consultation_id: String,
    /// Start.
    pub start: DateTime<Utc>,
    /// End.
    pub end: DateTime<Utc>,
    /// Urgency.
    pub urgency: Urgency,
}

/// No-shows counted per patient and per expert (a booking where both sides were absent counts
/// once for each).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoShowCounts {
    /// Patient id → no-shows where the patient side was absent.
    pub by_patient: BTreeMap<String, u32>,
    /// Expert id → no-shows where the expert was absent.
    pub by_expert: BTreeMap<String, u32>,
}

/// Why a calendar operation was refused; each names the booking concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppointmentError {
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] AppointmentConfigError),
    /// The expert has no schedule in this calendar.
    #[error("booking `{booking}`: expert `{expert}` has no schedule")]
    UnknownExpert {
        /// The booking.
        booking: String,
        /// The expert.
        expert: String,
    },
    /// No such booking.
    #[error("no booking `{booking}`")]
    UnknownBooking {
        /// The booking id.
        booking: String,
    },
    /// The booking id is taken.
    #[error("booking `{booking}` already exists")]
    DuplicateBooking {
        /// The booking id.
        booking: String,
    },
    /// A field is blank or out of range.
    #[error("booking `{booking}`: {field}: {problem}")]
    Invalid {
        /// The booking.
        booking: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The start is in the past.
    #[error("booking `{booking}`: start {start} is before now ({now})")]
    InPast {
        /// The booking.
        booking: String,
        /// The start asked for.
        start: DateTime<Utc>,
        /// Now.
        now: DateTime<Utc>,
    },
    /// The time is not inside the expert's schedule.
    #[error("booking `{booking}`: {start}–{end} is outside expert `{expert}`'s schedule")]
    OutsideSchedule {
        /// The booking.
        booking: String,
        /// The expert.
        expert: String,
        /// Start asked for.
        start: DateTime<Utc>,
        /// End asked for.
        end: DateTime<Utc>,
    },
    /// The expert is booked at an overlapping time.
    #[error(
        "booking `{booking}`: expert `{expert}` is already booked by `{conflicting}` from \
         {start} to {end}"
    )]
    ExpertConflict {
        /// The booking asked for.
        booking: String,
        /// The expert.
        expert: String,
        /// The booking in the way.
        conflicting: String,
        /// Its start.
        start: DateTime<Utc>,
        /// Its end.
        end: DateTime<Utc>,
    },
    /// The patient is booked at an overlapping time (the patient is not named: the booking
    /// is enough, and errors reach logs).
    #[error(
        "booking `{booking}`: the patient is already booked by `{conflicting}` from {start} to \
         {end}"
    )]
    PatientConflict {
        /// The booking asked for.
        booking: String,
        /// The booking in the way.
        conflicting: String,
        /// Its start.
        start: DateTime<Utc>,
        /// Its end.
        end: DateTime<Utc>,
    },
    /// The consultation already holds a booking.
    #[error("booking `{booking}`: consultation `{consultation}` is already booked by `{existing}`")]
    ConsultationBooked {
        /// The booking asked for.
        booking: String,
        /// The consultation.
        consultation: String,
        /// Its current booking.
        existing: String,
    },
    /// The operation needs a booking still `booked`.
    #[error("booking `{booking}` is {status}: cannot {action}")]
    NotBooked {
        /// The booking.
        booking: String,
        /// Its status.
        status: BookingStatus,
        /// The operation.
        action: &'static str,
    },
    /// Cancelling needs a reason.
    #[error("booking `{booking}`: cancel needs a reason")]
    MissingReason {
        /// The booking.
        booking: String,
    },
}

/// Expert schedules and the bookings against them.
#[derive(Clone, Debug, Default)]
pub struct Calendar {
    config: AppointmentConfig,
    schedules: BTreeMap<String, Schedule>,
    bookings: BTreeMap<String, Booking>,
}

impl Calendar {
    /// An empty calendar; refuses a configuration out of range.
    pub fn new(config: AppointmentConfig) -> Result<Calendar, AppointmentError> {
        config.validate()?;
        Ok(Calendar {
            config,
            ..Calendar::default()
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AppointmentConfig {
        &self.config
    }

    /// Sets (or replaces) an expert's schedule.
    pub fn set_schedule(&mut self, expert_id: impl Into<String>, schedule: Schedule) {
        self.schedules.insert(expert_id.into(), schedule);
    }

    /// Adds a booking the store already holds, as it is (no checks but the id).
    pub fn load(&mut self, booking: Booking) -> Result<(), AppointmentError> {
        if self.bookings.contains_key(&booking.id) {
            return Err(AppointmentError::DuplicateBooking {
                booking: booking.id,
            });
        }
        self.bookings.insert(booking.id.clone(), booking);
        Ok(())
    }

    /// A booking by id.
    pub fn booking(&self, id: &str) -> Option<&Booking> {
        self.bookings.get(id)
    }

    /// Every booking, by id.
    pub fn bookings(&self) -> impl Iterator<Item = &Booking> {
        self.bookings.values()
    }

    /// The expert's slots on the `days` local dates from `from` that no booking holds.
    pub fn open_slots(&self, expert_id: &str, from: NaiveDate, days: u32) -> Vec<Slot> {
        let Some(schedule) = self.schedules.get(expert_id) else {
            return Vec::new();
        };
        slots(expert_id, schedule, from, days, &self.config)
            .into_iter()
            .filter(|s| {
                !self.bookings.values().any(|b| {
                    b.expert_id == expert_id && b.status.holds_time() && b.overlaps(s.start, s.end)
                })
            })
            .collect()
    }

    /// Books `request` at `now`: checks the fields, the time (future, inside the schedule),
    /// and conflicts (the expert, the patient, the consultation), and returns the booking.
    pub fn book(
        &mut self,
        request: BookingRequest,
        now: DateTime<Utc>,
    ) -> Result<&Booking, AppointmentError> {
        self.check_request(&request, now)?;
        self.check_conflicts(&request)?;
        let booking = Booking {
            id: request.booking_id.trim().to_owned(),
            consultation_id: request.consultation_id.trim().to_owned(),
            expert_id: request.expert_id.trim().to_owned(),
            patient_id: request.patient_id.trim().to_owned(),
            start: request.start,
            end: request.end,
            urgency: request.urgency,
            status: BookingStatus::Booked,
            booked_at: now,
            joins: Vec::new(),
            cancellation: None,
            absent: Vec::new(),
        };
        let id = booking.id.clone();
        Ok(self.bookings.entry(id).or_insert(booking))
    }

    fn check_request(
        &self,
        r: &BookingRequest,
        now: DateTime<Utc>,
    ) -> Result<(), AppointmentError> {
        let booking = r.booking_id.trim().to_owned();
        let invalid = |field, problem: &str| AppointmentError::Invalid {
            booking: booking.clone(),
            field,
            problem: problem.to_owned(),
        };
        for (field, value) in [
            ("booking_id", &r.booking_id),
            ("consultation_id", &r.consultation_id),
            ("expert_id", &r.expert_id),
            ("patient_id", &r.patient_id),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "is blank"));
            }
        }
        if self.bookings.contains_key(&booking) {
            return Err(AppointmentError::DuplicateBooking { booking });
        }
        if r.end <= r.start {
            return Err(invalid(
                "end",
                &format!("{} is not after start {}", r.end, r.start),
            ));
        }
        if r.end - r.start > Duration::hours(24) {
            return Err(invalid("end", "the booking is longer than 24 hours"));
        }
        if r.start < now {
            return Err(AppointmentError::InPast {
                booking,
                start: r.start,
                now,
            });
        }
        let expert = r.expert_id.trim();
        let schedule =
            self.schedules
                .get(expert)
                .ok_or_else(|| AppointmentError::UnknownExpert {
                    booking: booking.clone(),
                    expert: expert.to_owned(),
                })?;
        // Windows that start the day before may run overnight into the booking's day, and a
        // booking that crosses midnight is inside when back-to-back windows (merged by
        // `availability`) cover it: windows up to the end's local date count.
        let day = self.config.local_date(r.start);
        let from = day.checked_sub_days(Days::new(1)).unwrap_or(day);
        let last = self.config.local_date(r.end).max(day);
        let inside = availability(schedule, from, last, self.config.offset())
            .iter()
            .any(|(start, end)| *start <= r.start && r.end <= *end);
        if !inside {
            return Err(AppointmentError::OutsideSchedule {
                booking,
                expert: expert.to_owned(),
                start: r.start,
                end: r.end,
            });
        }
        Ok(())
    }

    fn check_conflicts(&self, r: &BookingRequest) -> Result<(), AppointmentError> {
        let booking = r.booking_id.trim().to_owned();
        // Deterministic: the earliest conflicting booking (then by id) is named.
        let mut holding: Vec<&Booking> = self
            .bookings
            .values()
            .filter(|b| b.status.holds_time())
            .collect();
        holding.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
        if let Some(b) = holding
            .iter()
            .find(|b| b.consultation_id == r.consultation_id.trim())
        {
            return Err(AppointmentError::ConsultationBooked {
                booking,
                consultation: b.consultation_id.clone(),
                existing: b.id.clone(),
            });
        }
        let overlapping = holding.iter().filter(|b| b.overlaps(r.start, r.end));
        for b in overlapping {
            if b.expert_id == r.expert_id.trim() {
                return Err(AppointmentError::ExpertConflict {
                    booking,
                    expert: b.expert_id.clone(),
                    conflicting: b.id.clone(),
                    start: b.start,
                    end: b.end,
                });
            }
            if b.patient_id == r.patient_id.trim() {
                return Err(AppointmentError::PatientConflict {
                    booking,
                    conflicting: b.id.clone(),
                    start: b.start,
                    end: b.end,
                });
            }
        }
        Ok(())
    }

    fn booked_mut(
        &mut self,
        id: &str,
        action: &'static str,
    ) -> Result<&mut Booking, AppointmentError> {
        let booking =
            self.bookings
                .get_mut(id)
                .ok_or_else(|| AppointmentError::UnknownBooking {
                    booking: id.to_owned(),
                })?;
        if booking.status != BookingStatus::Booked {
            return Err(AppointmentError::NotBooked {
                booking: id.to_owned(),
                status: booking.status,
                action,
            });
        }
        Ok(booking)
    }

    /// Cancels a booked booking (the slot is free again), with who and why.
    pub fn cancel(
        &mut self,
        booking_id: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<&Booking, AppointmentError> {
        if reason.trim().is_empty() {
            return Err(AppointmentError::MissingReason {
                booking: booking_id.to_owned(),
            });
        }
        let booking = self.booked_mut(booking_id, "cancel")?;
        booking.status = BookingStatus::Cancelled;
        booking.cancellation = Some(Cancellation {
            by: by.trim().to_owned(),
            reason: reason.trim().to_owned(),
            at: now,
        });
        Ok(booking)
    }

    /// Records that `participant` joined at `at`; once both sides joined the booking is
    /// attended. A join after a no-show or cancellation is refused.
    pub fn record_join(
        &mut self,
        booking_id: &str,
        participant: Participant,
        at: DateTime<Utc>,
    ) -> Result<&Booking, AppointmentError> {
        let booking = self.booked_mut(booking_id, "join")?;
        booking.joins.push(Join { participant, at });
        if booking.side_joined(Side::Expert) && booking.side_joined(Side::Patient) {
            booking.status = BookingStatus::Attended;
        }
        Ok(booking)
    }

    /// Marks every booked booking whose start plus the grace period has passed at `now` as a
    /// no-show, with the sides that did not join; returns them by start, then id.
    pub fn sweep_no_shows(&mut self, now: DateTime<Utc>) -> Vec<NoShow> {
        let grace = Duration::minutes(i64::from(self.config.grace_minutes));
        let mut out = Vec::new();
        for booking in self.bookings.values_mut() {
            if booking.status != BookingStatus::Booked || now < booking.start + grace {
                continue;
            }
            let absent: Vec<Side> = [Side::Expert, Side::Patient]
                .into_iter()
                .filter(|s| !booking.side_joined(*s))
                .collect();
            booking.status = BookingStatus::NoShow;
            booking.absent.clone_from(&absent);
            out.push((
                booking.start,
                NoShow {
                    booking_id: booking.id.clone(),
                    consultation_id: booking.consultation_id.clone(),
                    absent,
                },
            ));
        }
        out.sort_by(|a, b| (a.0, &a.1.booking_id).cmp(&(b.0, &b.1.booking_id)));
        out.into_iter().map(|(_, n)| n).collect()
    }

    /// No-shows counted per patient and per expert over the bookings held.
    pub fn no_show_counts(&self) -> NoShowCounts {
        let mut counts = NoShowCounts::default();
        for b in self.bookings.values() {
            if b.status != BookingStatus::NoShow {
                continue;
            }
            if b.absent.contains(&Side::Patient) {
                *counts.by_patient.entry(b.patient_id.clone()).or_default() += 1;
            }
            if b.absent.contains(&Side::Expert) {
                *counts.by_expert.entry(b.expert_id.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// The expert's waiting queue for a local date: the bookings still `booked` that start
    /// that day, by start time, then urgency (critical first), then booking id.
    pub fn daily_queue(&self, expert_id: &str, date: NaiveDate) -> Vec<QueueEntry> {
        let mut waiting: Vec<&Booking> = self
            .bookings
            .values()
            .filter(|b| {
                b.expert_id == expert_id
                    && b.status == BookingStatus::Booked
                    && self.config.local_date(b.start) == date
            })
            .collect();
        waiting.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.urgency.cmp(&a.urgency))
                .then(a.id.cmp(&b.id))
        });
        waiting
            .into_iter()
            .enumerate()
            .map(|(i, b)| QueueEntry {
                position: i + 1,
                booking_id: b.id.clone(),
                consultation_id: b.consultation_id.clone(),
                start: b.start,
                end: b.end,
                urgency: b.urgency,
            })
            .collect()
    }
}
