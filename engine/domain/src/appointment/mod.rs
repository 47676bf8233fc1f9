//! Appointments for scheduled consultations (issue 15 item 4; STANDARDS FHIR-10's
//! `accepted/scheduled` row: Appointment booked, Slot busy, no-show → Appointment `noshow`).
//!
//! * [`slots()`] turns an expert's weekly [`Schedule`](crate::expert::Schedule) (the registry's
//!   windows, local time) into bookable slots;
//! * [`Calendar::book`] books a time for a consultation: in the future, inside the expert's
//!   schedule, and refused with the conflicting booking named when the expert or the patient
//!   is already booked at an overlapping time, or the consultation already holds a booking;
//! * [`Calendar::cancel`] frees the time (a reason is required);
//! * [`Calendar::daily_queue`] is each expert's waiting queue for a day, by start time then
//!   urgency;
//! * [`Calendar::sweep_no_shows`] (run by the engine's timer sweep) marks bookings whose start
//!   plus the grace period passed with a side missing as no-shows, and
//!   [`Calendar::no_show_counts`] counts them per patient and per expert.
//!
//! Pure: every operation takes `now`; the store loads and persists bookings.

mod calendar;
pub mod slots;

#[cfg(test)]
mod tests;

pub use calendar::{
    AppointmentError, Booking, BookingRequest, BookingStatus, Calendar, Cancellation, Join, NoShow,
    NoShowCounts, Participant, QueueEntry, Side, Urgency,
};
pub use slots::{AppointmentConfig, AppointmentConfigError, Slot, availability, slots};
