//! The read side: one consultation (the snapshot, opened), lists from the clear columns (no
//! snapshot is opened for a list), the change feed of the live stream, and the due timers.

use huizhen_domain::consultation::{Consultation, Event, Offeree};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{ConsultationError, Result, StoredConsultation};
use crate::store::sql::Sql;
use crate::store::{Store, StoreError, q};

fn corrupt(id: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Inconsistent(format!("consultation {id}: {what} cannot be read: {e}"))
}

/// Reads a consultation on `conn` (a reader, or the writer inside a transaction).
pub(super) async fn load_in(
    conn: &mut AnyConnection,
    store: &Store,
    id: &str,
) -> Result<Option<StoredConsultation>> {
    let mut s = Sql::new(
        "SELECT snapshot, candidates, match_decision, created_at, updated_at FROM consultations WHERE id = "
            .into(),
    );
    s.bind(id.to_owned());
    let Some(r) = s
        .query()
        .fetch_optional(&mut *conn)
        .await
        .map_err(q("read a consultation"))?
    else {
        return Ok(None);
    };
    let d = || q("decode a consultation");
    let raw: String = r.try_get("snapshot").map_err(d())?;
    let text = store.open_text(id, "consultation/snapshot", raw)?;
    let consultation: Consultation =
        serde_json::from_str(&text).map_err(|e| corrupt(id, "the snapshot", e))?;
    let candidates: String = r.try_get("candidates").map_err(d())?;
    let candidates: Vec<Offeree> =
        serde_json::from_str(&candidates).map_err(|e| corrupt(id, "the candidates", e))?;
    let mut f =
        Sql::new("SELECT facility FROM consultation_facilities WHERE consultation_id = ".into());
    f.bind(id.to_owned());
    f.push(" ORDER BY facility");
    let facilities = f
        .query()
        .fetch_all(&mut *conn)
        .await
        .map_err(q("read a consultation's facilities"))?
        .iter()
        .map(|r| r.try_get::<String, _>("facility"))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(d())?;
    Ok(Some(StoredConsultation {
        consultation,
        candidates,
        match_decision: r.try_get("match_decision").map_err(d())?,
        facilities,
        created_at: r.try_get("created_at").map_err(d())?,
        updated_at: r.try_get("updated_at").map_err(d())?,
    }))
}

/// The consultation created from `key` (an HIS order number), if any.
pub(super) async fn source_in(
    conn: &mut AnyConnection,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let mut s = Sql::new("SELECT id FROM consultations WHERE source_key = ".into());
    s.bind(key.to_owned());
    let row = s
        .query()
        .fetch_optional(&mut *conn)
        .await
        .map_err(q("find a consultation by source"))?;
    row.map(|r| r.try_get("id"))
        .transpose()
        .map_err(q("decode a consultation id"))
}

/// Filters of a consultation list.
#[derive(Debug, Clone, Default)]
pub struct ConsultationFilter {
    /// A businessStatus code (`offered`, `sla-breached`, …).
    pub state: Option<String>,
    /// Only consultations this facility may read (requesting or offered).
    pub facility: Option<String>,
    pub department: Option<String>,
    /// Only this patient's (a person id).
    pub patient: Option<u64>,
    /// The caller's read scope; `None` for every facility.
    pub scope: Option<Vec<String>>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
    /// Continue after this id (the previous page's `next_cursor`).
    pub cursor: Option<String>,
}

/// One consultation in a list: the clear columns, never the snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsultationSummary {
    pub id: String,
    pub version: i64,
    /// The businessStatus code.
    pub state: String,
    pub requesting_facility: String,
    pub expert_facility: Option<String>,
    pub expert_id: Option<String>,
    pub patient: i64,
    pub department: String,
    pub urgency: String,
    pub service_type: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One page of consultations, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsultationPage {
    pub consultations: Vec<ConsultationSummary>,
    pub next_cursor: Option<String>,
}

/// One change for the live stream: no patient data, only what changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamChange {
    /// The stream position (`id:` of the server-sent event; `Last-Event-ID` resumes after it).
    pub seq: i64,
    pub consultation: String,
    pub version: i64,
    /// The event type (`accepted`, `offered`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The state after it (businessStatus code).
    pub state: String,
    /// ms since the epoch.
    pub at: i64,
    pub actor: String,
    pub role: String,
}

/// A timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub consultation: String,
    /// `offer-deadline` or `next-offer`.
    pub kind: String,
    pub attempt: i64,
    pub due_at: i64,
}

/// `AND <col> IN (…)` for a scope (`AND 1=0` for an empty one).
fn push_in(s: &mut Sql, col: &str, values: &[String]) {
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

fn summary(r: &AnyRow) -> Result<ConsultationSummary, StoreError> {
    let d = || q("decode a consultation summary");
    Ok(ConsultationSummary {
        id: r.try_get("id").map_err(d())?,
        version: r.try_get("version").map_err(d())?,
        state: r.try_get("state").map_err(d())?,
        requesting_facility: r.try_get("requesting_facility").map_err(d())?,
        expert_facility: r.try_get("expert_facility").map_err(d())?,
        expert_id: r.try_get("expert_id").map_err(d())?,
        patient: r.try_get("patient_id").map_err(d())?,
        department: r.try_get("department").map_err(d())?,
        urgency: r.try_get("urgency").map_err(d())?,
        service_type: r.try_get("service_type").map_err(d())?,
        created_at: r.try_get("created_at").map_err(d())?,
        updated_at: r.try_get("updated_at").map_err(d())?,
    })
}

impl Store {
    /// The ids of the consultations with an event in `[from_ms, to_ms)` (anything that
    /// happened to them then: created, accepted, cancelled, completed, …), by id.
    pub async fn consultations_changed(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>> {
        let mut s = Sql::new(
            "SELECT DISTINCT consultation_id FROM consultation_events WHERE at >= ".into(),
        );
        s.bind(from_ms);
        s.push(" AND at < ");
        s.bind(to_ms);
        s.push(" ORDER BY consultation_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read consultations changed"))?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("consultation_id"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("decode consultations changed"))?)
    }

    /// The consultation created from `key` (an HIS order number), if any.
    pub async fn consultation_by_source(&self, key: &str) -> Result<Option<String>> {
        let mut conn = self.read.acquire().await.map_err(q("acquire a reader"))?;
        Ok(source_in(&mut conn, key).await?)
    }

    /// Every stored event of a consultation, oldest first (opened): what
    /// `Consultation::replay` rebuilds it from.
    pub async fn consultation_history(&self, id: &str) -> Result<Vec<Event>> {
        let mut s = Sql::new(
            "SELECT version, event FROM consultation_events WHERE consultation_id = ".into(),
        );
        s.bind(id.to_owned());
        s.push(" ORDER BY version");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read consultation events"))?;
        rows.iter()
            .map(|r| {
                let v: i64 = r.try_get("version").map_err(q("decode an event"))?;
                let raw: String = r.try_get("event").map_err(q("decode an event"))?;
                let text = self.open_text(id, &format!("consultation/event/{v}"), raw)?;
                serde_json::from_str(&text)
                    .map_err(|e| corrupt(id, &format!("event {v}"), e).into())
            })
            .collect()
    }

    /// Consultations newest first, from the clear columns.
    pub async fn list_consultations(&self, f: &ConsultationFilter) -> Result<ConsultationPage> {
        let limit = f.limit.unwrap_or(50).clamp(1, 500);
        let mut s = Sql::new("SELECT id, version, state, requesting_facility, expert_facility, expert_id, patient_id, department, urgency, service_type, created_at, updated_at FROM consultations c WHERE 1=1".into());
        if let Some(st) = &f.state {
            s.push(" AND state = ");
            s.bind(st.clone());
        }
        if let Some(d) = &f.department {
            s.push(" AND department = ");
            s.bind(d.clone());
        }
        if let Some(p) = f.patient {
            s.push(" AND patient_id = ");
            s.bind(p as i64);
        }
        if let Some(c) = &f.cursor {
            s.push(" AND id < ");
            s.bind(c.clone());
        }
        let mut visible: Option<Vec<String>> = f.scope.clone();
        if let Some(one) = &f.facility {
            visible = Some(match visible {
                Some(scope) => scope.into_iter().filter(|x| x == one).collect(),
                None => vec![one.clone()],
            });
        }
        if let Some(fs) = &visible {
            s.push(" AND EXISTS (SELECT 1 FROM consultation_facilities a WHERE a.consultation_id = c.id");
            push_in(&mut s, "a.facility", fs);
            s.push(")");
        }
        s.push(" ORDER BY id DESC LIMIT ");
        s.bind(limit + 1);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list consultations"))?;
        let mut consultations = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if consultations.len() as i64 > limit {
            consultations.truncate(limit as usize);
            consultations.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(ConsultationPage {
            consultations,
            next_cursor,
        })
    }

    /// The last stream position (0 when no event was ever stored).
    pub async fn consultation_last_seq(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM consultation_events")
            .fetch_one(&self.read)
            .await
            .map_err(q("read the last consultation event"))?;
        Ok(row.try_get("s").map_err(q("decode the last event"))?)
    }

    /// Changes after stream position `after`, oldest first, of the consultations `scope` may
    /// read (`None`: all), at most `limit`.
    pub async fn consultation_changes(
        &self,
        after: i64,
        scope: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<StreamChange>> {
        let mut s = Sql::new("SELECT seq, consultation_id, version, kind, state, at, actor, role FROM consultation_events e WHERE seq > ".into());
        s.bind(after);
        if let Some(fs) = scope {
            s.push(" AND EXISTS (SELECT 1 FROM consultation_facilities a WHERE a.consultation_id = e.consultation_id");
            push_in(&mut s, "a.facility", fs);
            s.push(")");
        }
        s.push(" ORDER BY seq LIMIT ");
        s.bind(limit.clamp(1, 1000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read consultation changes"))?;
        let d = || q("decode a consultation change");
        rows.iter()
            .map(|r| {
                Ok(StreamChange {
                    seq: r.try_get("seq").map_err(d())?,
                    consultation: r.try_get("consultation_id").map_err(d())?,
                    version: r.try_get("version").map_err(d())?,
                    kind: r.try_get("kind").map_err(d())?,
                    state: r.try_get("state").map_err(d())?,
                    at: r.try_get("at").map_err(d())?,
                    actor: r.try_get("actor").map_err(d())?,
                    role: r.try_get("role").map_err(d())?,
                })
            })
            .collect()
    }

    /// Timers due at `now_ms` (ms since the epoch, the workflow's clock), earliest first.
    pub async fn due_consultation_timers(&self, now_ms: i64, limit: i64) -> Result<Vec<DueTimer>> {
        let mut s = Sql::new(
            "SELECT consultation_id, kind, attempt, due_at FROM consultation_timers WHERE done = 0 AND due_at <= "
                .into(),
        );
        s.bind(now_ms);
        s.push(" ORDER BY due_at, consultation_id LIMIT ");
        s.bind(limit.clamp(1, 1000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read due consultation timers"))?;
        rows.iter().map(due_timer).collect()
    }

    /// The open timers of a consultation (kind, attempt, due), for tests and the API.
    pub async fn consultation_timers(&self, id: &str) -> Result<Vec<DueTimer>> {
        let mut s = Sql::new(
            "SELECT consultation_id, kind, attempt, due_at FROM consultation_timers WHERE done = 0 AND consultation_id = "
                .into(),
        );
        s.bind(id.to_owned());
        s.push(" ORDER BY due_at");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read consultation timers"))?;
        rows.iter().map(due_timer).collect()
    }
}

impl From<ConsultationError> for StoreError {
    fn from(e: ConsultationError) -> Self {
        match e {
            ConsultationError::Store(s) => s,
            other => StoreError::Inconsistent(other.to_string()),
        }
    }
}

/// A `consultation_timers` row.
fn due_timer(r: &sqlx::any::AnyRow) -> Result<DueTimer> {
    let d = || q("decode a consultation timer");
    Ok(DueTimer {
        consultation: r.try_get("consultation_id").map_err(d())?,
        kind: r.try_get("kind").map_err(d())?,
        attempt: r.try_get("attempt").map_err(d())?,
        due_at: r.try_get("due_at").map_err(d())?,
    })
}
