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
}
