//! The registry copy (see the module docs): experts with their state filed by department and
//! ICD-10 category, the agreements by requesting facility, kept current by the change counter.
//!
//! **Filed by key, as cards.** The copy files each expert in the domain's
//! [`CardIndex`](huizhen_domain::expert::CardIndex) (the same one `MemoryExpertIndex` uses): as
//! an `ExpertCard` (the facts the hard filters read, prepared once, inline) in a list per
//! department key and per category, sorted by id and shared. A lookup without a code hands
//! out the department's list itself (one reference count), with a code the shorter list
//! filtered on the cards; no per-id hash lookup, no set of ids to walk, no per-case work per
//! expert beyond the filters. A card is built when an expert's value changes (import, a new
//! version, a heartbeat, a load change), never per case.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use huizhen_domain::expert::{
    Agreement, CardIndex, CaseRequest, Expert, ExpertCard, Load, Presence,
};
use sqlx::Row;

use super::directory::agreement_from_row;
use super::{PrefetchedExperts, count, json_err, ms_to_time};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// The registry as one `Store` last saw it, kept in step with the database by the change
/// sequence (`expert_sync`, migration 0009): see [`Store::prefetch_experts`].
#[derive(Debug, Default)]
pub struct ExpertCache {
    registry: tokio::sync::Mutex<Registry>,
}

/// One expert in the copy: the version its facts were decoded from, and its current value
/// (facts and state).
#[derive(Debug)]
struct Filed {
    version: i64,
    expert: Arc<Expert>,
}

/// The in-memory copy of the registry: experts with their runtime state, filed as cards under
/// the department and ICD-category keys (the same keys as `expert_departments` /
/// `expert_expertise`: [`huizhen_domain::expert::department_keys`], `expertise_keys`), and the
/// agreements by requesting facility.
#[derive(Debug, Default)]
struct Registry {
    /// The change sequence this copy includes (0: nothing read yet).
    seq: i64,
    /// Experts by id.
    experts: HashMap<String, Filed>,
    /// The experts as cards under their keys, each list by id.
    cards: CardIndex,
    /// Agreements by requesting facility, then by id.
    agreements: HashMap<String, BTreeMap<String, Agreement>>,
    /// The requesting facility each agreement id is filed under.
    agreement_facility: HashMap<String, String>,
}

impl Registry {
    /// Files `expert` (facts and state) under `version`: a new card in the lists of its keys.
    /// Same version: the same facts, so the same keys. A new version first takes the old
    /// value out of the lists of its keys (its departments or expertise may have changed).
    fn put_expert(&mut self, version: i64, expert: Expert) {
        let expert = Arc::new(expert);
        if let Some(old) = self.experts.get(&expert.id)
            && old.version != version
        {
            self.cards.unfile(&old.expert);
        }
        self.cards.file(&ExpertCard::new(expert.clone()));
        self.experts
            .insert(expert.id.clone(), Filed { version, expert });
    }

    fn put_agreement(&mut self, a: Agreement) {
        let id = a.id.trim().to_owned();
        let facility = a.requesting_facility.trim().to_owned();
        if let Some(old) = self.agreement_facility.insert(id.clone(), facility.clone())
            && let Some(m) = self.agreements.get_mut(&old)
        {
            m.remove(&id);
        }
        self.agreements.entry(facility).or_default().insert(id, a);
    }

    /// The candidates of `case`, by id: the experts filed under its department and, when it
    /// has an ICD-10 code, under the code's category (what the SQL index lookup returns).
    fn candidates(&self, case: &CaseRequest) -> Arc<Vec<ExpertCard>> {
        self.cards.lookup(case)
    }
}

/// The runtime state of one changed expert row.
struct StateRow {
    id: String,
    version: i64,
    heartbeat: Option<i64>,
    open: i64,
    sessions: i64,
}

fn with_state(facts: &Expert, row: &StateRow) -> Expert {
    let mut e = facts.clone();
    e.presence = Presence {
        last_heartbeat: row.heartbeat.and_then(ms_to_time),
    };
    e.load = Load {
        open_consultations: count(row.open),
        sessions_today: count(row.sessions),
    };
    e
}

impl Store {
    /// Reads what matching `case` needs: the candidate experts (by the department, and the
    /// ICD-10 category when the case has a code) with their current presence and load, and
    /// the agreements of the requesting facility.
    ///
    /// From the store's in-memory copy of the registry, brought up to date first: one
    /// one-row read of the change sequence, and only when it moved, the expert and agreement
    /// rows stamped after the copy (their JSON bodies only for a new version). No scan, and
    /// in the steady state no candidate row is read at all.
    pub async fn prefetch_experts(&self, case: &CaseRequest) -> Result<PrefetchedExperts> {
        let mut registry = self.experts_cache.registry.lock().await;
        self.sync_experts(&mut registry).await?;
        let experts = registry.candidates(case);
        let agreements = registry
            .agreements
            .get(case.requesting_facility.trim())
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        Ok(PrefetchedExperts {
            experts,
            agreements,
        })
    }

    /// Brings `registry` up to the database's change sequence.
    async fn sync_experts(&self, registry: &mut Registry) -> Result<()> {
        let row = sqlx::query("SELECT seq FROM expert_sync WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(q("read expert change sequence"))?;
        let seq: i64 = row
            .try_get("seq")
            .map_err(q("decode expert change sequence"))?;
        if seq == registry.seq {
            return Ok(());
        }
        // Rows stamped after the copy. One committed later than the counter read is applied
        // now and again next time (applying is idempotent); none stamped ≤ `seq` can still be
        // uncommitted, as writers hold the counter row until they commit.
        let mut s = Sql::new(
            "SELECT id, version, last_heartbeat, open_consultations, sessions_today FROM experts WHERE seq > "
                .into(),
        );
        s.bind(registry.seq);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read changed experts"))?;
        let mut changed = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = || q("decode changed expert");
            changed.push(StateRow {
                id: r.try_get("id").map_err(d())?,
                version: r.try_get("version").map_err(d())?,
                heartbeat: r.try_get("last_heartbeat").map_err(d())?,
                open: r.try_get("open_consultations").map_err(d())?,
                sessions: r.try_get("sessions_today").map_err(d())?,
            });
        }
        let mut facts: HashMap<String, (i64, Expert)> = HashMap::new();
        let missing: Vec<&str> = changed
            .iter()
            .filter(|r| {
                registry
                    .experts
                    .get(&r.id)
                    .is_none_or(|f| f.version != r.version)
            })
            .map(|r| r.id.as_str())
            .collect();
        for chunk in missing.chunks(500) {
            let mut s = Sql::new("SELECT id, version, body FROM experts WHERE id IN (".into());
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(*id);
            }
            s.push(")");
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("read expert bodies"))?;
            for r in &rows {
                let d = || q("decode expert body");
                let id: String = r.try_get("id").map_err(d())?;
                let version: i64 = r.try_get("version").map_err(d())?;
                let body: String = r.try_get("body").map_err(d())?;
                let e: Expert =
                    serde_json::from_str(&body).map_err(|err| json_err("expert", &id, &err))?;
                facts.insert(id, (version, e));
            }
        }
        for row in &changed {
            // The body read may be of a newer version than the state row (an import between
            // the two reads): file it under the body's version, so the next sync (which sees
            // that import's stamp) does not take it for current when it is not.
            let (version, e) = match facts.get(&row.id) {
                Some((v, e)) => (*v, with_state(e, row)),
                None => match registry.experts.get(&row.id) {
                    Some(f) => (f.version, with_state(&f.expert, row)),
                    None => continue,
                },
            };
            registry.put_expert(version, e);
        }
        let mut s = Sql::new("SELECT id, body FROM expert_agreements WHERE seq > ".into());
        s.bind(registry.seq);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read changed agreements"))?;
        for r in &rows {
            registry.put_agreement(agreement_from_row(r)?);
        }
        registry.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use huizhen_domain::expert::{IcdCode, Title};

    use super::*;

    fn expert(id: &str, departments: &[&str], codes: &[&str]) -> Expert {
        Expert {
            id: id.into(),
            name: id.into(),
            facility: "H-1".into(),
            departments: departments.iter().map(|d| (*d).to_owned()).collect(),
            expertise: codes.iter().map(|c| IcdCode::parse(c).unwrap()).collect(),
            title: Title::Chief,
            independent_practice_since: NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
            licence_verified: true,
            registration_active: true,
            multi_site_filings: vec![],
            languages: vec![],
            schedule: Default::default(),
            presence: Presence::default(),
            load: Load::default(),
            response: Default::default(),
        }
    }

    fn case(department: &str, code: Option<&str>) -> CaseRequest {
        CaseRequest {
            id: "t".into(),
            department: department.into(),
            icd10: code.map(|c| IcdCode::parse(c).unwrap()),
            min_title: None,
            urgency: Default::default(),
            requesting_facility: "H-1".into(),
            window: None,
            require_external: false,
            exclude_experts: vec![],
            follow_up_of: None,
            preferred_expert: None,
            language: None,
        }
    }

    fn ids(v: &[ExpertCard]) -> Vec<&str> {
        v.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn lookups_return_the_filed_experts_by_id_whichever_list_is_walked() {
        let mut r = Registry::default();
        // Filed out of id order: the lists are kept sorted.
        for (id, dept, codes) in [
            ("e-3", "03.02", &["I25.1"][..]),
            ("e-1", "03.01", &["I25", "I20"][..]),
            ("e-2", "03.02", &["J45"][..]),
            ("e-4", "04.01", &["I25.9"][..]),
        ] {
            r.put_expert(1, expert(id, &[dept], codes));
        }
        assert_eq!(ids(&r.candidates(&case("03", None))), ["e-1", "e-2", "e-3"]);
        assert_eq!(ids(&r.candidates(&case(" 03.02 ", None))), ["e-2", "e-3"]);
        // Category I25 (3 experts) against department 03 (3): the department list is walked.
        assert_eq!(
            ids(&r.candidates(&case("03", Some("I25.10")))),
            ["e-1", "e-3"]
        );
        // Category I20 (1 expert) against department 03 (3): the category list is walked.
        assert_eq!(ids(&r.candidates(&case("03", Some("I20.0")))), ["e-1"]);
        assert!(r.candidates(&case("03.02", Some("I20.0"))).is_empty());
        assert!(r.candidates(&case("05", None)).is_empty());
        assert!(r.candidates(&case("03", Some("K35"))).is_empty());
    }

    #[test]
    fn new_state_swaps_the_card_and_new_facts_move_the_keys() {
        let mut r = Registry::default();
        r.put_expert(1, expert("e-1", &["03.02"], &["I25"]));
        r.put_expert(1, expert("e-2", &["03.02"], &["I25"]));
        let before = r.candidates(&case("03", Some("I25.1")));
        let whole = r.candidates(&case("03", None));
        // A heartbeat: same version, new state, in every list the expert is in.
        let mut busy = expert("e-1", &["03.02"], &["I25"]);
        busy.load.open_consultations = 4;
        r.put_expert(1, busy);
        for c in [
            case("03", None),
            case("03.02", None),
            case("03", Some("I25.1")),
        ] {
            let got = r.candidates(&c);
            assert_eq!(ids(&got), ["e-1", "e-2"]);
            assert_eq!(got[0].load.open_consultations, 4, "{c:?}");
        }
        // What earlier lookups were given does not change under them.
        assert_eq!(before[0].load.open_consultations, 0);
        assert_eq!(whole[0].load.open_consultations, 0);
        // A new version of the facts: e-1 leaves 03.02 and I25 for 04.01 and J45.
        r.put_expert(2, expert("e-1", &["04.01"], &["J45"]));
        assert_eq!(ids(&r.candidates(&case("03", None))), ["e-2"]);
        assert_eq!(ids(&r.candidates(&case("03", Some("I25.1")))), ["e-2"]);
        assert_eq!(ids(&r.candidates(&case("04", Some("J45.0")))), ["e-1"]);
        // Lists left empty are dropped: 03, 03.02, 04, 04.01 / I25, J45; then 05 / K35.
        assert_eq!(r.cards.key_counts(), (4, 2));
        r.put_expert(3, expert("e-1", &["05"], &["K35"]));
        assert_eq!(r.cards.key_counts(), (3, 2));
        assert_eq!(r.experts.len(), 2);
    }
}
