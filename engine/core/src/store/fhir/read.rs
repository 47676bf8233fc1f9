//! The read side: one resource (current or a version), and searches over the index rows.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Criterion, DatePrefix, FhirRow, corrupt};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// A search over one resource type.
#[derive(Debug, Clone, Default)]
pub struct FhirQuery {
    pub resource_type: String,
    /// AND-ed conditions.
    pub criteria: Vec<Criterion>,
    /// Only resources of these facilities (`None`: every facility).
    pub facilities: Option<Vec<String>>,
    /// Page size (the caller bounds it).
    pub limit: i64,
    /// Rows to skip (the page's offset).
    pub offset: i64,
}

/// One page of a search, newest change first.
#[derive(Debug, Clone)]
pub struct FhirPage {
    pub rows: Vec<FhirRow>,
    /// Every match (all pages).
    pub total: i64,
}

const COLUMNS: &str = "r.res_type, r.id, r.version, r.facility, r.patient, r.last_updated, v.body";

fn in_list(s: &mut Sql, col: &str, values: &[String]) {
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

/// `(<date comparison>)` of `prefix` between the columns `lo`/`hi` and `[plo, phi)`.
fn date_sql(s: &mut Sql, lo: &str, hi: &str, prefix: DatePrefix, plo: i64, phi: i64) {
    let eq = |s: &mut Sql| {
        s.push(&format!("({lo} >= "));
        s.bind(plo);
        s.push(&format!(" AND {hi} <= "));
        s.bind(phi);
        s.push(")");
    };
    match prefix {
        DatePrefix::Eq => eq(s),
        DatePrefix::Ne => {
            s.push("(NOT ");
            eq(s);
            s.push(")");
        }
        DatePrefix::Gt => {
            s.push(&format!("({hi} > "));
            s.bind(phi);
            s.push(")");
        }
        DatePrefix::Lt => {
            s.push(&format!("({lo} < "));
            s.bind(plo);
            s.push(")");
        }
        DatePrefix::Ge => {
            s.push(&format!("({hi} > "));
            s.bind(phi);
            s.push(" OR ");
            eq(s);
            s.push(")");
        }
        DatePrefix::Le => {
            s.push(&format!("({lo} < "));
            s.bind(plo);
            s.push(" OR ");
            eq(s);
            s.push(")");
        }
        DatePrefix::Sa => {
            s.push(&format!("({lo} >= "));
            s.bind(phi);
            s.push(")");
        }
        DatePrefix::Eb => {
            s.push(&format!("({hi} <= "));
            s.bind(plo);
            s.push(")");
        }
    }
}

impl Store {
    /// The `WHERE` of a search (after `FROM fhir_resources r JOIN fhir_versions v …`).
    fn fhir_where(&self, s: &mut Sql, resource_type: &str, criteria: &[Criterion]) {
        s.push(" WHERE r.res_type = ");
        s.bind(resource_type.to_owned());
        for c in criteria {
            match c {
                Criterion::Terms { param, any_of } => {
                    s.push(" AND EXISTS (SELECT 1 FROM fhir_terms t WHERE t.res_type = r.res_type AND t.id = r.id AND t.param = ");
                    s.bind(param.clone());
                    let values: Vec<String> = any_of
                        .iter()
                        .map(|v| self.fhir_term(resource_type, param, v))
                        .collect();
                    in_list(s, "t.value", &values);
                    s.push(")");
                }
                Criterion::Missing { param, missing } => {
                    s.push(if *missing {
                        " AND NOT EXISTS"
                    } else {
                        " AND EXISTS"
                    });
                    s.push(" (SELECT 1 FROM fhir_terms t WHERE t.res_type = r.res_type AND t.id = r.id AND t.param = ");
                    s.bind(param.clone());
                    s.push(")");
                }
                Criterion::Date { param, any_of } => {
                    s.push(" AND EXISTS (SELECT 1 FROM fhir_dates d WHERE d.res_type = r.res_type AND d.id = r.id AND d.param = ");
                    s.bind(param.clone());
                    if any_of.is_empty() {
                        s.push(" AND 1=0");
                    } else {
                        s.push(" AND (");
                        for (i, (prefix, lo, hi)) in any_of.iter().enumerate() {
                            if i > 0 {
                                s.push(" OR ");
                            }
                            date_sql(s, "d.lo", "d.hi", *prefix, *lo, *hi);
                        }
                        s.push(")");
                    }
                    s.push(")");
                }
                Criterion::Id(ids) => in_list(s, "r.id", ids),
                Criterion::LastUpdated(prefix, lo, hi) => {
                    // An instant stored to the millisecond: its range is 1 ms long.
                    s.push(" AND ");
                    date_sql(
                        s,
                        "r.last_updated",
                        "(r.last_updated + 1)",
                        *prefix,
                        *lo,
                        *hi,
                    );
                }
                Criterion::Patient(ids) => in_list(s, "r.patient", ids),
            }
        }
    }

    fn fhir_row(&self, r: &AnyRow) -> Result<FhirRow> {
        let d = || q("decode a FHIR resource");
        let resource_type: String = r.try_get("res_type").map_err(d())?;
        let id: String = r.try_get("id").map_err(d())?;
        let version: i64 = r.try_get("version").map_err(d())?;
        let raw: String = r.try_get("body").map_err(d())?;
        let body = self.open_fhir(&resource_type, &id, version, raw)?;
        Ok(FhirRow {
            facility: r.try_get("facility").map_err(d())?,
            patient: r.try_get("patient").map_err(d())?,
            last_updated: r.try_get("last_updated").map_err(d())?,
            resource_type,
            id,
            version,
            body,
        })
    }

    /// The matches of `criteria` in `facilities` as `(id, version)` pairs, on `conn` (a
    /// reader, or the writer inside a transaction). At most `limit`.
    pub(super) async fn fhir_match_in(
        &self,
        conn: &mut AnyConnection,
        resource_type: &str,
        criteria: &[Criterion],
        facility: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        let mut s = Sql::new("SELECT r.id, r.version FROM fhir_resources r".into());
        self.fhir_where(&mut s, resource_type, criteria);
        if let Some(f) = facility {
            s.push(" AND r.facility = ");
            s.bind(f.to_owned());
        }
        s.push(" ORDER BY r.id LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&mut *conn)
            .await
            .map_err(q("match FHIR resources"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id").map_err(q("decode a FHIR match"))?,
                    r.try_get("version").map_err(q("decode a FHIR match"))?,
                ))
            })
            .collect()
    }

    /// The matches of a conditional search (FHIR-20: `If-None-Exist`, a conditional update) in
    /// `facility` (`None`: every facility): `(id, version)`, at most `limit`.
    pub async fn fhir_match(
        &self,
        resource_type: &str,
        criteria: &[Criterion],
        facility: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        let mut conn = self.read.acquire().await.map_err(q("acquire a reader"))?;
        self.fhir_match_in(&mut conn, resource_type, criteria, facility, limit)
            .await
    }

    /// The current version of a resource.
    pub async fn fhir_read(&self, resource_type: &str, id: &str) -> Result<Option<FhirRow>> {
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM fhir_resources r JOIN fhir_versions v ON v.res_type = r.res_type AND v.id = r.id AND v.version = r.version WHERE r.res_type = "
        ));
        s.bind(resource_type.to_owned());
        s.push(" AND r.id = ");
        s.bind(id.to_owned());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read a FHIR resource"))?;
        row.map(|r| self.fhir_row(&r)).transpose()
    }

    /// One version of a resource (`_history/{vid}`).
    pub async fn fhir_vread(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<FhirRow>> {
        let mut s = Sql::new(
            "SELECT v.res_type, v.id, v.version, r.facility, r.patient, v.last_updated, v.body FROM fhir_versions v JOIN fhir_resources r ON r.res_type = v.res_type AND r.id = v.id WHERE v.res_type = "
                .into(),
        );
        s.bind(resource_type.to_owned());
        s.push(" AND v.id = ");
        s.bind(id.to_owned());
        s.push(" AND v.version = ");
        s.bind(version);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read a FHIR resource version"))?;
        row.map(|r| self.fhir_row(&r)).transpose()
    }

    /// Several resources of one type by id (for `_include`), current versions, in `facilities`.
    pub async fn fhir_read_many(
        &self,
        resource_type: &str,
        ids: &[String],
        facilities: Option<&[String]>,
    ) -> Result<Vec<FhirRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = FhirQuery {
            resource_type: resource_type.to_owned(),
            criteria: vec![Criterion::Id(ids.to_vec())],
            facilities: facilities.map(<[String]>::to_vec),
            limit: i64::try_from(ids.len()).unwrap_or(i64::MAX),
            offset: 0,
        };
        Ok(self.fhir_search(&query).await?.rows)
    }

    /// A page of a search, the most recently changed first.
    pub async fn fhir_search(&self, f: &FhirQuery) -> Result<FhirPage> {
        let from = " FROM fhir_resources r JOIN fhir_versions v ON v.res_type = r.res_type AND v.id = r.id AND v.version = r.version";
        let mut s = Sql::new(format!("SELECT {COLUMNS}{from}"));
        let mut n = Sql::new(format!("SELECT COUNT(*) AS n{from}"));
        for s in [&mut s, &mut n] {
            self.fhir_where(s, &f.resource_type, &f.criteria);
            if let Some(fs) = &f.facilities {
                in_list(s, "r.facility", fs);
            }
        }
        s.push(" ORDER BY r.last_updated DESC, r.id DESC LIMIT ");
        s.bind(f.limit.max(0));
        s.push(" OFFSET ");
        s.bind(f.offset.max(0));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("search FHIR resources"))?;
        let total: i64 = n
            .query()
            .fetch_one(&self.read)
            .await
            .map_err(q("count FHIR resources"))?
            .try_get("n")
            .map_err(q("count FHIR resources"))?;
        let rows = rows
            .iter()
            .map(|r| self.fhir_row(r))
            .collect::<Result<Vec<_>>>()?;
        Ok(FhirPage { rows, total })
    }

    /// The ids of the `resource_type` resources that have the term `param` = `value` in
    /// `facility` (e.g. the stored Patients with an identifier), at most 100.
    pub async fn fhir_ids_with_term(
        &self,
        resource_type: &str,
        param: &str,
        value: &str,
        facility: &str,
    ) -> Result<Vec<String>> {
        let criteria = [Criterion::Terms {
            param: param.to_owned(),
            any_of: vec![value.to_owned()],
        }];
        let found = self
            .fhir_match(resource_type, &criteria, Some(facility), 100)
            .await?;
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }

    /// The outcome a sink recorded for a message, if it applied one.
    pub async fn fhir_applied(&self, message_id: &str, sink: &str) -> Result<Option<String>> {
        let mut s = Sql::new("SELECT outcome FROM fhir_applied WHERE message_id = ".into());
        s.bind(message_id.to_owned());
        s.push(" AND sink = ");
        s.bind(sink.to_owned());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read a FHIR outcome"))?;
        row.map(|r| r.try_get("outcome"))
            .transpose()
            .map_err(|e| corrupt("an applied outcome", e))
    }
}
