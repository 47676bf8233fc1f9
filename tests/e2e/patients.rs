//! Patient identity (issue 14): the identity index on SQLite and PostgreSQL; an ADT through a
//! pipeline (`hl7_map` + `match_patient`) linked across facilities with its explanation
//! visible through `/api/patients`; the review queue; facility scope; and `huizhen patients`.

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::State;
use huizhen_core::security::{Role, Security, SecurityConfig};
use huizhen_core::store::Store;
use huizhen_core::store::identity::ChangeBy;
use huizhen_domain::identity::{
    Demographics, Grade, OtherId, PersonName, PostalAddress, blocking_keys, normalize,
};
use huizhen_domain::patient::Sex;
use serde_json::{Value, json};

use crate::support::{Backend, both_backends, fresh_db, loaded, store};

both_backends!(
    upsert_prefetch_and_certain_link,
    probable_goes_to_review_accept_and_reject,
    merge_and_unmerge,
    unlink_relink_and_undo,
    sealed_demographics_and_blind_keys,
    turning_encryption_on_then_reseal,
    a_batch_links_as_one_by_one_does,
    records_of_an_older_version_get_their_keys,
    the_index_follows_changes_made_by_another_process,
);

/// A person as a facility knows them.
fn person(
    facility: &str,
    local_id: &str,
    name: &str,
    resident_id: Option<&str>,
    birth: &str,
    phone: Option<&str>,
) -> Demographics {
    Demographics {
        facility: facility.into(),
        local_id: local_id.into(),
        identifiers: resident_id
            .map(|v| vec![OtherId::ResidentId { value: v.into() }])
            .unwrap_or_default(),
        names: vec![PersonName::text(name)],
        birth_date: Some(birth.into()),
        sex: Some(if resident_id.is_some() {
            Sex::Female
        } else {
            Sex::Male
        }),
        phones: phone.map(|p| vec![p.into()]).unwrap_or_default(),
        addresses: vec![PostalAddress {
            text: "广西南宁市青秀区民族大道100号".into(),
            postal_code: Some("530000".into()),
        }],
    }
}

/// GB 11643's example number: born 1949-12-31, female.
const RID: &str = "11010519491231002X";

fn by(actor: &str) -> ChangeBy<'_> {
    ChangeBy {
        actor,
        reason: "test",
        audit: None,
    }
}

async fn link(s: &Store, d: &Demographics) -> huizhen_core::patients::Linked {
    let m = huizhen_core::patients::default_matcher();
    huizhen_core::patients::link(s, &m, d, "test", |_| {
        unreachable!("no auto-link by default")
    })
    .await
    .unwrap()
}

/// Who each record ended up with, as groups of record indexes (person ids differ between
/// stores; the partition must not).
fn partition(linked: &[huizhen_core::patients::Linked]) -> Vec<usize> {
    let mut first_of: std::collections::HashMap<i64, usize> = Default::default();
    linked
        .iter()
        .enumerate()
        .map(|(i, l)| *first_of.entry(l.recorded.person_id).or_insert(i))
        .collect()
}

/// A bulk import (batches in one transaction, each record decided against the index and the
/// records before it in its batch) links exactly as linking the records one at a time does:
/// same grades, same scores, same people; a facility identifier repeated inside a batch is an
/// update of the first.
async fn a_batch_links_as_one_by_one_does(b: Backend) {
    let (Some(db_one), Some(db_batch)) = (fresh_db(b).await, fresh_db(b).await) else {
        return;
    };
    let (one, batched) = (store(&db_one).await, store(&db_batch).await);
    let mut records: Vec<_> =
        huizhen_domain::identity::synth::generate(huizhen_domain::identity::synth::SynthConfig {
            people: 150,
            seed: 7,
            ..Default::default()
        })
        .into_iter()
        .map(|r| normalize(&r.demographics))
        .collect();
    // A re-registration of an early record (same facility and local id, new phone) inside the
    // second batch.
    let mut again = records[3].clone();
    again.phones = vec!["13900000000".into()];
    records.insert(70, again);
    let m = huizhen_core::patients::default_matcher();
    let no_audit =
        |_: &huizhen_domain::identity::MatchDecision| -> huizhen_core::store::audit::AuditEvent {
            unreachable!("no auto-link on a score by default")
        };
    let mut singly = Vec::new();
    for r in &records {
        singly.extend(
            huizhen_core::patients::link_normalized(
                &one,
                &m,
                std::slice::from_ref(r),
                "t",
                no_audit,
            )
            .await
            .unwrap(),
        );
    }
    let mut in_batches = Vec::new();
    for chunk in records.chunks(64) {
        in_batches.extend(
            huizhen_core::patients::link_normalized(&batched, &m, chunk, "t", no_audit)
                .await
                .unwrap(),
        );
    }
    assert_eq!(singly.len(), in_batches.len());
    let linked = singly
        .iter()
        .filter(|l| l.decision.grade == Grade::Certain)
        .count();
    let reviewed = singly
        .iter()
        .filter(|l| !l.recorded.reviews.is_empty())
        .count();
    assert!(
        linked > 10 && reviewed > 0,
        "the set exercises links ({linked}) and reviews ({reviewed})"
    );
    for (i, (a, z)) in singly.iter().zip(&in_batches).enumerate() {
        assert_eq!(a.decision.grade, z.decision.grade, "record {i}: grade");
        assert_eq!(
            a.decision
                .candidates
                .iter()
                .map(|c| (c.local_id.clone(), c.score))
                .collect::<Vec<_>>(),
            z.decision
                .candidates
                .iter()
                .map(|c| (c.local_id.clone(), c.score))
                .collect::<Vec<_>>(),
            "record {i}: candidates"
        );
        assert_eq!(
            a.recorded.new_person, z.recorded.new_person,
            "record {i}: new person"
        );
        assert_eq!(
            a.recorded.reviews.len(),
            z.recorded.reviews.len(),
            "record {i}: reviews"
        );
    }
    assert_eq!(partition(&singly), partition(&in_batches));
    // The re-registration updated the record in place.
    assert_eq!(
        in_batches[70].recorded.identity_id,
        in_batches[3].recorded.identity_id
    );
    assert_eq!(
        in_batches[70].recorded.previous_person,
        Some(in_batches[3].recorded.person_id)
    );
    assert_eq!(
        one.identity_counts().await.unwrap(),
        batched.identity_counts().await.unwrap()
    );
    // Every decision is in the history with its explanation.
    let history = batched
        .identity_history(in_batches[0].recorded.identity_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, "match");
}

/// Records written before the keys moved into their rows (`keys_seq = 0`) get their keys
/// computed from their demographics on first use, and are found.
async fn records_of_an_older_version_get_their_keys(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let first = link(
        &s,
        &person("hosp-a", "A1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE identities SET keys = '', keys_seq = 0")
        .execute(&pool)
        .await
        .unwrap();
    // A new engine process (a fresh store) on that database.
    let s = store(&db).await;
    let again = link(
        &s,
        &person("hosp-b", "B1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    assert_eq!(again.decision.grade, Grade::Certain);
    assert_eq!(again.recorded.person_id, first.recorded.person_id);
    use sqlx::Row;
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM identities WHERE keys_seq = 0")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// Each engine process keeps the blocking index in memory: records linked, and links changed,
/// by another process on the same database are seen at the next lookup.
async fn the_index_follows_changes_made_by_another_process(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let (one, other) = (store(&db).await, store(&db).await);
    let a = link(
        &one,
        &person("hosp-a", "A1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    // The other process links a record of the same person: it sees the first one.
    let b1 = link(
        &other,
        &person("hosp-b", "B1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    assert_eq!(b1.decision.grade, Grade::Certain);
    assert_eq!(b1.recorded.person_id, a.recorded.person_id);
    // The other process unlinks A1 (a person of its own now); the first sees the new link.
    let (_, moved_to) = other
        .identity_relink("hosp-a", "A1", None, "unlink", by("reviewer"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(moved_to, a.recorded.person_id);
    let c1 = link(
        &one,
        &person("hosp-c", "C1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    let persons: std::collections::BTreeSet<u64> =
        c1.decision.candidates.iter().map(|c| c.person_id).collect();
    assert!(
        persons.contains(&(moved_to as u64)) && persons.contains(&(a.recorded.person_id as u64)),
        "both persons are candidates: {persons:?}"
    );
}

async fn upsert_prefetch_and_certain_link(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let a = normalize(&person(
        "hosp-a",
        "A1",
        "张伟",
        Some(RID),
        "1949-12-31",
        None,
    ));
    let (id_a, person_a) = s.identity_upsert(&a, None).await.unwrap();
    // Upserting the same record again keeps its row.
    let (again, _) = s.identity_upsert(&a, Some(person_a as u64)).await.unwrap();
    assert_eq!(again, id_a);
    // The keys of another facility's record of the same person find it; another facility's
    // filter does not.
    let b_rec = normalize(&person("hosp-b", "B7", "张伟", Some(RID), "19491231", None));
    let keys = blocking_keys(&b_rec);
    let found = s.identity_prefetch(&keys, 10, None).await.unwrap();
    assert_eq!(found.entries.len(), 1);
    assert_eq!(found.entries[0].person.local_id, "A1");
    assert_eq!(*found.entries[0].person, a, "demographics round-trip");
    let none = s
        .identity_prefetch(&keys, 10, Some(&["hosp-c".to_owned()]))
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    // Linking: a resident id with the same name is certain.
    let linked = link(
        &s,
        &person("hosp-b", "B7", "张伟", Some(RID), "19491231", None),
    )
    .await;
    assert_eq!(linked.decision.grade, Grade::Certain);
    assert_eq!(linked.recorded.person_id, person_a);
    assert!(!linked.recorded.new_person);
    let xref = s.identities_of_person(person_a, None).await.unwrap();
    let ids: Vec<(&str, &str)> = xref
        .iter()
        .map(|r| (r.facility.as_str(), r.local_id.as_str()))
        .collect();
    assert_eq!(ids, [("hosp-a", "A1"), ("hosp-b", "B7")]);
    let history = s
        .identity_history(linked.recorded.identity_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, "match");
    assert_eq!(history[0].grade.as_deref(), Some("certain"));
    let d = history[0].decision.as_ref().unwrap();
    assert_eq!(d["candidates"][0]["rule"], "resident_id_and_name");
    assert!(
        d["candidates"][0]["contributions"]
            .as_array()
            .is_some_and(|c| c.len() > 3),
        "{d}"
    );
    // A second delivery of the same record changes nothing.
    let again = link(
        &s,
        &person("hosp-b", "B7", "张伟", Some(RID), "19491231", None),
    )
    .await;
    assert_eq!(again.recorded.person_id, person_a);
    assert_eq!(s.identity_counts().await.unwrap(), (2, 1));
    // The pairs and links of the index.
    let pairs = s.identity_pairs(Grade::Possible).await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (pairs[0].local_id_a.as_str(), pairs[0].local_id_b.as_str()),
        ("A1", "B7")
    );
    assert_eq!(pairs[0].grade, Grade::Certain);
}

async fn probable_goes_to_review_accept_and_reject(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let a = link(
        &s,
        &person(
            "hosp-a",
            "A3",
            "李四",
            None,
            "1980-05-06",
            Some("13900001111"),
        ),
    )
    .await;
    assert_eq!(a.decision.grade, Grade::New);
    // The same name, birth date and phone without an identifier: probable, never linked.
    let b1 = link(
        &s,
        &person(
            "hosp-b",
            "B3",
            "李四",
            None,
            "1980-05-06",
            Some("13900001111"),
        ),
    )
    .await;
    assert_eq!(b1.decision.grade, Grade::Probable);
    assert_ne!(b1.recorded.person_id, a.recorded.person_id);
    assert_eq!(b1.recorded.reviews.len(), 1);
    let pending = s
        .identity_reviews(Some("pending"), None, 100)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let r = &pending[0];
    assert_eq!((r.facility.as_str(), r.local_id.as_str()), ("hosp-b", "B3"));
    assert_eq!(r.candidate_person, a.recorded.person_id);
    assert_eq!(r.grade, "probable");
    assert!(r.decision["contributions"].is_array());
    // Scoped lists.
    assert!(
        s.identity_reviews(None, Some(&["hosp-a".to_owned()]), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Accept: linked; a second decision is refused.
    let done = s
        .identity_review_decide(r.id, true, by("reviewer"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, "accepted");
    assert_eq!(done.decided_by.as_deref(), Some("reviewer"));
    assert_eq!(done.person_id, a.recorded.person_id);
    assert!(
        s.identity_review_decide(r.id, false, by("reviewer"))
            .await
            .unwrap()
            .is_none()
    );
    // A third record, rejected: stays apart.
    let c = link(
        &s,
        &person(
            "hosp-c",
            "C3",
            "李四",
            None,
            "1980-05-06",
            Some("13900001111"),
        ),
    )
    .await;
    // Two records of one person now: the best is probable again.
    assert_eq!(c.decision.grade, Grade::Probable);
    let review = c.recorded.reviews[0];
    let rejected = s
        .identity_review_decide(review, false, by("reviewer"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rejected.state, "rejected");
    assert_eq!(rejected.person_id, c.recorded.person_id);
    let history = s.identity_history(c.recorded.identity_id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| h.action.as_str())
            .collect::<Vec<_>>(),
        ["match", "reject"]
    );
    // A new decision about the rejected record does not reopen the rejected review.
    let again = link(
        &s,
        &person(
            "hosp-c",
            "C3",
            "李四",
            None,
            "1980-05-06",
            Some("13900001111"),
        ),
    )
    .await;
    assert!(again.recorded.reviews.is_empty());
    assert!(
        s.identity_reviews(Some("pending"), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn merge_and_unmerge(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let old = normalize(&person("hosp-a", "OLD", "王五", None, "1970-01-02", None));
    let new = normalize(&person("hosp-a", "NEW", "王五", None, "1970-01-02", None));
    let other = normalize(&person("hosp-b", "X", "王五", None, "1970-01-02", None));
    let (old_id, p_old) = s.identity_upsert(&old, None).await.unwrap();
    let (_, p_new) = s.identity_upsert(&new, None).await.unwrap();
    let (_, _) = s.identity_upsert(&other, Some(p_old as u64)).await.unwrap();
    let (batch, moved) = s
        .identity_merge("hosp-a", "OLD", p_new, by("pipeline:adt"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved, 2);
    let now = s.identities_of_person(p_new, None).await.unwrap();
    let got: Vec<(&str, bool)> = now
        .iter()
        .map(|r| (r.local_id.as_str(), r.active))
        .collect();
    assert_eq!(got, [("NEW", true), ("X", true), ("OLD", false)]);
    assert!(
        s.identities_of_person(p_old, None)
            .await
            .unwrap()
            .is_empty()
    );
    // The retired record is no longer a candidate.
    let found = s
        .identity_prefetch(&blocking_keys(&old), 10, None)
        .await
        .unwrap();
    assert!(found.entries.iter().all(|e| e.person.local_id != "OLD"));
    // Merging again is a no-op; an unknown id too.
    assert!(
        s.identity_merge("hosp-a", "OLD", p_new, by("pipeline:adt"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.identity_merge("hosp-a", "NOPE", p_new, by("pipeline:adt"))
            .await
            .unwrap()
            .is_none()
    );
    // Unmerge: everything back as it was.
    let (_, back) = s.identity_undo(&batch, by("admin")).await.unwrap().unwrap();
    assert_eq!(back, 2);
    let before = s.identities_of_person(p_old, None).await.unwrap();
    let got: Vec<(&str, bool)> = before
        .iter()
        .map(|r| (r.local_id.as_str(), r.active))
        .collect();
    assert_eq!(got, [("OLD", true), ("X", true)]);
    assert!(
        s.identity_undo(&batch, by("admin"))
            .await
            .unwrap()
            .is_none()
    );
    let h = s.identity_history(old_id).await.unwrap();
    assert_eq!(
        h.iter()
            .map(|h| (h.action.as_str(), h.undone))
            .collect::<Vec<_>>(),
        [("merge", true), ("undo", false)]
    );
}

async fn unlink_relink_and_undo(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let a = link(
        &s,
        &person("hosp-a", "A1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    let b1 = link(
        &s,
        &person("hosp-b", "B1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    let p = a.recorded.person_id;
    assert_eq!(b1.recorded.person_id, p);
    let (batch, alone) = s
        .identity_relink("hosp-b", "B1", None, "unlink", by("admin"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(alone, p);
    assert_eq!(s.identities_of_person(p, None).await.unwrap().len(), 1);
    s.identity_undo(&batch, by("admin")).await.unwrap().unwrap();
    assert_eq!(s.identities_of_person(p, None).await.unwrap().len(), 2);
    let (_, again) = s
        .identity_relink("hosp-b", "B1", None, "unlink", by("admin"))
        .await
        .unwrap()
        .unwrap();
    let (_, to) = s
        .identity_relink("hosp-b", "B1", Some(p), "relink", by("admin"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to, p);
    assert_ne!(again, p);
    assert!(
        s.identity_relink("hosp-b", "NOPE", None, "unlink", by("admin"))
            .await
            .unwrap()
            .is_none()
    );
    let links = s.identity_links(None).await.unwrap();
    assert_eq!(links.len(), 2);
    assert!(links.iter().all(|r| r.person_id == p));
}

async fn sealed_demographics_and_blind_keys(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let ring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: db.dir.path().join("keys"),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let s = store(&db).await.with_keyring(Some(ring));
    let a = link(
        &s,
        &person("hosp-a", "A1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    let b1 = link(
        &s,
        &person("hosp-b", "B1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    assert_eq!(b1.decision.grade, Grade::Certain);
    assert_eq!(b1.recorded.person_id, a.recorded.person_id);
    // In the database: no name, no resident id.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    use sqlx::Row;
    for r in sqlx::query("SELECT person FROM identities")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        let p: String = r.get("person");
        assert!(p.starts_with("hze:"), "{p}");
    }
    // The blocking keys are hashes of their blind indexes, not of the keys themselves.
    let fnv = |text: &str| {
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let plain_key = format!("{:016x}", fnv(&format!("rid:{RID}")));
    for r in sqlx::query("SELECT keys FROM identities")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        let k: String = r.get("keys");
        assert!(!k.is_empty() && k.len().is_multiple_of(16), "{k}");
        assert!(!k.contains(&plain_key), "a plain key's hash is stored: {k}");
    }
    // Without the keys, the demographics do not open.
    let plain = store(&db).await;
    assert!(plain.identity_person("hosp-a", "A1").await.is_err());
}

async fn turning_encryption_on_then_reseal(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let plain = store(&db).await;
    let a = link(
        &plain,
        &person("hosp-a", "A1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    let ring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: db.dir.path().join("keys"),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let s = store(&db).await.with_keyring(Some(ring));
    // Records in clear under a keyring: a clear error that names the fix, not a silent miss.
    let err = s
        .identity_person("hosp-a", "A1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("huizhen patients reseal"), "{err}");
    assert!(!err.contains("A1"), "no local id in errors: {err}");
    assert_eq!(s.identity_reseal_batch(0, 10).await.unwrap(), (1, 1, None));
    assert_eq!(s.identity_reseal_batch(0, 10).await.unwrap(), (1, 0, None));
    // Found again through the blind-indexed keys.
    let b1 = link(
        &s,
        &person("hosp-b", "B1", "张伟", Some(RID), "1949-12-31", None),
    )
    .await;
    assert_eq!(b1.decision.grade, Grade::Certain);
    assert_eq!(b1.recorded.person_id, a.recorded.person_id);
    assert!(plain.identity_person("hosp-a", "A1").await.is_err());
}

// --- Through the engine: an ADT over HTTP, the API, facility scope.

const SECRET: &str = "e2e-patients-secret-0123456789abcdef";

fn token(role: Role, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        &format!("{}@{facility}", role.as_str()),
        role,
        facility,
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

fn pipeline(name: &str, facility: &str, extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\nfacility: {facility}\nsource:\n  http: {{ path: /in/{name}, kind: hl7v2 }}\nsteps:\n  - hl7_map: {{}}\n  - match_patient: {{ {extra} }}\n  - set: {{ body: {{ \"matched.person\": \"headers['person-id']\", \"matched.grade\": \"headers['match-grade']\" }} }}\nsinks:\n  - journal: {{}}\n"
    )
}

fn adt(control: &str, pid3: &str, name: &str, birth: &str, sex: &str, phone: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|H|HZ|HZ|20260101120000||ADT^A01|{control}|P|2.5\rEVN|A01|20260101120000\rPID|1||{pid3}||{name}||{birth}|{sex}|||民族大道100号^^南宁市^广西^530000||{phone}\rPV1|1|I\r"
    )
}

struct Api {
    engine: Engine,
    base: String,
    client: reqwest::Client,
    _db: crate::support::TestDb,
}

impl Api {
    async fn send(&self, path: &str, body: String) -> String {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(Role::Admin, "*"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let store = self.engine.store.clone();
        let wait = id.clone();
        crate::support::wait_for("message done", Duration::from_secs(20), || {
            let store = store.clone();
            let id = wait.clone();
            async move {
                let m = store.get(&id).await.ok()??;
                match m.state {
                    State::Done => Some(()),
                    State::Dead => panic!("message dead: {:?}", m.last_error),
                    _ => None,
                }
            }
        })
        .await;
        id
    }

    /// The body the journal sink recorded for a message.
    async fn delivered(&self, id: &str) -> Value {
        let e = self.engine.store.effects_of(id).await.unwrap();
        serde_json::from_slice(&e[0].body).unwrap()
    }

    async fn call(&self, method: &str, path: &str, t: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url).json(&body.unwrap_or(json!({}))),
        };
        let r = req.bearer_auth(t).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn api(pipelines: &[&str]) -> Api {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let engine = Engine::start(loaded(&db, pipelines)).await.unwrap();
    let security = Security::new(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        engine.store.clone(),
    )
    .unwrap();
    let cfg = huizhen_core::config::HttpConfig::default();
    let app = huizhen_core::http::router(engine.app_state(), &cfg, Arc::new(security));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &cfg, None, stop).await });
    Api {
        engine,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_from_another_facility_is_linked_and_explained() {
    let a = pipeline("a", "hosp-a", "");
    let b = pipeline("b", "hosp-b", "");
    let s = api(&[&a, &b]).await;
    // Known at A with a resident id; arrives from B under another local id.
    let m1 = s
        .send(
            "/in/a",
            adt(
                "A-1",
                &format!("A100^^^HOSPA^MR~{RID}^^^^NI"),
                "张^伟",
                "19491231",
                "F",
                "",
            ),
        )
        .await;
    let d1 = s.delivered(&m1).await;
    assert_eq!(d1["matched"]["grade"], "new");
    let person: i64 = d1["matched"]["person"].as_str().unwrap().parse().unwrap();
    let m2 = s
        .send(
            "/in/b",
            adt(
                "B-1",
                &format!("B200^^^HOSPB^MR~{RID}^^^^NI"),
                "张^伟",
                "19491231",
                "F",
                "",
            ),
        )
        .await;
    let d2 = s.delivered(&m2).await;
    assert_eq!(d2["matched"]["grade"], "certain", "{d2}");
    assert_eq!(d2["matched"]["person"], person.to_string());

    // PIX: the cross-reference with the decision and its per-field explanation.
    let admin = token(Role::Admin, "*");
    let (st, x) = s
        .call(
            "GET",
            &format!("/api/patients/{person}/identifiers"),
            &admin,
            None,
        )
        .await;
    assert_eq!(st, 200, "{x}");
    let ids = x["identifiers"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{x}");
    let b_rec = ids.iter().find(|i| i["facility"] == "hosp-b").unwrap();
    assert_eq!(b_rec["local_id"], "B200");
    let best = &b_rec["decision"]["candidates"][0];
    assert_eq!(best["grade"], "certain");
    assert_eq!(best["rule"], "resident_id_and_name");
    assert_eq!(best["local_id"], "A100");
    let fields: Vec<&str> = best["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"resident_id") && fields.contains(&"name"),
        "{best}"
    );
    assert_eq!(b_rec["history"][0]["action"], "match");
    assert_eq!(b_rec["history"][0]["actor"], "pipeline:b");
    // The query form.
    let (st, y) = s
        .call(
            "GET",
            "/api/patients/identifiers?identifier=hosp-a|A100",
            &admin,
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(y["person_id"], person);

    // Facility scope: C sees nothing of the person; A sees only its own record, and the
    // decision about B's record is not shown to it.
    let c = token(Role::LocalDoctor, "hosp-c");
    let (st, _) = s
        .call(
            "GET",
            &format!("/api/patients/{person}/identifiers"),
            &c,
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call(
            "GET",
            "/api/patients/identifiers?identifier=hosp-a|A100",
            &c,
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, x) = s
        .call(
            "GET",
            &format!("/api/patients/{person}/identifiers"),
            &token(Role::LocalDoctor, "hosp-a"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(x["identifiers"].as_array().unwrap().len(), 1, "{x}");
    // PDQ: search by demographics, scoped.
    let query = json!({"names": [{"text": "张伟"}], "birth_date": "1949-12-31",
        "identifiers": [{"type": "resident_id", "value": RID}]});
    let (st, r) = s
        .call("POST", "/api/patients/match", &admin, Some(query.clone()))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["candidates"][0]["person_id"], person);
    assert_eq!(r["candidates"][0]["grade"], "certain");
    assert_eq!(r["candidates"][0]["records"].as_array().unwrap().len(), 2);
    let (_, r) = s
        .call("POST", "/api/patients/match", &c, Some(query.clone()))
        .await;
    assert_eq!(r["candidates"], json!([]), "{r}");
    let (_, r) = s
        .call(
            "POST",
            "/api/patients/match",
            &token(Role::LocalDoctor, "hosp-a"),
            Some(query),
        )
        .await;
    assert_eq!(r["candidates"][0]["records"].as_array().unwrap().len(), 1);
    // Bad input names the field path.
    let (st, r) = s
        .call(
            "POST",
            "/api/patients/match",
            &admin,
            Some(json!({"names": [{"given": 5}]})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        r["error"].as_str().unwrap().contains("names[0].given"),
        "{r}"
    );

    // A probable case: the review queue, accepted through the API.
    s.send(
        "/in/a",
        adt(
            "A-2",
            "A300^^^HOSPA^MR",
            "李^四",
            "19800506",
            "M",
            "13900001111",
        ),
    )
    .await;
    let m4 = s
        .send(
            "/in/b",
            adt(
                "B-2",
                "B301^^^HOSPB^MR",
                "李^四",
                "19800506",
                "M",
                "13900001111",
            ),
        )
        .await;
    assert_eq!(s.delivered(&m4).await["matched"]["grade"], "probable");
    let b_int = token(Role::Integrator, "hosp-b");
    let (st, q) = s.call("GET", "/api/patients/review", &b_int, None).await;
    assert_eq!(st, 200);
    let reviews = q["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "{q}");
    let rid = reviews[0]["id"].as_i64().unwrap();
    let candidate = reviews[0]["candidate_person"].as_i64().unwrap();
    assert_eq!(reviews[0]["local_id"], "B301");
    assert!(reviews[0]["decision"]["contributions"].is_array());
    // A's integrator neither sees nor decides B's queue.
    let a_int = token(Role::Integrator, "hosp-a");
    let (_, q) = s.call("GET", "/api/patients/review", &a_int, None).await;
    assert_eq!(q["reviews"], json!([]));
    let accept = format!("/api/patients/review/{rid}/accept");
    let (st, _) = s
        .call(
            "POST",
            &accept,
            &a_int,
            Some(json!({"reason": "same person"})),
        )
        .await;
    assert_eq!(st, 404);
    // A local doctor may not decide; a reason is required.
    let (st, _) = s
        .call(
            "POST",
            &accept,
            &token(Role::LocalDoctor, "hosp-b"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, r) = s
        .call("POST", &accept, &b_int, Some(json!({"reason": " "})))
        .await;
    assert_eq!(st, 400);
    assert!(r["error"].as_str().unwrap().contains("reason"), "{r}");
    let (st, r) = s
        .call(
            "POST",
            &accept,
            &b_int,
            Some(json!({"reason": "same phone and birth date, confirmed by phone"})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["state"], "accepted");
    let (st, _) = s
        .call("POST", &accept, &b_int, Some(json!({"reason": "again"})))
        .await;
    assert_eq!(st, 409);
    let (_, x) = s
        .call(
            "GET",
            &format!("/api/patients/{candidate}/identifiers"),
            &admin,
            None,
        )
        .await;
    assert_eq!(x["identifiers"].as_array().unwrap().len(), 2, "{x}");
    // Unlink (audited) puts it apart again; relink joins it back.
    let body = json!({"facility": "hosp-b", "local_id": "B301", "reason": "wrong link"});
    let (st, u) = s
        .call(
            "POST",
            &format!("/api/patients/{candidate}/unlink"),
            &b_int,
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, 200, "{u}");
    assert_ne!(u["person_id"], candidate);
    let (st, _) = s
        .call(
            "POST",
            &format!("/api/patients/{candidate}/relink"),
            &a_int,
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, 404, "A cannot change B's record");
    let (st, _) = s
        .call(
            "POST",
            &format!("/api/patients/{candidate}/relink"),
            &b_int,
            Some(body),
        )
        .await;
    assert_eq!(st, 200);
    let events = s
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter::default())
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.event.action.as_str()).collect();
    for a in [
        "patient.review.accept",
        "patient.unlink",
        "patient.relink",
        "patient.match",
        "patient.read",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    let accepted = events
        .iter()
        .find(|e| e.event.action == "patient.review.accept" && e.event.outcome == "success")
        .unwrap();
    assert!(accepted.event.detail.contains("confirmed by phone"));
    assert_eq!(accepted.event.subject_facility, "hosp-b");
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_link_above_a_score_is_opt_in_and_audited() {
    let a = pipeline("a", "hosp-a", "");
    let b = pipeline("b", "hosp-b", "auto_link_above: 45");
    let s = api(&[&a, &b]).await;
    s.send(
        "/in/a",
        adt(
            "A-2",
            "A300^^^HOSPA^MR",
            "李^四",
            "19800506",
            "M",
            "13900001111",
        ),
    )
    .await;
    let m = s
        .send(
            "/in/b",
            adt(
                "B-2",
                "B301^^^HOSPB^MR",
                "李^四",
                "19800506",
                "M",
                "13900001111",
            ),
        )
        .await;
    assert_eq!(s.delivered(&m).await["matched"]["grade"], "certain");
    let events = s
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter::default())
        .await
        .unwrap();
    let e = events
        .iter()
        .find(|e| e.event.action == "patient.auto_link")
        .expect("the auto-link is audited");
    assert_eq!(e.event.actor, "pipeline:b");
    assert!(
        e.event.detail.contains("auto_link_above 45"),
        "{}",
        e.event.detail
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_a40_merge_repoints_the_retired_record() {
    let a = pipeline("a", "hosp-a", "");
    let s = api(&[&a]).await;
    let old = s
        .send(
            "/in/a",
            adt("A-1", "OLD1^^^HOSPA^MR", "王^五", "19700102", "M", ""),
        )
        .await;
    let p_old = s.delivered(&old).await["matched"]["person"].clone();
    let new = s
        .send(
            "/in/a",
            adt(
                "A-2",
                "NEW1^^^HOSPA^MR",
                "王^五",
                "19700103",
                "M",
                "13900002222",
            ),
        )
        .await;
    let p_new = s.delivered(&new).await["matched"]["person"].clone();
    assert_ne!(p_old, p_new);
    let a40 = "MSH|^~\\&|HIS|H|HZ|HZ|20260101120000||ADT^A40|A-3|P|2.5\rEVN|A40|20260101120000\rPID|1||NEW1^^^HOSPA^MR||王^五||19700103|M\rMRG|OLD1^^^HOSPA^MR\r";
    s.send("/in/a", a40.into()).await;
    let row = s
        .engine
        .store
        .identity("hosp-a", "OLD1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.person_id.to_string(), p_new.as_str().unwrap());
    assert!(!row.active);
    let h = s.engine.store.identity_history(row.id).await.unwrap();
    assert_eq!(h.last().unwrap().action, "merge");
    // Undone from the history: the unmerge.
    s.engine
        .store
        .identity_undo(
            &h.last().unwrap().batch,
            ChangeBy {
                actor: "admin",
                reason: "merged by mistake",
                audit: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let row = s
        .engine
        .store
        .identity("hosp-a", "OLD1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.person_id.to_string(), p_old.as_str().unwrap());
    assert!(row.active);
    s.engine.shutdown(Duration::from_secs(5)).await;
}

// --- The CLI.

fn huizhen(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run huizhen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_then_links_and_pairs() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let setup = crate::crash::write_config(
        &db,
        "version: 1\nname: p\nsource:\n  http: { path: /in/p }\nsinks:\n  - journal: {}\n",
    );
    let dir = db.dir.path();
    let patient = |mr: &str, family: &str, given: &str, birth: &str, rid: Option<&str>| {
        let mut ids = vec![json!({"type": {"coding": [{"code": "MR"}]}, "value": mr})];
        if let Some(r) = rid {
            ids.push(json!({"type": {"coding": [{"code": "NI"}]}, "value": r}));
        }
        json!({"resourceType": "Patient", "identifier": ids,
            "name": [{"family": family, "given": [given]}], "birthDate": birth,
            "gender": "female", "telecom": [{"system": "phone", "value": "13800138000"}]})
        .to_string()
    };
    let a = [
        patient("A1", "张", "伟", "1949-12-31", Some(RID)),
        patient("A2", "李", "娜", "1990-02-03", None),
    ]
    .join("\n");
    let b = [
        patient("B1", "张", "伟", "1949-12-31", Some(RID)),
        patient("B2", "李", "娜", "1990-02-03", None),
        r#"{"resourceType":"Patient","identifier":[{"value":"B3"}],"name":[{"given":"赵六"}]}"#
            .to_owned(),
    ]
    .join("\n");
    std::fs::write(dir.join("a.ndjson"), a + "\n").unwrap();
    std::fs::write(dir.join("b.ndjson"), b + "\n").unwrap();
    let cfg = &setup.config;
    let out = huizhen(
        cfg,
        &[
            "patients",
            "import",
            "--facility",
            "fa",
            dir.join("a.ndjson").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 imported"), "{err}");
    let out = huizhen(
        cfg,
        &[
            "patients",
            "import",
            "--facility",
            "fb",
            dir.join("b.ndjson").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "one line is bad: {err}");
    assert!(err.contains("b.ndjson:3: name[0].given: "), "{err}");
    assert!(!err.contains("赵六"), "no patient data in errors: {err}");
    assert!(err.contains("2 imported"), "{err}");
    assert!(err.contains("1 certain"), "{err}");

    let out = huizhen(cfg, &["patients", "links"]);
    assert!(out.status.success());
    let links = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = links.lines().collect();
    assert_eq!(lines[0], "facility,local_id,person_id");
    let person_of = |f: &str, l: &str| {
        lines
            .iter()
            .find(|x| x.starts_with(&format!("{f},{l},")))
            .and_then(|x| x.rsplit(',').next())
            .unwrap_or_else(|| panic!("{f},{l} missing in\n{links}"))
            .to_owned()
    };
    assert_eq!(lines.len(), 5, "{links}");
    assert_eq!(person_of("fa", "A1"), person_of("fb", "B1"));
    assert_ne!(
        person_of("fa", "A2"),
        person_of("fb", "B2"),
        "probable is not linked"
    );

    let out = huizhen(cfg, &["patients", "pairs"]);
    let pairs = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success());
    let lines: Vec<&str> = pairs.lines().collect();
    assert_eq!(
        lines[0],
        "facility_a,local_id_a,facility_b,local_id_b,grade,score"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("fa,A1,fb,B1,certain,")),
        "{pairs}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("fa,A2,fb,B2,probable,")),
        "{pairs}"
    );
    let out = huizhen(cfg, &["patients", "pairs", "--min-grade", "certain"]);
    let pairs = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(pairs.lines().count(), 2, "{pairs}");
    let out = huizhen(cfg, &["patients", "pairs", "--min-grade", "sure"]);
    assert_eq!(out.status.code(), Some(1));
    let out = huizhen(cfg, &["patients", "reseal"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4 records looked at, 0 re-sealed"
    );
    let out = huizhen(
        cfg,
        &["patients", "undo", "no-such-batch", "--reason", "test"],
    );
    assert_eq!(out.status.code(), Some(1));
}
