//! Appointments: bookings decided by the domain's `Calendar` over the stored bookings of the
//! expert and the patient around the day, inside one transaction that holds the expert's, the
//! patient's and the consultation's lock rows. See the module docs of [`super`].

use chrono::{DateTime, Duration, NaiveDate, Utc};
use huizhen_domain::appointment::{
    AppointmentConfig, AppointmentError, Booking, BookingRequest, BookingStatus, Calendar, NoShow,
    Participant, QueueEntry,
};
use huizhen_domain::expert::Expert;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::{exec, json_err, lock_keys};
use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// A booking as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredBooking {
    /// The domain's booking.
    #[serde(flatten)]
    pub booking: Booking,
    /// The facility that booked it (the requesting facility): its scope.
    pub facility: String,
}

/// Most bookings one no-show sweep marks (the next sweep takes the rest).
const SWEEP_BATCH: i64 = 500;

const COLUMNS: &str = "id, facility, version, body";

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl Store {
    pub(crate) fn booking_from_row(&self, r: &AnyRow) -> Result<(StoredBooking, i64)> {
        let d = || q("decode appointment");
        let id: String = r.try_get("id").map_err(d())?;
        let body = self.open_care(&id, "booking", r.try_get("body").map_err(d())?)?;
        let booking: Booking =
            serde_json::from_str(&body).map_err(|e| json_err("appointment", &id, &e))?;
        Ok((
            StoredBooking {
                booking,
                facility: r.try_get("facility").map_err(d())?,
            },
            r.try_get("version").map_err(d())?,
        ))
    }

    /// One booking.
    pub async fn appointment(&self, id: &str) -> Result<Option<StoredBooking>> {
        let mut s = Sql::new(format!("SELECT {COLUMNS} FROM appointments WHERE id = "));
        s.bind(id);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read appointment"))?;
        row.map(|r| self.booking_from_row(&r).map(|(b, _)| b))
            .transpose()
    }

    async fn load_rows(
        &self,
        conn: &mut AnyConnection,
        s: Sql,
        op: &'static str,
    ) -> Result<Vec<(StoredBooking, i64)>> {
        let rows = s.query().fetch_all(&mut *conn).await.map_err(q(op))?;
        rows.iter().map(|r| self.booking_from_row(r)).collect()
    }

    async fn insert_booking(
        &self,
        conn: &mut AnyConnection,
        b: &Booking,
        facility: &str,
    ) -> Result<()> {
        let json =
            serde_json::to_string(b).map_err(|e| json_err("encode appointment", &b.id, &e))?;
        let mut s = Sql::new(
            "INSERT INTO appointments (id, consultation_id, expert_id, patient_key, facility, start_at, end_at, status, version, body, booked_at, updated_at) VALUES ("
                .into(),
        );
        s.bind(b.id.as_str());
        s.push(", ");
        s.bind(b.consultation_id.as_str());
        s.push(", ");
        s.bind(b.expert_id.as_str());
        s.push(", ");
        s.bind(self.index_care(&b.patient_id));
        s.push(", ");
        s.bind(facility);
        s.push(", ");
        s.bind(ms(b.start));
        s.push(", ");
        s.bind(ms(b.end));
        s.push(", ");
        s.bind(b.status.as_str());
        s.push(", 1, ");
        s.bind(self.seal_care(&b.id, "booking", &json));
        s.push(", ");
        s.bind(ms(b.booked_at));
        s.push(", ");
        s.bind(crate::message::now_ms());
        s.push(")");
        exec(conn, s, "insert appointment").await?;
        Ok(())
    }

    /// Writes `b` over the row still at `version`; false when it moved on.
    async fn update_booking(
        &self,
        conn: &mut AnyConnection,
        b: &Booking,
        version: i64,
    ) -> Result<bool> {
        let json =
            serde_json::to_string(b).map_err(|e| json_err("encode appointment", &b.id, &e))?;
        let mut s = Sql::new("UPDATE appointments SET status = ".into());
        s.bind(b.status.as_str());
        s.push(", body = ");
        s.bind(self.seal_care(&b.id, "booking", &json));
        s.push(", version = version + 1, updated_at = ");
        s.bind(crate::message::now_ms());
        s.push(" WHERE id = ");
        s.bind(b.id.as_str());
        s.push(" AND version = ");
        s.bind(version);
        Ok(exec(conn, s, "update appointment").await? > 0)
    }

    /// Books `request` for `facility` at `now`: the domain checks the fields, the expert's
    /// schedule (from the registry) and the conflicts with the stored bookings of the expert,
    /// the patient and the consultation; the booking and `audit` commit together. The inner
    /// `Err` is the domain's refusal (nothing written).
    pub async fn book_appointment(
        &self,
        request: &BookingRequest,
        facility: &str,
        config: &AppointmentConfig,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Result<Booking, AppointmentError>> {
        let mut calendar = match Calendar::new(*config) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let (expert, patient, consultation) = (
            request.expert_id.trim(),
            self.index_care(request.patient_id.trim()),
            request.consultation_id.trim(),
        );
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin booking"))?;
        let mut keys = vec![
            format!("expert:{expert}"),
            format!("patient:{patient}"),
            format!("consultation:{consultation}"),
        ];
        lock_keys(&mut tx, &mut keys).await?;
        let mut s = Sql::new("SELECT id FROM appointments WHERE id = ".into());
        s.bind(request.booking_id.trim());
        if s.query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("look up appointment"))?
            .is_some()
        {
            return Ok(Err(AppointmentError::DuplicateBooking {
                booking: request.booking_id.trim().to_owned(),
            }));
        }
        let mut s = Sql::new("SELECT body FROM experts WHERE id = ".into());
        s.bind(expert);
        if let Some(r) = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read expert schedule"))?
        {
            let body: String = r.try_get("body").map_err(q("decode expert"))?;
            let e: Expert =
                serde_json::from_str(&body).map_err(|err| json_err("expert", expert, &err))?;
            calendar.set_schedule(expert, e.schedule);
        }
        // The bookings that hold time for this expert or patient within a day of the request,
        // and any booking of the consultation: a superset of what the domain compares.
        let day = Duration::hours(24);
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM appointments WHERE status IN ('booked', 'attended') AND (((expert_id = "
        ));
        s.bind(expert);
        s.push(" OR patient_key = ");
        s.bind(patient.as_str());
        s.push(") AND start_at < ");
        s.bind(ms(request.end.max(request.start) + day));
        s.push(" AND end_at > ");
        s.bind(ms(request.start.min(request.end) - day));
        s.push(") OR consultation_id = ");
        s.bind(consultation);
        s.push(")");
        for (b, _) in self
            .load_rows(&mut tx, s, "read bookings around the day")
            .await?
        {
            if let Err(e) = calendar.load(b.booking) {
                return Ok(Err(e));
            }
        }
        let booking = match calendar.book(request.clone(), now) {
            Ok(b) => b.clone(),
            Err(e) => return Ok(Err(e)),
        };
        self.insert_booking(&mut tx, &booking, facility).await?;
        audit::append(&mut tx, audit, self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit booking"))?;
        Ok(Ok(booking))
    }

    /// Loads booking `id` under its lock, applies `op` to it through a one-booking calendar and
    /// writes the result with `audit` (given the booking after the change).
    async fn change_booking(
        &self,
        id: &str,
        config: &AppointmentConfig,
        op: impl FnOnce(&mut Calendar) -> std::result::Result<Booking, AppointmentError>,
        audit: impl FnOnce(&Booking) -> AuditEvent,
    ) -> Result<Result<StoredBooking, AppointmentError>> {
        let mut calendar = match Calendar::new(*config) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin appointment change"))?;
        lock_keys(&mut tx, &mut [format!("appointment:{id}")]).await?;
        let mut s = Sql::new(format!("SELECT {COLUMNS} FROM appointments WHERE id = "));
        s.bind(id);
        let Some((stored, version)) = self.load_rows(&mut tx, s, "read appointment").await?.pop()
        else {
            return Ok(Err(AppointmentError::UnknownBooking {
                booking: id.to_owned(),
            }));
        };
        if let Err(e) = calendar.load(stored.booking) {
            return Ok(Err(e));
        }
        let booking = match op(&mut calendar) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        if !self.update_booking(&mut tx, &booking, version).await? {
            return Err(crate::store::StoreError::Inconsistent(format!(
                "appointment {id} changed under its lock"
            )));
        }
        audit::append(&mut tx, &audit(&booking), self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit appointment change"))?;
        Ok(Ok(StoredBooking {
            booking,
            facility: stored.facility,
        }))
    }

    /// Cancels a booked booking (`by` a person id, a reason required); the slot is free again.
    pub async fn cancel_appointment(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        config: &AppointmentConfig,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Result<StoredBooking, AppointmentError>> {
        self.change_booking(
            id,
            config,
            |c| c.cancel(id, by, reason, now).cloned(),
            |_| audit.clone(),
        )
        .await
    }

    /// Records that `participant` joined booking `id` at `at` (attended once both sides did).
    pub async fn record_appointment_join(
        &self,
        id: &str,
        participant: Participant,
        at: DateTime<Utc>,
        config: &AppointmentConfig,
        audit: &AuditEvent,
    ) -> Result<Result<StoredBooking, AppointmentError>> {
        self.change_booking(
            id,
            config,
            |c| c.record_join(id, participant, at).cloned(),
            |b| {
                let mut e = audit.clone();
                e.detail = format!("{}; status {}", e.detail, b.status);
                e
            },
        )
        .await
    }

    /// The expert's waiting queue on the local `date` (the domain orders it).
    pub async fn expert_queue(
        &self,
        expert_id: &str,
        date: NaiveDate,
        config: &AppointmentConfig,
    ) -> Result<Vec<QueueEntry>> {
        let Ok(mut calendar) = Calendar::new(*config) else {
            return Ok(Vec::new());
        };
        let midnight = date
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc())
            .unwrap_or_default();
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM appointments WHERE status = 'booked' AND expert_id = "
        ));
        s.bind(expert_id.trim());
        s.push(" AND start_at >= ");
        s.bind(ms(midnight - Duration::hours(25)));
        s.push(" AND start_at < ");
        s.bind(ms(midnight + Duration::hours(49)));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read expert queue"))?;
        for r in &rows {
            let (b, _) = self.booking_from_row(r)?;
            // Ids are unique in the table, so a duplicate cannot occur.
            let _ = calendar.load(b.booking);
        }
        Ok(calendar.daily_queue(expert_id.trim(), date))
    }

    /// Marks each booking still `booked` whose start plus the grace period has passed at
    /// `now` as a no-show (the domain names the absent sides), one audit event each, in one
    /// transaction; returns them for the workflow to fail their consultations (`no-show`). At
    /// most [`SWEEP_BATCH`] per call. Safe to run on several nodes at once: a booking another
    /// sweep marked first is skipped.
    pub async fn sweep_no_shows(
        &self,
        now: DateTime<Utc>,
        config: &AppointmentConfig,
    ) -> Result<Vec<NoShow>> {
        let Ok(mut calendar) = Calendar::new(*config) else {
            return Ok(Vec::new());
        };
        let due = now - Duration::minutes(i64::from(config.grace_minutes));
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin no-show sweep"))?;
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM appointments WHERE status = 'booked' AND start_at <= "
        ));
        s.bind(ms(due));
        s.push(" ORDER BY start_at, id LIMIT ");
        s.bind(SWEEP_BATCH);
        let mut versions = std::collections::HashMap::new();
        let mut facilities = std::collections::HashMap::new();
        for (b, v) in self.load_rows(&mut tx, s, "read due bookings").await? {
            versions.insert(b.booking.id.clone(), v);
            facilities.insert(b.booking.id.clone(), b.facility);
            let _ = calendar.load(b.booking);
        }
        let mut marked = Vec::new();
        for no_show in calendar.sweep_no_shows(now) {
            let Some(booking) = calendar.booking(&no_show.booking_id) else {
                continue;
            };
            let version = versions.get(&booking.id).copied().unwrap_or(0);
            if booking.status != BookingStatus::NoShow
                || !self.update_booking(&mut tx, booking, version).await?
            {
                continue;
            }
            let absent: Vec<String> = no_show.absent.iter().map(ToString::to_string).collect();
            let event = AuditEvent {
                actor: "engine".into(),
                role: "system".into(),
                action: "appointment.no-show".into(),
                resource_type: "Appointment".into(),
                resource_id: booking.id.clone(),
                outcome: "success".into(),
                source: "scheduler".into(),
                detail: format!(
                    "consultation {}; absent: {}",
                    booking.consultation_id,
                    absent.join(", ")
                ),
                subject_facility: facilities.get(&booking.id).cloned().unwrap_or_default(),
                ..AuditEvent::default()
            };
            audit::append(&mut tx, &event, self.anchor.as_deref()).await?;
            marked.push(no_show);
        }
        tx.commit().await.map_err(q("commit no-show sweep"))?;
        Ok(marked)
    }

    /// The no-shows whose consultation is still `scheduled`: a sweep marked the booking but the
    /// consultation's failure did not follow (the engine stopped in between), at most
    /// [`SWEEP_BATCH`], oldest first. A consultation booked again since (another booking still
    /// `booked` or `attended`) is left out. Failing the consultation takes it off this list, so
    /// finishing them is idempotent. Reads from the scheduled consultations (few), not the
    /// no-shows (all of them, ever).
    pub async fn unfinished_no_shows(&self) -> Result<Vec<NoShow>> {
        let mut s = Sql::new(
            "SELECT a.id, a.facility, a.version, a.body FROM consultations c \
             JOIN appointments a ON a.consultation_id = c.id WHERE c.state = "
                .into(),
        );
        s.bind(huizhen_domain::consultation::State::Scheduled.code());
        s.push(" AND a.status = ");
        s.bind(BookingStatus::NoShow.as_str());
        s.push(
            " AND NOT EXISTS (SELECT 1 FROM appointments b WHERE b.consultation_id = a.consultation_id AND b.status IN (",
        );
        s.bind(BookingStatus::Booked.as_str());
        s.push(", ");
        s.bind(BookingStatus::Attended.as_str());
        s.push(")) ORDER BY a.start_at, a.id LIMIT ");
        s.bind(SWEEP_BATCH);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read unfinished no-shows"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (b, _) = self.booking_from_row(r)?;
            out.push(NoShow {
                booking_id: b.booking.id,
                consultation_id: b.booking.consultation_id,
                absent: b.booking.absent,
            });
        }
        Ok(out)
    }
}
