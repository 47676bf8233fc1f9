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
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

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
/// swap keeps its keys; postcodes are their characters in sorted order, so a transposition
/// keeps them.
pub fn blocking_keys(p: &NormalizedPerson) -> Vec<BlockingKey> {
    let mut keys = Vec::new();
    for_each_key(p, &mut |parts| keys.push(BlockingKey(parts.join(":"))));
    keys.sort();
    keys.dedup();
    keys
}

/// The hashes of [`blocking_keys`] (each the hash of the key text), sorted and
/// de-duplicated, computed without building the texts.
fn key_hashes(p: &NormalizedPerson) -> Vec<u64> {
    let mut hashes = Vec::new();
    for_each_key(p, &mut |parts| hashes.push(hash_parts(parts)));
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// Calls `emit` with the parts of every blocking key of `p` (kind first); the key text is
/// the parts joined by `:`. Keys may repeat.
fn for_each_key(p: &NormalizedPerson, emit: &mut dyn FnMut(&[&str])) {
    for r in &p.resident_ids {
        emit(&["rid", &r.number]);
    }
    for i in &p.insurance {
        emit(&["psn", &i.region, &i.psn_no]);
    }
    for n in &p.national_ids {
        emit(&["nid", &n.system, &n.value]);
    }
    for t in &p.phones {
        emit(&["tel", t]);
    }
    // `YYYY`, `MMDD` with the smaller of month and day first, and both together.
    let dob = p.birth_date.map(|b| {
        let (m, d) = (b.date.month(), b.date.day());
        let year = b.date.year().to_string();
        let month_day = format!("{:02}{:02}", m.min(d), m.max(d));
        let date = format!("{year}{month_day}");
        (year, month_day, date)
    });
    // Postcodes by their characters in sorted order: a transposition (4221/4212) keeps the
    // key.
    let mut postcodes: Vec<String> = p
        .addresses
        .iter()
        .filter_map(|a| a.postal_code.as_ref())
        .map(|pc| {
            let mut c: Vec<char> = pc.chars().collect();
            c.sort_unstable();
            c.into_iter().collect()
        })
        .collect();
    postcodes.sort();
    postcodes.dedup();
    for name in &p.names {
        for key in name.key_set() {
            if let Some((year, month_day, _)) = &dob {
                emit(&["nm", key, year]);
                emit(&["nmd", key, month_day]);
            }
            for pc in &postcodes {
                emit(&["nmp", key, pc]);
            }
        }
        if let Some((_, _, date)) = &dob {
            for (family, given) in name.split_set() {
                if let (Some(f), Some(g)) = (family.chars().next(), given.chars().next()) {
                    let (a, b) = if f <= g { (f, g) } else { (g, f) };
                    let mut buf = [0u8; 8];
                    let a_len = a.encode_utf8(&mut buf).len();
                    let b_len = b
                        .encode_utf8(buf.get_mut(a_len..).unwrap_or_default())
                        .len();
                    if let Some(Ok(initials)) = buf.get(..a_len + b_len).map(std::str::from_utf8) {
                        emit(&["ini", initials, date]);
                    }
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
            if let Some((_, _, date)) = &dob {
                emit(&["nt", part, date]);
            }
            if name.hanzi.is_none()
                && let Some(code) = soundex(part)
            {
                if let Some((_, _, date)) = &dob {
                    emit(&["sxd", &code, date]);
                }
                for pc in &postcodes {
                    emit(&["sx", &code, pc]);
                }
            }
        }
    }
    if let Some((_, _, date)) = &dob {
        for pc in &postcodes {
            emit(&["dp", date, pc]);
        }
    }
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

/// A record in the index: its person and its normalised demographics (shared, so that
/// handing out candidates copies no text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexedIdentity {
    /// The master person this record is linked to.
    pub person_id: PersonId,
    /// The record (its facility and local id included).
    pub person: Arc<NormalizedPerson>,
}

/// The port to the identity index: records filed under [`blocking_keys`]. The store
/// implements it with postings in memory (key hash → record ids, kept current from the
/// database) and reads the candidate records by id.
pub trait CandidateIndex {
    /// Records sharing at least one key, those sharing the most keys first, at most `limit`.
    fn candidates(&self, keys: &[BlockingKey], limit: usize) -> Vec<IndexedIdentity>;
}

/// A hasher for keys that are already 64-bit hashes: passes them through.
#[derive(Clone, Copy, Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in FNV-1a style.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// A posting list: most keys are shared by one record only, which needs no allocation.
#[derive(Clone, Debug)]
enum Posting {
    One(u32),
    Many(Vec<u32>),
}

impl Posting {
    fn as_slice(&self) -> &[u32] {
        match self {
            Posting::One(i) => std::slice::from_ref(i),
            Posting::Many(v) => v,
        }
    }

    fn push(&mut self, i: u32) {
        match self {
            Posting::One(first) if *first != i => *self = Posting::Many(vec![*first, i]),
            Posting::One(_) => {}
            Posting::Many(v) => {
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
    }
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
    postings: HashedMap<Posting>,
    by_local: HashedMap<Vec<u32>>,
    next_person: PersonId,
    /// Keys with more postings than this are skipped at lookup (default 2,000).
    pub max_postings: usize,
}

impl Default for MemoryIndex {
    fn default() -> Self {
        MemoryIndex {
            entries: Vec::new(),
            postings: HashedMap::default(),
            by_local: HashedMap::default(),
            next_person: 1,
            max_postings: 2_000,
        }
    }
}

/// FNV-1a over the parts joined by `:` (the key text), then the SplitMix64 finaliser for
/// well-spread bits (keys are short and similar: `nm:zhangwei:1985`, `nm:zhangwei:1986`).
fn hash_parts(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            h = (h ^ u64::from(b':')).wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn key_hash(key: &BlockingKey) -> u64 {
    hash_parts(&[&key.0])
}

fn local_hash(facility: &str, local_id: &str) -> u64 {
    hash_parts(&[facility, local_id])
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> MemoryIndex {
        MemoryIndex::default()
    }

    /// An empty index with room for about `records` records (fewer re-allocations while a
    /// large register is loaded).
    pub fn with_capacity(records: usize) -> MemoryIndex {
        MemoryIndex {
            entries: Vec::with_capacity(records),
            // About seven distinct keys per record.
            postings: HashedMap::with_capacity_and_hasher(
                records.saturating_mul(7),
                BuildHasherDefault::default(),
            ),
            by_local: HashedMap::with_capacity_and_hasher(records, BuildHasherDefault::default()),
            ..MemoryIndex::default()
        }
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

    fn position(&self, facility: &str, local_id: &str) -> Option<u32> {
        self.by_local
            .get(&local_hash(facility, local_id))?
            .iter()
            .copied()
            .find(|&i| {
                self.entries
                    .get(i as usize)
                    .is_some_and(|e| e.person.facility == facility && e.person.local_id == local_id)
            })
    }

    /// Files a record under `person_id` (replacing the record with the same facility and
    /// local id, whose old keys then still lead to it, harmlessly).
    pub fn insert(&mut self, person_id: PersonId, person: NormalizedPerson) {
        self.insert_shared(person_id, Arc::new(person));
    }

    /// [`MemoryIndex::insert`] for a record already shared (kept, not copied).
    pub fn insert_shared(&mut self, person_id: PersonId, person: Arc<NormalizedPerson>) {
        self.next_person = self.next_person.max(person_id.saturating_add(1));
        let keys = key_hashes(&person);
        let idx = match self.position(&person.facility, &person.local_id) {
            Some(i) => {
                if let Some(slot) = self.entries.get_mut(i as usize) {
                    *slot = IndexedIdentity { person_id, person };
                }
                i
            }
            None => {
                let i = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
                self.by_local
                    .entry(local_hash(&person.facility, &person.local_id))
                    .or_default()
                    .push(i);
                self.entries.push(IndexedIdentity { person_id, person });
                i
            }
        };
        for k in keys {
            self.postings
                .entry(k)
                .and_modify(|p| p.push(idx))
                .or_insert(Posting::One(idx));
        }
    }

    /// The record with this facility and local id.
    pub fn get(&self, facility: &str, local_id: &str) -> Option<&IndexedIdentity> {
        let i = self.position(facility, local_id)?;
        self.entries.get(i as usize)
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
        let Some(i) = self.position(facility, local_id) else {
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
        // Every posting of every usable key, sorted: runs of one record are its key count.
        let mut hits: Vec<u32> = Vec::new();
        for k in keys {
            let Some(list) = self.postings.get(&key_hash(k)) else {
                continue;
            };
            let list = list.as_slice();
            if list.len() > self.max_postings {
                continue;
            }
            hits.extend_from_slice(list);
        }
        hits.sort_unstable();
        let mut ranked: Vec<(u32, u32)> = Vec::new();
        for chunk in hits.chunk_by(|a, b| a == b) {
            if let Some(&i) = chunk.first() {
                ranked.push((u32::try_from(chunk.len()).unwrap_or(u32::MAX), i));
            }
        }
        // Most keys first, then the earlier record.
        let order = |a: &(u32, u32), b: &(u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if ranked.len() > limit && limit > 0 {
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .take(limit)
            .filter_map(|(_, i)| self.entries.get(i as usize).cloned())
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
    fn hashed_keys_are_the_hashes_of_the_key_texts() {
        let mut febrl_like = person("A", "1", "", "19330122", "");
        febrl_like.names = vec![
            crate::identity::normalize::normalize_name(&PersonName::parts("neumann", "michaela"))
                .unwrap(),
        ];
        febrl_like.addresses = vec![crate::identity::normalize::NormalizedAddress::new(
            vec!["stanley".into()],
            Some("4223".into()),
        )];
        for p in [
            person("A", "1", "张伟", "1985-03-12", "13800138000"),
            person("B", "9", "Wei Zhang", "12/03/1985", "+86 138 0013 8000"),
            person("C", "2", "阿依古丽·买买提", "1990-01-01", ""),
            febrl_like,
        ] {
            let texts = blocking_keys(&p);
            assert!(!texts.is_empty());
            let mut from_texts: Vec<u64> = texts.iter().map(key_hash).collect();
            from_texts.sort_unstable();
            from_texts.dedup();
            assert_eq!(key_hashes(&p), from_texts, "{texts:?}");
        }
        // Postcodes are filed by their sorted characters: a transposition keeps the key.
        let keys = |pc: &str| {
            let mut p = person("A", "1", "Michaela Neumann", "19330122", "");
            p.addresses = vec![crate::identity::normalize::NormalizedAddress::new(
                vec![],
                Some(pc.into()),
            )];
            blocking_keys(&p)
        };
        assert_eq!(keys("4223"), keys("4232"));
        assert_ne!(keys("4223"), keys("4224"));
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
