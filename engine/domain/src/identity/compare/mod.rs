//! Field-by-field comparison of two normalised records: the agreement level of each field
//! (the Fellegi–Sunter comparison vector) and the facts the deterministic rules and the
//! safety guards need.
//!
//! Comparison runs once per candidate record, so it allocates nothing: the name keys are
//! cached in [`NormalizedName`], and the string measures have ASCII fast paths (every
//! compared token is ASCII after normalisation; other text falls back to `strsim`).

use chrono::Datelike;
use serde::{Deserialize, Serialize};
use strsim::{jaro_winkler, osa_distance};

mod address;

use address::compare_addresses;

use super::demographics::BirthDate;
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

/// How many agreement levels there are (the size of a dense `[level]` table).
pub const LEVEL_COUNT: usize = 9;

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
            FieldKind::BirthDate => &[Exact, Swapped, Typo, OneOff, Disagree],
            FieldKind::Sex | FieldKind::Phone | FieldKind::Insurance => &[Exact, Disagree],
            FieldKind::Address => &[Exact, Partial, Disagree],
            FieldKind::Postcode | FieldKind::ResidentId | FieldKind::NationalId => {
                &[Exact, Close, Disagree]
            }
        }
    }
}

/// How well a field agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The same value after normalisation (for names: the same hanzi, or the same Latin
    /// letters in some order when neither has hanzi; for addresses: most tokens and every
    /// house number in common, a Latin word one typo apart or written with a space lost or
    /// moved counting as in common, see `address.rs`).
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
    /// Birth date: a keying slip: the eight digits `YYYYMMDD` are one substitution or one
    /// adjacent transposition apart (`19330122`/`19330212`, also when one of them is not a
    /// valid day, `19711319`), or one of year, month, day is off by one.
    Typo,
    /// Birth date: exactly one of year, month, day differs (by more than a slip).
    OneOff,
    /// Identifiers and postal codes: one typo apart (one substitution, insertion, deletion
    /// or transposition).
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
    /// Both have given names, the family names agree and the given names are different
    /// names: their pinyin differs when both are hanzi, else they are more than one typo
    /// apart (a short name: anything but one transposition), even when the name level is
    /// `fuzzy` (子涵/子轩, lan/yan).
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

/// The level of two sets of plain values: `Exact` when one value is shared, else `Close`
/// when `close` allows and two are one typo apart, else `Disagree`; `None` when a side has
/// none.
fn set_level<'a>(
    a: impl Iterator<Item = &'a str> + Clone,
    b: impl Iterator<Item = &'a str> + Clone,
    close: bool,
) -> Option<Level> {
    let mut level = None;
    for x in a {
        for y in b.clone() {
            let l = if x == y {
                Level::Exact
            } else if close && x.len() >= 4 && within_one_edit(x, y) {
                Level::Close
            } else {
                Level::Disagree
            };
            level = best(level, Some(l));
            if l == Level::Exact {
                return level;
            }
        }
    }
    level
}

/// Compares two normalised records field by field.
pub fn compare(a: &NormalizedPerson, b: &NormalizedPerson) -> Comparison {
    let mut c = Comparison::default();
    let (name, given_differs) = compare_names(&a.names, &b.names);
    c.vector.set(FieldKind::Name, name);
    c.given_names_differ = given_differs;
    let birth = compare_birth(a, b);
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
        set_level(
            a.phones.iter().map(String::as_str),
            b.phones.iter().map(String::as_str),
            false,
        ),
    );
    c.vector.set(FieldKind::Address, compare_addresses(a, b));
    c.vector.set(
        FieldKind::Postcode,
        set_level(
            a.addresses.iter().filter_map(|x| x.postal_code.as_deref()),
            b.addresses.iter().filter_map(|x| x.postal_code.as_deref()),
            true,
        ),
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
    } else if a.len() >= 6 && within_one_edit(a, b) {
        Level::Close
    } else {
        Level::Disagree
    }
}

/// True when `a` and `b` are at most one edit apart (optimal string alignment: one
/// substitution, insertion, deletion or adjacent transposition). Allocation-free for ASCII.
pub fn within_one_edit(a: &str, b: &str) -> bool {
    if !(a.is_ascii() && b.is_ascii()) {
        return osa_distance(a, b) <= 1;
    }
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x == y {
        return true;
    }
    let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
    let i = short.iter().zip(long).take_while(|(p, q)| p == q).count();
    match long.len() - short.len() {
        0 => {
            // A substitution at i, or a transposition of i and i + 1.
            short.get(i + 1..) == long.get(i + 1..)
                || (short.get(i) == long.get(i + 1)
                    && short.get(i + 1) == long.get(i)
                    && short.get(i + 2..) == long.get(i + 2..))
        }
        1 => short.get(i..) == long.get(i + 1..),
        _ => false,
    }
}

/// True when `a` and `b` have the same length and differ by one adjacent transposition.
fn one_transposition(a: &str, b: &str) -> bool {
    if a.len() != b.len() || a == b {
        return false;
    }
    if !(a.is_ascii() && b.is_ascii()) {
        let (mut x, mut y): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let d = osa_distance(a, b);
        x.sort_unstable();
        y.sort_unstable();
        return d == 1 && x == y;
    }
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let i = x.iter().zip(y).take_while(|(p, q)| p == q).count();
    x.get(i) == y.get(i + 1)
        && x.get(i + 1) == y.get(i)
        && x.get(i) != x.get(i + 1)
        && x.get(i + 2..) == y.get(i + 2..)
}

/// `jaro_winkler(a, b) >= threshold`, skipping the computation when a bound from the
/// letters in common already rules it out (most pairs of different names).
pub fn jaro_winkler_at_least(a: &str, b: &str, threshold: f64) -> bool {
    if a.is_ascii() && b.is_ascii() && !a.is_empty() && !b.is_empty() {
        // Jaro ≤ (m/|a| + m/|b| + 1) / 3 with m ≤ the letters in common ≤ the shorter
        // length, and the Winkler prefix bonus (at most 4 × 0.1) gives at most
        // 0.6 × Jaro + 0.4: first the lengths alone, then the letters.
        #[allow(clippy::cast_precision_loss)]
        let bound = |m: f64| 0.6 * (m / a.len() as f64 + m / b.len() as f64 + 1.0) / 3.0 + 0.4;
        #[allow(clippy::cast_precision_loss)]
        if bound(a.len().min(b.len()) as f64) < threshold {
            return false;
        }
        let mut counts = [0i16; 128];
        for c in a.bytes() {
            if let Some(n) = counts.get_mut(usize::from(c)) {
                *n += 1;
            }
        }
        let mut common = 0u32;
        for c in b.bytes() {
            if let Some(n) = counts.get_mut(usize::from(c))
                && *n > 0
            {
                *n -= 1;
                common += 1;
            }
        }
        if common == 0 || bound(f64::from(common)) < threshold {
            return false;
        }
    }
    jaro_winkler(a, b) >= threshold
}

/// The eight digits `YYYYMMDD` of a date.
fn date_digits(d: chrono::NaiveDate) -> [u8; 8] {
    let mut out = [b'0'; 8];
    let (y, m, dd) = (
        u32::try_from(d.year()).unwrap_or(0) % 10_000,
        d.month(),
        d.day(),
    );
    for (i, (value, width)) in [(y, 4), (m, 2), (dd, 2)].into_iter().enumerate() {
        let start = [0, 4, 6][i];
        let mut v = value;
        for k in (0..width).rev() {
            if let Some(slot) = out.get_mut(start + k) {
                // `v % 10` is a digit.
                *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
            }
            v /= 10;
        }
    }
    out
}

fn digits_within_one_edit(a: &[u8], b: &[u8]) -> bool {
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(x), Ok(y)) => x.len() == y.len() && within_one_edit(x, y),
        _ => false,
    }
}

/// The birth-date level: valid dates by [`compare_dates`]; a date that is not a valid day
/// (its eight digits kept by normalisation) counts only when it is one slip away from the
/// other record's date, since an unreadable date asserts no conflict.
fn compare_birth(a: &NormalizedPerson, b: &NormalizedPerson) -> Option<Level> {
    if let (Some(x), Some(y)) = (a.birth_date, b.birth_date) {
        return Some(compare_dates(x, y));
    }
    let digits = |p: &NormalizedPerson| -> Option<Vec<[u8; 8]>> {
        if let Some(d) = p.birth_date {
            let mut v = vec![date_digits(d.date)];
            v.extend(d.swapped().filter(|_| d.ambiguous).map(date_digits));
            return Some(v);
        }
        let raw = p.unreadable_birth_date.as_deref()?.as_bytes();
        let arr: [u8; 8] = raw.try_into().ok()?;
        Some(vec![arr])
    };
    let (da, db) = (digits(a)?, digits(b)?);
    da.iter()
        .any(|x| db.iter().any(|y| digits_within_one_edit(x, y)))
        .then_some(Level::Typo)
}

fn compare_dates(a: BirthDate, b: BirthDate) -> Level {
    let readings = |d: BirthDate| [Some(d.date), d.swapped().filter(|_| d.ambiguous)];
    let (ra, rb) = (readings(a), readings(b));
    if ra
        .iter()
        .flatten()
        .any(|x| rb.iter().flatten().any(|y| x == y))
    {
        return Level::Exact;
    }
    let (x, y) = (a.date, b.date);
    if x.year() == y.year() && x.month() == y.day() && x.day() == y.month() {
        return Level::Swapped;
    }
    if ra.iter().flatten().any(|x| {
        rb.iter()
            .flatten()
            .any(|y| digits_within_one_edit(&date_digits(*x), &date_digits(*y)))
    }) {
        return Level::Typo;
    }
    let parts = |d: chrono::NaiveDate| {
        [
            i64::from(d.year()),
            i64::from(d.month()),
            i64::from(d.day()),
        ]
    };
    let (px, py) = (parts(x), parts(y));
    let differing: Vec<i64> = px
        .iter()
        .zip(py)
        .filter(|(p, q)| **p != *q)
        .map(|(p, q)| (p - q).abs())
        .collect();
    match differing.as_slice() {
        [1] => Level::Typo,
        [_] => Level::OneOff,
        _ => Level::Disagree,
    }
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
        within_one_edit(a, b) || jaro_winkler_at_least(a, b, 0.88)
    } else if shorter >= 3 {
        one_transposition(a, b)
    } else {
        false
    };
    close.then_some(false)
}

/// Whether two given names (both present) are two different names rather than one name
/// with a typo. With both in hanzi: a different pronunciation (a homophone is a typo). With
/// hanzi on one side the names are Chinese, and a short pinyin given name that differs by
/// anything but one transposition is another name (lan/yan, li/lu). Otherwise (Latin
/// letters on both sides): more than one edit apart (zihan/zixuan; kayla/kayl is a typo).
fn given_names_differ(gx: &str, gy: &str, both_hanzi: bool, any_hanzi: bool) -> bool {
    if gx == gy {
        return false;
    }
    if both_hanzi {
        return true;
    }
    if any_hanzi && gx.len().min(gy.len()) < 5 {
        return !one_transposition(gx, gy);
    }
    !within_one_edit(gx, gy)
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
    let (kx, ky) = (x.key_set(), y.key_set());
    if x.shares_key(y) {
        let level = if x.hanzi.is_none() && y.hanzi.is_none() {
            Level::Exact
        } else {
            Level::Phonetic
        };
        return (level, false);
    }
    let both_hanzi = x.given_hanzi().is_some() && y.given_hanzi().is_some();
    let any_hanzi = x.hanzi.is_some() || y.hanzi.is_some();
    // Latin parts sent as family and given are also read swapped (a data-entry slip); the
    // swapped reading counts for agreement, not for the twin pattern, whose family name is
    // the one sent as such.
    let swapped = |n: &NormalizedName, reading: usize| {
        reading > 0 && n.hanzi.is_none() && n.family.is_some() && n.given.is_some()
    };
    let mut best_level = Level::Disagree;
    let mut given_differs = false;
    for (ix, (fx, gx)) in x.split_set().iter().enumerate() {
        for (iy, (fy, gy)) in y.split_set().iter().enumerate() {
            let fam = token_agrees(fx, fy);
            let giv = token_agrees(gx, gy);
            let l = match (fam, giv) {
                (Some(_), Some(_)) => Level::Fuzzy,
                (Some(_), None) | (None, Some(_)) => Level::Partial,
                (None, None) => Level::Disagree,
            };
            // The twin and sibling pattern: the family names agree and the given names are
            // two names (子涵/子轩, zihan/zixuan are close by Jaro–Winkler but are two names).
            let g = fam.is_some()
                && !swapped(x, ix)
                && !swapped(y, iy)
                && !gx.is_empty()
                && !gy.is_empty()
                && given_names_differ(gx, gy, both_hanzi, any_hanzi);
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
                .any(|b| a.len().min(b.len()) >= 6 && jaro_winkler_at_least(a, b, 0.92))
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
    fn the_fast_string_measures_agree_with_strsim() {
        let words = [
            "", "a", "ab", "ba", "abc", "acb", "zhang", "zhnag", "zhan", "zhangg", "wei", "wie",
            "wen", "michaela", "micheala", "michael", "neumann", "neuman", "jessica", "jesdicai",
            "6692221", "6692321", "6692212", "669222", "张伟", "张玮", "19330122", "19330212",
        ];
        for a in words {
            for b in words {
                assert_eq!(within_one_edit(a, b), osa_distance(a, b) <= 1, "{a} {b}");
                for t in [0.8, 0.88, 0.92] {
                    assert_eq!(
                        jaro_winkler_at_least(a, b, t),
                        jaro_winkler(a, b) >= t,
                        "{a} {b} {t}"
                    );
                }
                let transposed = a.len() == b.len() && osa_distance(a, b) == 1 && {
                    let (mut x, mut y): (Vec<char>, Vec<char>) =
                        (a.chars().collect(), b.chars().collect());
                    x.sort_unstable();
                    y.sort_unstable();
                    x == y
                };
                assert_eq!(one_transposition(a, b), transposed, "{a} {b}");
            }
        }
    }

    fn person(dob: &str, address: &str, postcode: Option<&str>) -> NormalizedPerson {
        crate::identity::normalize::normalize(&crate::identity::Demographics {
            birth_date: Some(dob.into()),
            addresses: vec![crate::identity::PostalAddress {
                text: address.into(),
                postal_code: postcode.map(str::to_owned),
            }],
            ..crate::identity::Demographics::default()
        })
    }

    #[test]
    fn birth_date_levels_tell_a_keying_slip_from_another_date() {
        let level = |a: &str, b: &str| {
            compare(&person(a, "", None), &person(b, "", None))
                .vector
                .get(FieldKind::BirthDate)
        };
        assert_eq!(level("19330122", "1933-01-22"), Some(Level::Exact));
        assert_eq!(level("19850312", "19851203"), Some(Level::Swapped));
        // A transposition across month and day, a substituted digit, a day off by one.
        assert_eq!(level("19330122", "19330212"), Some(Level::Typo));
        assert_eq!(level("19571024", "19571204"), Some(Level::Typo));
        assert_eq!(level("19711219", "19711218"), Some(Level::Typo));
        assert_eq!(level("20150510", "20150509"), Some(Level::Typo));
        // Another year altogether: one component, not a slip.
        assert_eq!(level("19880923", "20090923"), Some(Level::OneOff));
        assert_eq!(level("19380407", "19800101"), Some(Level::Disagree));
        // An unreadable date counts only as a slip of the other one (month 13), else not at
        // all: it asserts no conflict.
        assert_eq!(level("19711319", "19711219"), Some(Level::Typo));
        assert_eq!(level("19948031", "19940831"), Some(Level::Typo));
        assert_eq!(level("19711319", "19500101"), None);
        assert_eq!(level("31/13/1971", "19711231"), None);
    }

    #[test]
    fn addresses_need_the_house_numbers_to_be_exact_and_postcodes_may_be_close() {
        let pair = |a: &str, b: &str, pa: &str, pb: &str| {
            let v = compare(
                &person("19800101", a, Some(pa)),
                &person("19800101", b, Some(pb)),
            )
            .vector;
            (v.get(FieldKind::Address), v.get(FieldKind::Postcode))
        };
        // Neighbours on one road share most bigrams but not their numbers.
        assert_eq!(
            pair(
                "浙江省杭州市西湖区和平街2号16栋555室",
                "浙江省杭州市西湖区和平街172号18栋1037室",
                "310012",
                "310012"
            ),
            (Some(Level::Partial), Some(Level::Exact))
        );
        assert_eq!(
            pair(
                "浙江省杭州市西湖区和平街2号16栋555室",
                "浙江省杭州市西湖区和平街2号16栋555室",
                "310012",
                "310021"
            ),
            (Some(Level::Exact), Some(Level::Close))
        );
        // Latin words one typo apart count as shared.
        assert_eq!(
            pair(
                "19 warrumbul street gordonvale brighton nt",
                "19 warrumbmul street gordoivale brighton nt",
                "3782",
                "3728"
            ),
            (Some(Level::Exact), Some(Level::Close))
        );
        assert_eq!(
            pair("8 lethbridge street", "9 lethbridge street", "2767", "6702"),
            (Some(Level::Partial), Some(Level::Disagree))
        );
    }

    #[test]
    fn given_names_differ_by_pronunciation_for_hanzi_and_by_edits_for_letters() {
        // Hanzi on both sides: the pinyin decides (a homophone is a slip).
        assert!(level("潘璐", "潘玉").1, "lu/yu are two names");
        assert!(!level("张伟", "张玮").1, "a homophone");
        // Hanzi on one side: a short pinyin syllable with another letter is another name.
        assert!(level("胡兰", "Hu Yan").1);
        assert!(!level("胡兰", "Hu Lna").1, "a transposition is a slip");
        // Letters only: one edit is a slip, two are another name.
        let parts = |f: &str, g: &str| {
            vec![crate::identity::normalize::normalize_name(&PersonName::parts(f, g)).unwrap()]
        };
        assert!(!compare_names(&parts("stanley", "kayla"), &parts("stanley", "kayl")).1);
        assert!(compare_names(&parts("iovino", "andrew"), &parts("iovino", "tayla")).1);
        // Latin parts sent swapped still agree, but the swapped reading is no twin pattern.
        let (l, g) = compare_names(&parts("tabrett", "hayden"), &parts("everett", "hayden"));
        assert_eq!((l, g), (Some(Level::Partial), false));
        let (l, _) = compare_names(&parts("streich", "natalia"), &parts("natalia", "masobn"));
        assert_eq!(l, Some(Level::Partial));
    }

    #[test]
    fn short_pinyin_surnames_are_not_fuzzy_equal() {
        assert_eq!(token_agrees("li", "lin"), None);
        assert_eq!(token_agrees("chen", "cheng"), None);
        assert_eq!(token_agrees("wei", "wie"), Some(false));
    }
}
