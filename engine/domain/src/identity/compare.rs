//! Field-by-field comparison of two normalised records: the agreement level of each field
//! (the Fellegi–Sunter comparison vector) and the facts the deterministic rules and the
//! safety guards need.

use chrono::Datelike;
use serde::{Deserialize, Serialize};
use strsim::{jaro_winkler, osa_distance};

use super::normalize::{NormalizedName, NormalizedPerson};

/// A compared field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Names (best pair over every name of both records).
    Name,
    /// Birth date.
    BirthDate,
    /// Sex (male/female only).
    Sex,
    /// Phone numbers (any shared number agrees).
    Phone,
    /// Address text tokens.
    Address,
    /// Postal code.
    Postcode,
    /// Resident identity number (居民身份证号).
    ResidentId,
    /// 医保 `psn_no` with its insured region.
    Insurance,
    /// Other national identifiers of the same system.
    NationalId,
}

/// How many fields are compared.
pub const FIELD_COUNT: usize = 9;

impl FieldKind {
    /// Every field, in comparison-vector order.
    pub const ALL: [FieldKind; FIELD_COUNT] = [
        FieldKind::Name,
        FieldKind::BirthDate,
        FieldKind::Sex,
        FieldKind::Phone,
        FieldKind::Address,
        FieldKind::Postcode,
        FieldKind::ResidentId,
        FieldKind::Insurance,
        FieldKind::NationalId,
    ];

    /// The position of this field in a [`ComparisonVector`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The agreement levels this field can take, best first. Their m (and u) probabilities
    /// sum to 1.
    pub fn levels(self) -> &'static [Level] {
        use Level::*;
        match self {
            FieldKind::Name => &[Exact, Phonetic, Fuzzy, Partial, Disagree],
            FieldKind::BirthDate => &[Exact, Swapped, OneOff, Disagree],
            FieldKind::Sex | FieldKind::Phone | FieldKind::Postcode | FieldKind::Insurance => {
                &[Exact, Disagree]
            }
            FieldKind::Address => &[Exact, Partial, Disagree],
            FieldKind::ResidentId | FieldKind::NationalId => &[Exact, Close, Disagree],
        }
    }
}

/// How well a field agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The same value after normalisation (for names: the same hanzi, or the same Latin
    /// letters in some order when neither has hanzi).
    Exact,
    /// Names: the same pinyin, not the same hanzi (a homophone, or hanzi vs pinyin).
    Phonetic,
    /// Names: close spellings (Jaro–Winkler on pinyin or Latin).
    Fuzzy,
    /// Names: family or given name agrees, the other does not or is missing. Addresses: a
    /// fair share of tokens in common.
    Partial,
    /// Birth date: day and month swapped.
    Swapped,
    /// Birth date: exactly one of year, month, day differs.
    OneOff,
    /// Identifiers: one typo apart (one substitution, insertion, deletion or transposition).
    Close,
    /// Different.
    Disagree,
}

/// The agreement level of every field; `None` where either record lacks the field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComparisonVector {
    /// Indexed by [`FieldKind::index`].
    pub levels: [Option<Level>; FIELD_COUNT],
}

impl ComparisonVector {
    /// The level of one field.
    pub fn get(&self, field: FieldKind) -> Option<Level> {
        self.levels.get(field.index()).copied().flatten()
    }

    fn set(&mut self, field: FieldKind, level: Option<Level>) {
        if let Some(slot) = self.levels.get_mut(field.index()) {
            *slot = level;
        }
    }
}

/// A comparison: the vector plus what the rules and guards read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// The levels (resident id set to missing when it must not count, see
    /// `shared_id_ignored`).
    pub vector: ComparisonVector,
    /// Both have given names, the family names agree and the given names are more than one
    /// typo apart (even when the name level is `fuzzy`).
    pub given_names_differ: bool,
    /// A valid resident id is equal and consistent with the stated birth date and sex in
    /// both records.
    pub resident_id_trusted_equal: bool,
    /// An equal resident id was not counted: the names disagree, or the id contradicts a
    /// stated birth date or sex (an infant under a parent's number).
    pub shared_id_ignored: bool,
    /// An equal (psn_no, region) pair.
    pub insurance_equal: bool,
}

/// Compares two normalised records field by field.
pub fn compare(a: &NormalizedPerson, b: &NormalizedPerson) -> Comparison {
    let mut c = Comparison::default();
    let (name, given_differs) = compare_names(&a.names, &b.names);
    c.vector.set(FieldKind::Name, name);
    c.given_names_differ = given_differs;
    let birth = match (a.birth_date, b.birth_date) {
        (Some(x), Some(y)) => Some(compare_dates(x, y)),
        _ => None,
    };
    c.vector.set(FieldKind::BirthDate, birth);
    c.vector.set(
        FieldKind::Sex,
        match (a.sex, b.sex) {
            (Some(x), Some(y)) => Some(if x == y {
                Level::Exact
            } else {
                Level::Disagree
            }),
            _ => None,
        },
    );
    c.vector.set(
        FieldKind::Phone,
        (!a.phones.is_empty() && !b.phones.is_empty()).then(|| {
            if a.phones.iter().any(|p| b.phones.contains(p)) {
                Level::Exact
            } else {
                Level::Disagree
            }
        }),
    );
    c.vector.set(FieldKind::Address, compare_addresses(a, b));
    let (pa, pb): (Vec<&String>, Vec<&String>) = (
        a.addresses
            .iter()
            .filter_map(|x| x.postal_code.as_ref())
            .collect(),
        b.addresses
            .iter()
            .filter_map(|x| x.postal_code.as_ref())
            .collect(),
    );
    c.vector.set(
        FieldKind::Postcode,
        (!pa.is_empty() && !pb.is_empty()).then(|| {
            if pa.iter().any(|p| pb.contains(p)) {
                Level::Exact
            } else {
                Level::Disagree
            }
        }),
    );

    // Resident ids.
    let mut rid = None;
    for x in &a.resident_ids {
        for y in &b.resident_ids {
            let level = id_level(&x.number, &y.number);
            if level == Level::Exact {
                let names_agree = !matches!(name, Some(Level::Partial | Level::Disagree));
                let own = x.consistent || !x.valid;
                let own_b = y.consistent || !y.valid;
                if !names_agree || !own || !own_b || birth == Some(Level::Disagree) {
                    c.shared_id_ignored = true;
                    continue;
                }
                if x.valid && x.consistent && y.consistent {
                    c.resident_id_trusted_equal = true;
                }
            }
            rid = best(rid, Some(level));
        }
    }
    c.vector.set(FieldKind::ResidentId, rid);

    let mut ins = None;
    for x in &a.insurance {
        for y in &b.insurance {
            let level = if x == y {
                Level::Exact
            } else {
                Level::Disagree
            };
            if level == Level::Exact {
                c.insurance_equal = true;
            }
            ins = best(ins, Some(level));
        }
    }
    c.vector.set(FieldKind::Insurance, ins);

    let mut nid = None;
    for x in &a.national_ids {
        for y in b.national_ids.iter().filter(|y| y.system == x.system) {
            nid = best(nid, Some(id_level(&x.value, &y.value)));
        }
    }
    c.vector.set(FieldKind::NationalId, nid);
    c
}

/// The better of two levels (the one listed first in [`Level`]).
fn best(a: Option<Level>, b: Option<Level>) -> Option<Level> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn id_level(a: &str, b: &str) -> Level {
    if a == b {
        Level::Exact
    } else if a.len() >= 6 && osa_distance(a, b) <= 1 {
        Level::Close
    } else {
        Level::Disagree
    }
}

fn compare_dates(a: super::demographics::BirthDate, b: super::demographics::BirthDate) -> Level {
    let readings = |d: super::demographics::BirthDate| {
        let mut v = vec![d.date];
        if d.ambiguous {
            v.extend(d.swapped());
        }
        v
    };
    let (ra, rb) = (readings(a), readings(b));
    if ra.iter().any(|x| rb.contains(x)) {
        return Level::Exact;
    }
    let (x, y) = (a.date, b.date);
    if x.year() == y.year() && x.month() == y.day() && x.day() == y.month() {
        return Level::Swapped;
    }
    let differ = usize::from(x.year() != y.year())
        + usize::from(x.month() != y.month())
        + usize::from(x.day() != y.day());
    if differ == 1 {
        Level::OneOff
    } else {
        Level::Disagree
    }
}

fn compare_addresses(a: &NormalizedPerson, b: &NormalizedPerson) -> Option<Level> {
    let mut best_dice: Option<f64> = None;
    for x in a.addresses.iter().filter(|x| !x.tokens.is_empty()) {
        for y in b.addresses.iter().filter(|y| !y.tokens.is_empty()) {
            let common = x
                .tokens
                .iter()
                .filter(|t| y.tokens.binary_search(t).is_ok())
                .count();
            #[allow(clippy::cast_precision_loss)]
            let dice = 2.0 * common as f64 / (x.tokens.len() + y.tokens.len()) as f64;
            best_dice = Some(best_dice.map_or(dice, |b| b.max(dice)));
        }
    }
    best_dice.map(|d| {
        if d >= 0.8 {
            Level::Exact
        } else if d >= 0.45 {
            Level::Partial
        } else {
            Level::Disagree
        }
    })
}

/// Token agreement: `Some(true)` exact, `Some(false)` close, `None` different or missing.
fn token_agrees(a: &str, b: &str) -> Option<bool> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    if a == b {
        return Some(true);
    }
    let shorter = a.len().min(b.len());
    // Long tokens: Jaro–Winkler or one edit. Short ones (most pinyin syllables): only a
    // transposition, since one substituted letter is often another name (li/lu, wei/wen).
    let close = if shorter >= 5 {
        jaro_winkler(a, b) >= 0.88 || osa_distance(a, b) <= 1
    } else if shorter >= 3 {
        a.len() == b.len() && osa_distance(a, b) == 1 && {
            let (mut x, mut y): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            x.sort_unstable();
            y.sort_unstable();
            x == y
        }
    } else {
        false
    };
    close.then_some(false)
}

/// The best name level over every pair of names, and whether the given names differ under
/// an agreeing family name (the twin and sibling pattern). `None` when either has no name.
pub fn compare_names(a: &[NormalizedName], b: &[NormalizedName]) -> (Option<Level>, bool) {
    let mut level: Option<Level> = None;
    let mut given_differs = false;
    for x in a {
        for y in b {
            let (l, g) = compare_name(x, y);
            if level.is_none_or(|cur| l < cur) {
                level = Some(l);
                given_differs = g;
            } else if Some(l) == level {
                given_differs |= g;
            }
        }
    }
    (level, given_differs)
}

fn compare_name(x: &NormalizedName, y: &NormalizedName) -> (Level, bool) {
    if let (Some(hx), Some(hy)) = (&x.hanzi, &y.hanzi)
        && hx == hy
    {
        return (Level::Exact, false);
    }
    let (kx, ky) = (x.keys(), y.keys());
    if kx.iter().any(|k| ky.contains(k)) {
        let level = if x.hanzi.is_none() && y.hanzi.is_none() {
            Level::Exact
        } else {
            Level::Phonetic
        };
        return (level, false);
    }
    let mut best_level = Level::Disagree;
    let mut given_differs = false;
    for (fx, gx) in x.splits() {
        for (fy, gy) in y.splits() {
            let fam = token_agrees(&fx, &fy);
            let giv = token_agrees(&gx, &gy);
            let l = match (fam, giv) {
                (Some(_), Some(_)) => Level::Fuzzy,
                (Some(_), None) | (None, Some(_)) => Level::Partial,
                (None, None) => Level::Disagree,
            };
            // The twin and sibling pattern: the family names agree and the given names are
            // more than one typo apart (子涵/子轩, zihan/zixuan are close by Jaro–Winkler but
            // are two names).
            let g = fam.is_some() && !gx.is_empty() && !gy.is_empty() && osa_distance(&gx, &gy) > 1;
            if l < best_level {
                best_level = l;
                given_differs = g;
            } else if l == best_level {
                // Any reading with the family name agreeing and the given names differing
                // counts: with an unknown order, the swapped reading must not hide it.
                given_differs |= g;
            }
        }
    }
    if best_level > Level::Fuzzy {
        let fuzzy_whole = kx.iter().any(|a| {
            ky.iter()
                .any(|b| a.len().min(b.len()) >= 6 && jaro_winkler(a, b) >= 0.92)
        });
        if fuzzy_whole {
            return (Level::Fuzzy, given_differs);
        }
    }
    (best_level, given_differs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::demographics::PersonName;
    use crate::identity::normalize::normalize_name;

    fn level(a: &str, b: &str) -> (Option<Level>, bool) {
        let n = |s: &str| vec![normalize_name(&PersonName::text(s)).unwrap()];
        compare_names(&n(a), &n(b))
    }

    #[test]
    fn name_levels() {
        let cases = [
            ("张伟", "张伟", Level::Exact),
            ("张伟", "張偉", Level::Exact),
            ("张伟", "Zhang Wei", Level::Phonetic),
            ("张伟", "wei zhang", Level::Phonetic),
            ("张伟", "张玮", Level::Phonetic),
            ("Zhang Wei", "ZHANG  WEI", Level::Exact),
            ("Zhang Wei", "Wei Zhang", Level::Exact),
            ("张伟", "Zhang Wie", Level::Fuzzy),
            ("michaela neumann", "micheala neumann", Level::Fuzzy),
            ("张伟", "张强", Level::Partial),
            ("张伟", "李强", Level::Disagree),
            ("阿依古丽·买买提", "Ayiguli Maimaiti", Level::Phonetic),
            ("欧阳晓东", "Ouyang Xiaodong", Level::Phonetic),
        ];
        for (a, b, want) in cases {
            assert_eq!(level(a, b).0, Some(want), "{a} vs {b}");
        }
        assert!(level("张伟", "张强").1, "twins: the given names differ");
        assert!(!level("张伟", "李强").1);
    }

    #[test]
    fn short_pinyin_surnames_are_not_fuzzy_equal() {
        assert_eq!(token_agrees("li", "lin"), None);
        assert_eq!(token_agrees("chen", "cheng"), None);
        assert_eq!(token_agrees("wei", "wie"), Some(false));
    }
}
