//! What the facade's projections of the engine's own data pre-select in SQL: consultations
//! (Task, ServiceRequest, Encounter, the opinion's DiagnosticReport, Provenance) by their
//! clear columns, and the consultations an expert owns or owned (FHIR-22). The facade then
//! projects each candidate and matches the search in memory, so a pre-selection only has to
//! keep a superset.

use sqlx::Row;

use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// A pre-selection of consultations (every given filter applies).
#[derive(Debug, Clone, Default)]
pub struct ConsultationSelect {
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Only these patients (person ids).
    pub patients: Option<Vec<i64>>,
    /// Only these states (businessStatus codes).
    pub states: Option<Vec<String>>,
    /// Only those whose accepted expert is one of these.
    pub experts: Option<Vec<String>>,
    /// Only those one of these facilities may read (`None`: all).
    pub scope: Option<Vec<String>>,
    /// At most this many, the most recently changed first.
    pub limit: i64,
}

fn in_list<T: Clone + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>>(
    s: &mut Sql,
    col: &str,
    values: &[T],
) {
    if values.is_empty() {
        s.push(" AND 1=0");
        return;
    }
    s.push(&format!(" AND {col} IN ("));
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.bind(v.clone());
    }
    s.push(")");
}

impl Store {
    /// The ids of the consultations `f` selects, most recently changed first.
    pub async fn fhir_consultation_ids(&self, f: &ConsultationSelect) -> Result<Vec<String>> {
        let mut s = Sql::new("SELECT id FROM consultations c WHERE 1=1".into());
        if let Some(ids) = &f.ids {
            in_list(&mut s, "id", ids);
        }
        if let Some(p) = &f.patients {
            in_list(&mut s, "patient_id", p);
        }
        if let Some(st) = &f.states {
            in_list(&mut s, "state", st);
        }
        if let Some(e) = &f.experts {
            in_list(&mut s, "expert_id", e);
        }
        if let Some(fs) = &f.scope {
            s.push(" AND EXISTS (SELECT 1 FROM consultation_facilities a WHERE a.consultation_id = c.id");
            in_list(&mut s, "a.facility", fs);
            s.push(")");
        }
        s.push(" ORDER BY updated_at DESC, id DESC LIMIT ");
        s.bind(f.limit.max(0));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("select consultations"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(q("decode a consultation id")))
            .collect()
    }

    /// The consultations that may concern `expert` (facility `facility`): accepted by them,
    /// or open to an offer in a facility of their scope. The caller checks the open offers
    /// against the snapshot (offerees are not a clear column). At most 5,000.
    pub async fn fhir_expert_consultation_ids(
        &self,
        expert: &str,
        scope: Option<&[String]>,
    ) -> Result<Vec<String>> {
        let mut s = Sql::new("SELECT id FROM consultations c WHERE (expert_id = ".into());
        s.bind(expert.to_owned());
        s.push(" OR (state IN ('offered', 'reviewing')");
        if let Some(fs) = scope {
            s.push(" AND EXISTS (SELECT 1 FROM consultation_facilities a WHERE a.consultation_id = c.id");
            in_list(&mut s, "a.facility", fs);
            s.push(")");
        }
        s.push(")) ORDER BY updated_at DESC LIMIT 5000");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("select an expert's consultations"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(q("decode a consultation id")))
            .collect()
    }

    /// A page of the identity index's persons with a record in `scope` (`None`: all), the
    /// most recently changed first, and how many there are.
    pub async fn fhir_person_page(
        &self,
        scope: Option<&[String]>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<i64>, i64)> {
        let mut s =
            Sql::new("SELECT person_id, MAX(updated_at) AS u FROM identities WHERE 1=1".into());
        let mut n =
            Sql::new("SELECT COUNT(DISTINCT person_id) AS n FROM identities WHERE 1=1".into());
        if let Some(fs) = scope {
            in_list(&mut s, "facility", fs);
            in_list(&mut n, "facility", fs);
        }
        s.push(" GROUP BY person_id ORDER BY u DESC, person_id DESC LIMIT ");
        s.bind(limit.max(0));
        s.push(" OFFSET ");
        s.bind(offset.max(0));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list persons"))?;
        let ids = rows
            .iter()
            .map(|r| r.try_get("person_id").map_err(q("decode a person id")))
            .collect::<Result<Vec<i64>>>()?;
        let total: i64 = n
            .query()
            .fetch_one(&self.read)
            .await
            .map_err(q("count persons"))?
            .try_get("n")
            .map_err(q("count persons"))?;
        Ok((ids, total))
    }

    /// The persons with a record whose local id is `local_id` (in `facility` when given), in
    /// `scope` (`None`: all).
    pub async fn fhir_persons_by_local_id(
        &self,
        local_id: &str,
        facility: Option<&str>,
        scope: Option<&[String]>,
    ) -> Result<Vec<i64>> {
        let mut s = Sql::new("SELECT DISTINCT person_id FROM identities WHERE local_id = ".into());
        s.bind(local_id.to_owned());
        if let Some(f) = facility {
            s.push(" AND facility = ");
            s.bind(f.to_owned());
        }
        if let Some(fs) = scope {
            in_list(&mut s, "facility", fs);
        }
        s.push(" ORDER BY person_id LIMIT 1000");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("find persons by local id"))?;
        rows.iter()
            .map(|r| r.try_get("person_id").map_err(q("decode a person id")))
            .collect()
    }

    /// The ids of bookings (appointments) of these experts and statuses, in `scope` (`None`:
    /// all), most recently changed first, at most `limit`.
    pub async fn fhir_booking_ids(
        &self,
        experts: Option<&[String]>,
        statuses: Option<&[String]>,
        scope: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let mut s = Sql::new("SELECT id FROM appointments WHERE 1=1".into());
        if let Some(e) = experts {
            in_list(&mut s, "expert_id", e);
        }
        if let Some(st) = statuses {
            in_list(&mut s, "status", st);
        }
        if let Some(fs) = scope {
            in_list(&mut s, "facility", fs);
        }
        s.push(" ORDER BY updated_at DESC, id DESC LIMIT ");
        s.bind(limit.max(0));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("select appointments"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(q("decode an appointment id")))
            .collect()
    }

    /// Audit events newest first (a page: `limit` after skipping `offset`), by `actor` and
    /// about one of `resource_ids` when given, of `facilities` as `/api/audit` scopes them (an actor
    /// of, or a resource about, one of them; `None`: all); and how many there are.
    pub async fn fhir_audit_page(
        &self,
        actor: Option<&str>,
        resource_ids: Option<&[String]>,
        facilities: Option<&[String]>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<crate::store::audit::AuditRow>, i64)> {
        let cols = crate::store::audit::AUDIT_COLUMNS;
        let mut s = Sql::new(format!("SELECT {cols} FROM audit_events WHERE 1=1"));
        let mut n = Sql::new("SELECT COUNT(*) AS n FROM audit_events WHERE 1=1".into());
        for s in [&mut s, &mut n] {
            if let Some(a) = actor {
                s.push(" AND actor = ");
                s.bind(a.to_owned());
            }
            if let Some(r) = resource_ids {
                in_list(s, "resource_id", r);
            }
            if let Some(fs) = facilities {
                if fs.is_empty() {
                    s.push(" AND 1=0");
                } else {
                    s.push(" AND (1=0");
                    in_or(s, "facility", fs);
                    in_or(s, "subject_facility", fs);
                    s.push(")");
                }
            }
        }
        s.push(" ORDER BY seq DESC LIMIT ");
        s.bind(limit.max(0));
        s.push(" OFFSET ");
        s.bind(offset.max(0));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list audit events"))?;
        let total: i64 = n
            .query()
            .fetch_one(&self.read)
            .await
            .map_err(q("count audit events"))?
            .try_get("n")
            .map_err(q("count audit events"))?;
        let rows = rows
            .iter()
            .map(crate::store::audit::audit_row)
            .collect::<Result<Vec<_>>>()?;
        Ok((rows, total))
    }
}

impl Store {
    /// One booking with its version and last change (ms).
    pub async fn appointment_row(
        &self,
        id: &str,
    ) -> Result<Option<(crate::store::care::StoredBooking, i64, i64)>> {
        let mut s = Sql::new(
            "SELECT id, facility, version, body, updated_at FROM appointments WHERE id = ".into(),
        );
        s.bind(id.to_owned());
        let Some(r) = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read an appointment"))?
        else {
            return Ok(None);
        };
        let (b, version) = self.booking_from_row(&r)?;
        let updated: i64 = r.try_get("updated_at").map_err(q("read an appointment"))?;
        Ok(Some((b, version, updated)))
    }
}

/// ` OR <col> IN (…)`.
fn in_or(s: &mut Sql, col: &str, values: &[String]) {
    s.push(&format!(" OR {col} IN ("));
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.bind(v.clone());
    }
    s.push(")");
}
