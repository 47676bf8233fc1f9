//! The case library: de-identified records (the domain's `CaseRecord`), with the columns and
//! code rows a search or a recommendation pre-selects on. The domain applies the exact rules
//! to what is loaded; the pre-selection only ever keeps more.

use huizhen_domain::case_library::{
    CaseLibrary, CaseLibraryError, CaseQuery, CaseRecord, CompletedCase, DeidError, chapter,
    deidentify,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::{exec, json_err};
use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// Most cases a recommendation ranks: the most recent candidates (by completion) that share a
/// department or an ICD-10 chapter with the doctor. Older ones are not considered.
pub const MAX_RECOMMEND_CANDIDATES: i64 = 20_000;

/// Rows read per page while searching.
const PAGE: i64 = 1000;

/// The top-level segment of a department code (`03` of `03.02`), as the domain compares it.
fn top_level(department: &str) -> &str {
    let d = department.trim();
    d.split('.').next().unwrap_or(d)
}

/// Inserts `record` and its code rows on `conn` (inside the caller's transaction). `false` when
/// the case is already in the library (the stored record stays).
pub async fn case_library_insert(conn: &mut AnyConnection, record: &CaseRecord) -> Result<bool> {
    let body = serde_json::to_string(record)
        .map_err(|e| json_err("encode case record", &record.case_id, &e))?;
    let mut s = Sql::new(
        "INSERT INTO case_library (case_id, completed_on, department, dept_top, misdiagnosis, rare_disease, emergency, expert_id, body, added_at) VALUES ("
            .into(),
    );
    s.bind(record.case_id.as_str());
    s.push(", ");
    s.bind(record.completed_on.format("%Y-%m-%d").to_string());
    s.push(", ");
    s.bind(record.department.as_str());
    s.push(", ");
    s.bind(top_level(&record.department));
    for flag in [
        record.flags.misdiagnosis,
        record.flags.rare_disease,
        record.flags.emergency,
    ] {
        s.push(", ");
        s.bind(i64::from(flag));
    }
    s.push(", ");
    s.bind(record.expert_id.as_str());
    s.push(", ");
    s.bind(body);
    s.push(", ");
    s.bind(crate::message::now_ms());
    s.push(") ON CONFLICT (case_id) DO NOTHING");
    if exec(conn, s, "add library case").await? == 0 {
        return Ok(false);
    }
    for code in &record.diagnoses {
        let mut s = Sql::new(
            "INSERT INTO case_library_codes (case_id, code, category, chapter) VALUES (".into(),
        );
        s.bind(record.case_id.as_str());
        s.push(", ");
        s.bind(code.normalized());
        s.push(", ");
        s.bind(code.category());
        s.push(", ");
        s.bind(chapter(code).map(i64::from));
        s.push(") ON CONFLICT (case_id, code) DO NOTHING");
        exec(conn, s, "index library case").await?;
    }
    Ok(true)
}

/// The ASCII form of a code prefix when folding full-width forms, dots and spaces makes it
/// plain letters and digits (then the domain's normalised prefix is exactly this); `None`
/// otherwise (no pre-selection by code: the domain decides alone).
fn ascii_prefix(prefix: &str) -> Option<String> {
    let folded: String = prefix
        .trim()
        .chars()
        .map(|c| match c {
            '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
            _ => c,
        })
        .filter(|c| !matches!(c, '.' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (!folded.is_empty() && folded.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(folded)
}

impl Store {
    /// De-identifies `case` (the domain's `deidentify`) and adds the record, with `audit` (when
    /// given) in the same transaction. The identified case is never stored. `Ok(Ok(false))`
    /// when the case was already in the library; the inner `Err` when it cannot be
    /// de-identified (a blank field, no diagnosis).
    pub async fn case_library_add(
        &self,
        case: &CompletedCase,
        audit: Option<&AuditEvent>,
    ) -> Result<Result<bool, DeidError>> {
        let record = match deidentify(case) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin library case"))?;
        let added = case_library_insert(&mut tx, &record).await?;
        if added && let Some(e) = audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit library case"))?;
        Ok(Ok(added))
    }

    fn case_from_row(r: &AnyRow) -> Result<CaseRecord> {
        let id: String = r.try_get("case_id").map_err(q("decode library case"))?;
        let body: String = r.try_get("body").map_err(q("decode library case"))?;
        serde_json::from_str(&body).map_err(|e| json_err("library case", &id, &e))
    }

    /// The search: at most `limit` records matching `query`, most recent first (the domain's
    /// order and rules). The inner `Err` is a query the domain refuses (a bad code prefix).
    pub async fn search_cases(
        &self,
        query: &CaseQuery,
        limit: usize,
    ) -> Result<Result<Vec<CaseRecord>, CaseLibraryError>> {
        // The domain refuses a bad prefix; ask it before reading anything.
        if let Err(e) = CaseLibrary::new().search(query) {
            return Ok(Err(e));
        }
        let mut library = CaseLibrary::new();
        let mut offset = 0_i64;
        loop {
            let mut s =
                Sql::new("SELECT case_id, completed_on, body FROM case_library c WHERE 1=1".into());
            for (flag, col) in [
                (query.flags.misdiagnosis, "misdiagnosis"),
                (query.flags.rare_disease, "rare_disease"),
                (query.flags.emergency, "emergency"),
            ] {
                if flag {
                    s.push(&format!(" AND c.{col} = 1"));
                }
            }
            if let Some(d) = query.department.as_deref() {
                s.push(" AND c.dept_top = ");
                s.bind(top_level(d).to_owned());
            }
            if let Some(p) = query.icd10_prefix.as_deref().and_then(ascii_prefix) {
                s.push(" AND EXISTS (SELECT 1 FROM case_library_codes k WHERE k.case_id = c.case_id AND k.code LIKE ");
                s.bind(format!("{p}%"));
                s.push(")");
            }
            s.push(" ORDER BY c.completed_on DESC, c.case_id LIMIT ");
            s.bind(PAGE);
            s.push(" OFFSET ");
            s.bind(offset);
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("search library"))?;
            let last_date: Option<String> = rows
                .last()
                .map(|r| r.try_get("completed_on"))
                .transpose()
                .map_err(q("decode library case"))?;
            for r in &rows {
                // Ids are unique in the table.
                let _ = library.add_record(Self::case_from_row(r)?);
            }
            let found = match library.search(query) {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            };
            // Pages come in the domain's date order: once `limit` results are in and the page
            // ended on an older day than the last of them, nothing unread can come before it.
            let done = rows.len() < PAGE as usize
                || found.get(limit.saturating_sub(1)).is_some_and(|r| {
                    last_date
                        .as_deref()
                        .is_some_and(|d| d < r.completed_on.format("%Y-%m-%d").to_string().as_str())
                });
            if done {
                return Ok(Ok(found.into_iter().take(limit).cloned().collect()));
            }
            offset += PAGE;
        }
    }

    /// The candidates of a recommendation: cases whose top-level department is one of `tops`,
    /// or with a diagnosis in one of `categories` or ICD-10 `chapters` (every case the domain
    /// can score above zero for a doctor of those departments and codes), the most recent
    /// [`MAX_RECOMMEND_CANDIDATES`].
    pub async fn recommend_candidates(
        &self,
        tops: &[String],
        categories: &[String],
        chapters: &[u8],
    ) -> Result<Vec<CaseRecord>> {
        if tops.is_empty() && categories.is_empty() && chapters.is_empty() {
            return Ok(Vec::new());
        }
        let mut s = Sql::new("SELECT case_id, body FROM case_library c WHERE 1=0".into());
        let list = |s: &mut Sql, values: Vec<String>| {
            for (i, v) in values.into_iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(v);
            }
        };
        if !tops.is_empty() {
            s.push(" OR c.dept_top IN (");
            list(&mut s, tops.to_vec());
            s.push(")");
        }
        if !categories.is_empty() {
            s.push(" OR EXISTS (SELECT 1 FROM case_library_codes k WHERE k.case_id = c.case_id AND k.category IN (");
            list(&mut s, categories.to_vec());
            s.push("))");
        }
        if !chapters.is_empty() {
            s.push(" OR EXISTS (SELECT 1 FROM case_library_codes k WHERE k.case_id = c.case_id AND k.chapter IN (");
            for (i, ch) in chapters.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(i64::from(*ch));
            }
            s.push("))");
        }
        s.push(" ORDER BY c.completed_on DESC, c.case_id LIMIT ");
        s.bind(MAX_RECOMMEND_CANDIDATES);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read recommendation candidates"))?;
        rows.iter().map(Self::case_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pre-selection's prefix is the domain's normalised prefix whenever it is plain ASCII
    /// (so `LIKE 'P%'` keeps every case the domain's search keeps), and absent otherwise.
    #[test]
    fn code_prefixes_fold_like_the_domain_or_not_at_all() {
        for (text, want) in [
            ("I25", Some("I25")),
            ("i25.1", Some("I251")),
            ("ｉ２５．１", Some("I251")),
            (" I 2 ", Some("I2")),
            ("①", None),
            ("心", None),
            ("I25%", None),
            ("", None),
        ] {
            assert_eq!(ascii_prefix(text).as_deref(), want, "{text:?}");
        }
        assert_eq!(top_level(" 03.02 "), "03");
        assert_eq!(top_level("05"), "05");
    }
}
