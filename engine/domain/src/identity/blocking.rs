//! Blocking: the keys a record is filed under, so that finding its candidates never scans
//! the index; the candidate-index port the store implements; and [`MemoryIndex`], the pure
//! in-memory implementation used by tests and the bench.
//!
//! **Persons.** An index entry is one facility record (facility + local id) linked to a
//! master person id ([`PersonId`], a `u64`: compact, a BIGINT column, cheap to hash; the
//! store allocates it from a sequence, and a FHIR/PIX layer formats it as a string). Several
//! entries with the same person id are one person known at several facilities: PIX
//! cross-references are the other entries of the same person.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use super::normalize::NormalizedPerson;

/// A master person id (the enterprise id of a person across facilities).
pub type PersonId = u64;

/// A blocking key: `kind:value`, a plain string storable in an indexed column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlockingKey(pub String);

impl BlockingKey {
    fn new(kind: &str, value: &str) -> BlockingKey {
        BlockingKey(format!("{kind}:{value}"))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The keys a record is filed and looked up under. Records of the same person share at
/// least one key despite typical errors:
///
/// * `rid:` resident id, `psn:` region + 医保 number, `nid:` system + national id, `tel:` phone;
/// * `nm:` name key (pinyin/Latin letters, in each order) + birth year; `nmd:` name key +
///   birth month/day (a typo in the year);
/// * `nt:` each part of the name (family, given, token) + birth date, whatever its role (a
///   typo in, or a swap or replacement of, the other part); `ini:` the two initials + birth
///   date (typos in both);
/// * Latin names: `sxd:` Soundex of each part + birth date, `sx:` Soundex of each part +
///   postcode; `nmp:` name key + postcode (no birth date); `dp:` birth date + postcode.
///
/// Birth dates in keys are `YYYY` + the smaller and larger of month and day, so a day/month
/// swap keeps its keys.
pub fn blocking_keys(p: &NormalizedPerson) -> Vec<BlockingKey> {
    let mut keys = Vec::new();
    for r in &p.resident_ids {
        keys.push(BlockingKey::new("rid", &r.number));
    }
    for i in &p.insurance {
        keys.push(BlockingKey::new(
            "psn",
            &format!("{}:{}", i.region, i.psn_no),
        ));
    }
    for n in &p.national_ids {
        keys.push(BlockingKey::new(
            "nid",
            &format!("{}:{}", n.system, n.value),
        ));
    }
    for t in &p.phones {
        keys.push(BlockingKey::new("tel", t));
    }
    let dob = p.birth_date.map(|b| {
        let (m, d) = (b.date.month(), b.date.day());
        (b.date.year(), m.min(d), m.max(d))
    });
    let postcodes: Vec<&String> = p
        .addresses
        .iter()
        .filter_map(|a| a.postal_code.as_ref())
        .collect();
    for name in &p.names {
        for key in name.keys() {
            if let Some((y, lo, hi)) = dob {
                keys.push(BlockingKey::new("nm", &format!("{key}:{y}")));
                keys.push(BlockingKey::new("nmd", &format!("{key}:{lo:02}{hi:02}")));
            }
            for pc in &postcodes {
                keys.push(BlockingKey::new("nmp", &format!("{key}:{pc}")));
            }
        }
        for (family, given) in name.splits() {
            if let Some((y, lo, hi)) = dob {
                let date = format!("{y}{lo:02}{hi:02}");
                if let (Some(f), Some(g)) = (family.chars().next(), given.chars().next()) {
                    let (a, b) = if f <= g { (f, g) } else { (g, f) };
                    keys.push(BlockingKey::new("ini", &format!("{a}{b}:{date}")));
                }
            }
        }
        // Each part of the name alone, whatever its role (a swapped or replaced other part).
        let parts = name
            .tokens
            .iter()
            .chain(name.family.iter())
            .chain(name.given.iter());
        for part in parts.filter(|t| !t.is_empty()) {
            if let Some((y, lo, hi)) = dob {
                keys.push(BlockingKey::new("nt", &format!("{part}:{y}{lo:02}{hi:02}")));
                if name.hanzi.is_none()
                    && let Some(code) = soundex(part)
                {
                    keys.push(BlockingKey::new(
                        "sxd",
                        &format!("{code}:{y}{lo:02}{hi:02}"),
                    ));
                }
            }
            if name.hanzi.is_none()
                && let Some(code) = soundex(part)
            {
                for pc in &postcodes {
                    keys.push(BlockingKey::new("sx", &format!("{code}:{pc}")));
                }
            }
        }
    }
    if let Some((y, lo, hi)) = dob {
        for pc in &postcodes {
            keys.push(BlockingKey::new("dp", &format!("{y}{lo:02}{hi:02}:{pc}")));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// American Soundex of a Latin word (`robert` → `R163`); `None` without a leading letter.
pub fn soundex(word: &str) -> Option<String> {
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => '1',
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => '2',
        'd' | 't' => '3',
        'l' => '4',
        'm' | 'n' => '5',
        'r' => '6',
        'h' | 'w' => '-',
        _ => '0',
    };
    let mut chars = word
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase());
    let first = chars.next()?;
    let mut out = String::with_capacity(4);
    out.push(first.to_ascii_uppercase());
    let mut last = code(first);
    for c in chars {
        let d = code(c);
        if d == '-' {
            continue; // h and w do not separate equal codes
        }
        if d != '0' && d != last {
            out.push(d);
            if out.len() == 4 {
                break;
            }
        }
        last = d;
    }
    while out.len() < 4 {
        out.push('0');
    }
    Some(out)
}

/// A record in the index: its person and its normalised demographics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexedIdentity {
    /// The master person this record is linked to.
    pub person_id: PersonId,
    /// The record (its facility and local id included).
    pub person: NormalizedPerson,
}

/// The port to the identity index: records filed under [`blocking_keys`]. The store
/// implements it with SQL (`SELECT … FROM identity_keys k JOIN identities i … WHERE k.key IN
/// (…) GROUP BY i.id ORDER BY count(*) DESC LIMIT ?`).
pub trait CandidateIndex {
    /// Records sharing at least one key, those sharing the most keys first, at most `limit`.
    fn candidates(&self, keys: &[BlockingKey], limit: usize) -> Vec<IndexedIdentity>;
}

/// An in-memory [`CandidateIndex`]: records in a vector, keys hashed to posting lists.
///
/// Keys are kept as 64-bit hashes (a collision only adds a candidate, which comparison then
/// rejects); a key shared by more than [`MemoryIndex::max_postings`] records (a clinic's
/// switchboard number, a very common name in one year) is skipped at lookup, as a store
/// would skip a key whose frequency it knows to be too high.
#[derive(Clone, Debug)]
pub struct MemoryIndex {
    entries: Vec<IndexedIdentity>,
    postings: HashMap<u64, Vec<u32>>,
    by_local: HashMap<(String, String), u32>,
    next_person: PersonId,
    /// Keys with more postings than this are skipped at lookup (default 2,000).
    pub max_postings: usize,
}

impl Default for MemoryIndex {
    fn default() -> Self {
        MemoryIndex {
            entries: Vec::new(),
            postings: HashMap::new(),
            by_local: HashMap::new(),
            next_person: 1,
            max_postings: 2_000,
        }
    }
}

fn key_hash(key: &BlockingKey) -> u64 {
    let mut h = DefaultHasher::new();
    key.0.hash(&mut h);
    h.finish()
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> MemoryIndex {
        MemoryIndex::default()
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A person id not used yet (ids start at 1 and grow).
    pub fn new_person_id(&mut self) -> PersonId {
        let id = self.next_person;
        self.next_person += 1;
        id
    }

    /// Files a record under `person_id` (replacing the record with the same facility and
    /// local id, whose old keys then still lead to it, harmlessly).
    pub fn insert(&mut self, person_id: PersonId, person: NormalizedPerson) {
        self.next_person = self.next_person.max(person_id.saturating_add(1));
        let keys = blocking_keys(&person);
        let local = (person.facility.clone(), person.local_id.clone());
        let idx = match self.by_local.get(&local) {
            Some(&i) => {
                if let Some(slot) = self.entries.get_mut(i as usize) {
                    *slot = IndexedIdentity { person_id, person };
                }
                i
            }
            None => {
                let i = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
                self.entries.push(IndexedIdentity { person_id, person });
                self.by_local.insert(local, i);
                i
            }
        };
        for k in &keys {
            let list = self.postings.entry(key_hash(k)).or_default();
            if list.last() != Some(&idx) {
                list.push(idx);
            }
        }
    }

    /// The record with this facility and local id.
    pub fn get(&self, facility: &str, local_id: &str) -> Option<&IndexedIdentity> {
        let i = self
            .by_local
            .get(&(facility.to_owned(), local_id.to_owned()))?;
        self.entries.get(*i as usize)
    }

    /// PIX query (IHE ITI-9 / ITI-83): the other records (facility, local id) of the person
    /// a record is linked to; `None` when the record is unknown.
    pub fn cross_references(
        &self,
        facility: &str,
        local_id: &str,
    ) -> Option<Vec<(String, String)>> {
        let person = self.get(facility, local_id)?.person_id;
        Some(
            self.entries
                .iter()
                .filter(|e| e.person_id == person)
                .filter(|e| !(e.person.facility == facility && e.person.local_id == local_id))
                .map(|e| (e.person.facility.clone(), e.person.local_id.clone()))
                .collect(),
        )
    }

    /// Re-links a record to another person (a merge, HL7 A40, or a reviewer's decision).
    /// False when the record is unknown.
    pub fn relink(&mut self, facility: &str, local_id: &str, person_id: PersonId) -> bool {
        let Some(&i) = self
            .by_local
            .get(&(facility.to_owned(), local_id.to_owned()))
        else {
            return false;
        };
        match self.entries.get_mut(i as usize) {
            Some(e) => {
                e.person_id = person_id;
                true
            }
            None => false,
        }
    }
}

impl CandidateIndex for MemoryIndex {
    fn candidates(&self, keys: &[BlockingKey], limit: usize) -> Vec<IndexedIdentity> {
        let mut hits: HashMap<u32, u32> = HashMap::new();
        for k in keys {
            let Some(list) = self.postings.get(&key_hash(k)) else {
                continue;
            };
            if list.len() > self.max_postings {
                continue;
            }
            for &i in list {
                *hits.entry(i).or_insert(0) += 1;
            }
        }
        let mut ranked: Vec<(u32, u32)> = hits.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(limit)
            .filter_map(|(i, _)| self.entries.get(i as usize).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::demographics::{Demographics, PersonName};
    use crate::identity::normalize::normalize;

    #[test]
    fn soundex_codes() {
        for (w, c) in [
            ("robert", "R163"),
            ("rupert", "R163"),
            ("ashcraft", "A261"),
            ("tymczak", "T522"),
            ("pfister", "P236"),
            ("lee", "L000"),
        ] {
            assert_eq!(soundex(w).as_deref(), Some(c), "{w}");
        }
        assert_eq!(soundex("123"), None);
    }

    fn person(facility: &str, id: &str, name: &str, dob: &str, phone: &str) -> NormalizedPerson {
        normalize(&Demographics {
            facility: facility.into(),
            local_id: id.into(),
            names: vec![PersonName::text(name)],
            birth_date: Some(dob.into()),
            phones: vec![phone.into()],
            ..Demographics::default()
        })
    }

    #[test]
    fn keys_are_plain_kind_value_strings_shared_across_spellings() {
        let a = blocking_keys(&person("A", "1", "张伟", "1985-03-12", "13800138000"));
        let b = blocking_keys(&person(
            "B",
            "9",
            "Wei Zhang",
            "12/03/1985",
            "+86 138 0013 8000",
        ));
        assert!(a.iter().all(|k| {
            k.as_str()
                .split_once(':')
                .is_some_and(|(kind, v)| !kind.is_empty() && !v.is_empty())
        }));
        assert!(a.contains(&BlockingKey("nm:zhangwei:1985".into())));
        assert!(a.contains(&BlockingKey("tel:13800138000".into())));
        let shared: Vec<_> = a.iter().filter(|k| b.contains(k)).collect();
        assert!(shared.len() >= 3, "{shared:?}");
        // A day/month swap keeps the date keys.
        let c = blocking_keys(&person("C", "2", "张伟", "1985-12-03", "1"));
        assert!(
            c.contains(&BlockingKey("nt:zhang:19850312".into())),
            "{c:?}"
        );
    }

    #[test]
    fn the_memory_index_finds_by_key_and_answers_pix_queries() {
        let mut index = MemoryIndex::new();
        let p = index.new_person_id();
        index.insert(p, person("RED", "994", "张伟", "1985-03-12", "13800138000"));
        index.insert(
            p,
            person("BLUE", "xyz", "Zhang Wei", "1985-03-12", "13800138000"),
        );
        let q = index.new_person_id();
        index.insert(q, person("RED", "7", "李强", "1990-01-01", "13900000000"));
        assert_eq!(index.len(), 3);
        let found = index.candidates(
            &blocking_keys(&person("X", "1", "張偉", "19850312", "")),
            10,
        );
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|f| f.person_id == p));
        assert_eq!(
            index.cross_references("RED", "994"),
            Some(vec![("BLUE".into(), "xyz".into())])
        );
        assert_eq!(index.cross_references("RED", "7"), Some(vec![]));
        assert_eq!(index.cross_references("RED", "nope"), None);
        assert!(index.relink("RED", "7", p));
        assert_eq!(index.cross_references("RED", "7").map(|v| v.len()), Some(2));
        // Limit and replacement.
        assert_eq!(
            index
                .candidates(&blocking_keys(&person("X", "1", "张伟", "19850312", "")), 1)
                .len(),
            1
        );
        index.insert(q, person("RED", "7", "李强", "1990-01-01", "13900000001"));
        assert_eq!(index.len(), 3);
    }
}
