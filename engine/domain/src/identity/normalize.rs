//! Normalisation: [`Demographics`] → [`NormalizedPerson`], the form that is compared,
//! blocked on and stored in the candidate index (STANDARDS MATCH-05).
//!
//! * Names: NFKC (full-width → half-width), traditional → simplified ([`super::t2s`]), the
//!   middle-dot variants of minority names (`·` `•` `．` `・` `‧` `∙` `⋅`) and spaces become a
//!   token boundary and vanish from the ideographic form (`阿依古丽·买买提` → `阿依古丽买买提`);
//!   hanzi get their toneless pinyin (`张伟` → `zhang` + `wei`, with the surname readings of
//!   heteronyms such as 单 shan, 曾 zeng, 解 xie); Latin text is lower-cased and loses its
//!   diacritics and tone marks (`zhāng wěi` → `zhang wei`, `Müller` → `muller`). The surname
//!   of a hanzi name is its first character, or its first two for a compound surname (欧阳,
//!   司马, …); a Latin name sent as one text has no known order, so comparison tries both.
//! * Phones: digits only, without `+86`/`0086`/`86` and without a leading trunk `0`
//!   (`0771 5551234` and `+86 771 5551234` are the same number); an extension is dropped.
//! * Addresses: folded like names, then word tokens (Latin) or character bigrams (hanzi).
//! * Resident ids: upper-cased and validated; a valid one yields its region, birth date and
//!   sex, which are cross-checked with the stated ones: a mismatch is a
//!   [`RecordFinding`] and keeps the id out of deterministic rules.

use std::sync::OnceLock;

use chrono::NaiveDate;
use pinyin::ToPinyin;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::demographics::{BirthDate, Demographics, OtherId, PersonName, parse_birth_date};
use super::t2s::simplify_char;
use crate::patient::Sex;
use crate::resident_id::check_resident_id;

/// A person record ready for comparison: what [`normalize`] makes of [`Demographics`].
/// Serialisable so a store can keep it next to the index entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NormalizedPerson {
    /// The facility (assigning authority) of `local_id`.
    pub facility: String,
    /// The facility's own patient id.
    pub local_id: String,
    /// Every readable name.
    pub names: Vec<NormalizedName>,
    /// The birth date, when readable.
    pub birth_date: Option<BirthDate>,
    /// The eight digits of a birth date sent year first that is not a valid day
    /// (`19711319`, `1917-50-09`): compared only for a keying slip against the other
    /// record's date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable_birth_date: Option<String>,
    /// Male or female; `None` when unknown, other or not sent.
    pub sex: Option<Sex>,
    /// Phone numbers, normalised by [`normalize_phone`].
    pub phones: Vec<String>,
    /// Addresses, as token sets.
    pub addresses: Vec<NormalizedAddress>,
    /// Resident identity numbers (居民身份证号).
    pub resident_ids: Vec<NormalizedResidentId>,
    /// 医保 numbers with their insured region.
    pub insurance: Vec<InsuranceId>,
    /// Other national identifiers.
    pub national_ids: Vec<NationalId>,
    /// What looked wrong in this record (explained with every decision about it).
    pub findings: Vec<RecordFinding>,
}

/// A name in comparable form.
///
/// The comparison keys ([`NormalizedName::key_set`], [`NormalizedName::split_set`]) are
/// computed once, on first use, from the public fields and cached: build a new name rather
/// than changing the fields of one that was already compared.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NormalizedName {
    /// The ideographic name, simplified, without separators (`张伟`, `阿依古丽买买提`);
    /// `None` for a Latin-only name.
    pub hanzi: Option<String>,
    /// The family name in toneless pinyin or Latin, without spaces (`zhang`, `ouyang`),
    /// when known.
    pub family: Option<String>,
    /// The given name(s) likewise (`xiaoming`), when known.
    pub given: Option<String>,
    /// Every token in the order written (`["ayiguli", "maimaiti"]`, `["wei", "zhang"]`); used
    /// when family and given are not known.
    pub tokens: Vec<String>,
    /// What comparison reads, derived from the fields above (not serialised).
    #[serde(skip)]
    cache: OnceLock<NameKeys>,
}

/// The derived comparison keys of a name.
#[derive(Clone, Debug, Default)]
struct NameKeys {
    keys: Vec<String>,
    key_hashes: Vec<u64>,
    splits: Vec<(String, String)>,
    given_hanzi: Option<String>,
}

impl PartialEq for NormalizedName {
    /// Equal fields (the cache is derived from them).
    fn eq(&self, other: &Self) -> bool {
        self.hanzi == other.hanzi
            && self.family == other.family
            && self.given == other.given
            && self.tokens == other.tokens
    }
}

impl Eq for NormalizedName {}

impl NormalizedName {
    /// A name from its parts (the cache starts empty).
    pub fn new(
        hanzi: Option<String>,
        family: Option<String>,
        given: Option<String>,
        tokens: Vec<String>,
    ) -> NormalizedName {
        NormalizedName {
            hanzi,
            family,
            given,
            tokens,
            cache: OnceLock::new(),
        }
    }

    fn cached(&self) -> &NameKeys {
        self.cache.get_or_init(|| {
            let keys = self.keys();
            NameKeys {
                key_hashes: keys.iter().map(|k| fnv1a(k.as_bytes())).collect(),
                keys,
                splits: self.splits(),
                given_hanzi: match (&self.hanzi, &self.family, &self.given) {
                    (Some(h), Some(_), Some(_)) => {
                        Some(split_hanzi_name(h).1.to_owned()).filter(|g| !g.is_empty())
                    }
                    _ => None,
                },
            }
        })
    }

    /// True when the two names share a key (the same letters in some order): hashes first,
    /// then the texts.
    pub fn shares_key(&self, other: &NormalizedName) -> bool {
        let (a, b) = (self.cached(), other.cached());
        a.key_hashes.iter().zip(&a.keys).any(|(ha, ka)| {
            b.key_hashes
                .iter()
                .zip(&b.keys)
                .any(|(hb, kb)| ha == hb && ka == kb)
        })
    }

    /// [`NormalizedName::keys`], computed once.
    pub fn key_set(&self) -> &[String] {
        &self.cached().keys
    }

    /// [`NormalizedName::splits`], computed once.
    pub fn split_set(&self) -> &[(String, String)] {
        &self.cached().splits
    }

    /// The given name in hanzi (`伟` of `张伟`), when the name has hanzi and a known
    /// family/given structure.
    pub fn given_hanzi(&self) -> Option<&str> {
        self.cached().given_hanzi.as_deref()
    }

    /// The name's letters in the possible orders, concatenated (`zhangwei`, `weizhang`):
    /// equal keys mean the same pronunciation whatever the order and spacing.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        match (&self.family, &self.given) {
            (Some(f), Some(g)) => {
                keys.push(format!("{f}{g}"));
                keys.push(format!("{g}{f}"));
            }
            (Some(one), None) | (None, Some(one)) => keys.push(one.clone()),
            (None, None) => {
                if !self.tokens.is_empty() {
                    keys.push(self.tokens.concat());
                    if self.tokens.len() > 1 {
                        let mut rotated = self.tokens.clone();
                        rotated.rotate_left(1);
                        keys.push(rotated.concat());
                        rotated.rotate_right(2);
                        keys.push(rotated.concat());
                    }
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// The (family, given) readings compared: the parts when known (for a name without
    /// hanzi also swapped, since Latin parts are often sent in the wrong fields), else the
    /// tokens split as (first, rest) and (last, the others).
    pub fn splits(&self) -> Vec<(String, String)> {
        match (&self.family, &self.given) {
            (Some(f), Some(g)) if self.hanzi.is_none() => {
                vec![(f.clone(), g.clone()), (g.clone(), f.clone())]
            }
            (Some(f), Some(g)) => vec![(f.clone(), g.clone())],
            (Some(f), None) => vec![(f.clone(), String::new())],
            (None, Some(g)) => vec![(String::new(), g.clone())],
            (None, None) => match (self.tokens.split_first(), self.tokens.split_last()) {
                (Some((only, [])), _) => vec![(String::new(), only.clone())],
                (Some((first, rest)), Some((last, init))) => {
                    vec![
                        (first.clone(), rest.concat()),
                        (last.clone(), init.concat()),
                    ]
                }
                _ => Vec::new(),
            },
        }
    }
}

/// An address as tokens.
///
/// Comparison reads the tokens through a cached, hashed form
/// ([`NormalizedAddress::token_hashes`]), computed once from `tokens`: build a new address
/// rather than changing the tokens of one that was already compared.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NormalizedAddress {
    /// Sorted, de-duplicated tokens: Latin words and digit runs, hanzi bigrams.
    pub tokens: Vec<String>,
    /// The postal code, digits and letters only, upper-cased.
    pub postal_code: Option<String>,
    /// The hashed tokens (not serialised).
    #[serde(skip)]
    cache: OnceLock<Vec<TokenHash>>,
}

/// One address token, hashed: equal hashes are taken as equal tokens (a 64-bit collision
/// among the few tokens of two addresses is negligible).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenHash {
    /// The token's hash.
    pub hash: u64,
    /// Its position in [`NormalizedAddress::tokens`].
    pub index: u32,
    /// True for a run of digits (a house, building or room number, a street number).
    pub number: bool,
}

impl PartialEq for NormalizedAddress {
    /// Equal tokens and postal code (the cache is derived from them).
    fn eq(&self, other: &Self) -> bool {
        self.tokens == other.tokens && self.postal_code == other.postal_code
    }
}

impl Eq for NormalizedAddress {}

impl NormalizedAddress {
    /// An address from its tokens (sorted and de-duplicated here) and postal code.
    pub fn new(mut tokens: Vec<String>, postal_code: Option<String>) -> NormalizedAddress {
        tokens.sort();
        tokens.dedup();
        NormalizedAddress {
            tokens,
            postal_code,
            cache: OnceLock::new(),
        }
    }

    /// The tokens hashed, sorted by hash; computed once.
    pub fn token_hashes(&self) -> &[TokenHash] {
        self.cache.get_or_init(|| {
            let mut v: Vec<TokenHash> = self
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| TokenHash {
                    hash: fnv1a(t.as_bytes()),
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    number: !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()),
                })
                .collect();
            v.sort_unstable();
            v
        })
    }
}

/// FNV-1a with a final mix: a fast 64-bit hash of short texts (tokens, keys).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// A resident identity number and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizedResidentId {
    /// The number, trimmed, without spaces, `x` upper-cased.
    pub number: String,
    /// Whether it passes the GB 11643 check.
    pub valid: bool,
    /// For a valid number: the birth date it encodes.
    pub birth_date: Option<NaiveDate>,
    /// For a valid number: the sex it encodes.
    pub sex: Option<Sex>,
    /// For a valid number: the region (GB/T 2260) it was issued in.
    pub region: Option<String>,
    /// False when the number's birth date or sex contradicts the stated one: the number may
    /// be a parent's (infants are registered under a parent's number) or mistyped, so no
    /// deterministic rule uses it.
    pub consistent: bool,
}

/// A 医保 person number and its insured region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InsuranceId {
    /// `psn_no`, trimmed and upper-cased.
    pub psn_no: String,
    /// The insured region code, trimmed.
    pub region: String,
}

/// Another national identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NationalId {
    /// The system, trimmed and lower-cased.
    pub system: String,
    /// The value: letters and digits only, upper-cased.
    pub value: String,
}

/// Something in a single record that lowers trust in it; shown in every explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFinding {
    /// A resident id fails the GB 11643 check: compared as a plain number only.
    ResidentIdInvalid,
    /// A valid resident id encodes another birth date than the stated one.
    ResidentIdBirthDateMismatch,
    /// A valid resident id encodes another sex than the stated one.
    ResidentIdSexMismatch,
    /// The birth date is `DD/MM/YYYY` with both parts ≤ 12: either reading is accepted.
    BirthDateAmbiguous,
    /// A birth date was sent but is not a readable day.
    BirthDateUnreadable,
}

/// Normalises one record's demographics.
pub fn normalize(d: &Demographics) -> NormalizedPerson {
    let mut findings = Vec::new();
    let mut unreadable_birth_date = None;
    let birth_date = match d.birth_date.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => {
            let parsed = parse_birth_date(raw);
            match parsed {
                None => {
                    findings.push(RecordFinding::BirthDateUnreadable);
                    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
                    let year_first = raw.chars().take(4).all(|c| c.is_ascii_digit());
                    if digits.len() == 8 && year_first {
                        unreadable_birth_date = Some(digits);
                    }
                }
                Some(b) if b.ambiguous => findings.push(RecordFinding::BirthDateAmbiguous),
                Some(_) => {}
            }
            parsed
        }
        _ => None,
    };
    let sex = d.sex.filter(|s| matches!(s, Sex::Male | Sex::Female));
    let mut names: Vec<NormalizedName> = d.names.iter().filter_map(normalize_name).collect();
    names.dedup();
    // Filled now, once, rather than at the first comparison.
    for n in &names {
        n.key_set();
    }
    let mut phones: Vec<String> = d.phones.iter().filter_map(|p| normalize_phone(p)).collect();
    phones.sort();
    phones.dedup();
    let addresses = d
        .addresses
        .iter()
        .map(|a| {
            let address = NormalizedAddress::new(
                address_tokens(&a.text),
                a.postal_code
                    .as_deref()
                    .map(alnum_upper)
                    .filter(|p| !p.is_empty()),
            );
            // Filled now, once, rather than at the first comparison.
            address.token_hashes();
            address
        })
        .filter(|a| !a.tokens.is_empty() || a.postal_code.is_some())
        .collect();
    let mut resident_ids = Vec::new();
    let mut insurance = Vec::new();
    let mut national_ids = Vec::new();
    for id in &d.identifiers {
        match id {
            OtherId::ResidentId { value } => {
                let number = alnum_upper(value);
                if number.is_empty() {
                    continue;
                }
                let rid = match check_resident_id(&number) {
                    Ok(info) => {
                        let id_birth = NaiveDate::parse_from_str(&info.birth_date, "%Y-%m-%d").ok();
                        let mut consistent = true;
                        if let (Some(stated), Some(encoded)) = (birth_date, id_birth)
                            && stated.date != encoded
                            && !(stated.ambiguous && stated.swapped() == Some(encoded))
                        {
                            consistent = false;
                            findings.push(RecordFinding::ResidentIdBirthDateMismatch);
                        }
                        if let Some(stated) = sex
                            && stated != info.sex
                        {
                            consistent = false;
                            findings.push(RecordFinding::ResidentIdSexMismatch);
                        }
                        NormalizedResidentId {
                            number,
                            valid: true,
                            birth_date: id_birth,
                            sex: Some(info.sex),
                            region: Some(info.region),
                            consistent,
                        }
                    }
                    Err(_) => {
                        findings.push(RecordFinding::ResidentIdInvalid);
                        NormalizedResidentId {
                            number,
                            valid: false,
                            birth_date: None,
                            sex: None,
                            region: None,
                            consistent: false,
                        }
                    }
                };
                resident_ids.push(rid);
            }
            OtherId::Insurance { psn_no, region } => {
                let psn_no = alnum_upper(psn_no);
                if !psn_no.is_empty() {
                    insurance.push(InsuranceId {
                        psn_no,
                        region: region.trim().to_owned(),
                    });
                }
            }
            OtherId::National { system, value } => {
                let value = alnum_upper(value);
                if !value.is_empty() {
                    national_ids.push(NationalId {
                        system: system.trim().to_lowercase(),
                        value,
                    });
                }
            }
        }
    }
    findings.sort_by_key(|f| *f as u8);
    findings.dedup();
    NormalizedPerson {
        facility: d.facility.trim().to_owned(),
        local_id: d.local_id.trim().to_owned(),
        names,
        birth_date,
        unreadable_birth_date,
        sex,
        phones,
        addresses,
        resident_ids,
        insurance,
        national_ids,
        findings,
    }
}

fn alnum_upper(s: &str) -> String {
    s.nfkc()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// True for a CJK ideograph (the URO, extensions A–H, compatibility ideographs) and 〇.
pub fn is_han(c: char) -> bool {
    matches!(u32::from(c),
        0x3007 | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x323AF)
}

/// Characters that separate the parts of a name: spaces, the middle-dot variants used in
/// transcribed minority and foreign names, and Latin punctuation.
fn is_name_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '·' | '•'
                | '．'
                | '・'
                | '‧'
                | '∙'
                | '⋅'
                | '･'
                | '.'
                | ','
                | '-'
                | '_'
                | '\''
                | '’'
                | '‐'
                | '‑'
                | '–'
                | '—'
                | '/'
                | '('
                | ')'
        )
}

/// Compound (two-character) surnames, simplified: the family name of a hanzi name sent as one
/// text is these two characters when it starts with one of them, else the first character.
pub const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "长孙", "宇文",
    "司徒", "司空", "夏侯", "轩辕", "端木", "西门", "南宫", "独孤", "澹台", "单于", "呼延", "万俟",
    "闻人", "申屠", "太史", "公冶", "赫连", "钟离", "宗政", "濮阳", "淳于", "百里", "东郭", "拓跋",
    "完颜", "纳兰", "第五", "谷梁", "乐正", "左丘", "公羊", "梁丘",
];

/// Surname readings of characters whose most common reading differs when they are a
/// family name (and compound surnames with such a character).
const SURNAME_READINGS: &[(&str, &str)] = &[
    ("单", "shan"),
    ("曾", "zeng"),
    ("解", "xie"),
    ("仇", "qiu"),
    ("区", "ou"),
    ("查", "zha"),
    ("朴", "piao"),
    ("乐", "yue"),
    ("覃", "qin"),
    ("缪", "miao"),
    ("翟", "zhai"),
    ("盖", "ge"),
    ("任", "ren"),
    ("华", "hua"),
    ("纪", "ji"),
    ("沈", "shen"),
    ("员", "yun"),
    ("繁", "po"),
    ("秘", "bi"),
    ("召", "shao"),
    ("折", "she"),
    ("种", "chong"),
    ("祭", "zhai"),
    ("莘", "shen"),
    ("尉迟", "yuchi"),
    ("万俟", "moqi"),
    ("长孙", "zhangsun"),
    ("单于", "chanyu"),
    ("令狐", "linghu"),
    ("澹台", "tantai"),
    ("乐正", "yuezheng"),
    ("柏", "bai"),
    ("薄", "bo"),
    ("隗", "wei"),
    ("句", "gou"),
    ("黑", "he"),
    ("重", "chong"),
    ("幺", "yao"),
    ("过", "guo"),
    ("那", "na"),
    ("阚", "kan"),
    ("蕃", "pi"),
    ("谌", "chen"),
    ("尉", "wei"),
    ("秦", "qin"),
    ("宿", "su"),
];

/// The toneless pinyin of a hanzi string (already simplified), syllables concatenated; a
/// character without a reading is written `u{hex}` so that it still equals itself.
pub fn hanzi_pinyin(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        match c.to_pinyin() {
            Some(p) => out.push_str(&fold_latin(p.plain())),
            None if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            None => out.push_str(&format!("u{:x}", u32::from(c))),
        }
    }
    out
}

fn surname_pinyin(s: &str) -> String {
    match SURNAME_READINGS.iter().find(|(h, _)| *h == s) {
        Some((_, p)) => (*p).to_owned(),
        None => {
            // A compound surname with a heteronym first character (长孙 is listed whole).
            let mut chars = s.chars();
            match (chars.next(), chars.as_str()) {
                (Some(first), rest) if !rest.is_empty() => {
                    let head = first.to_string();
                    match SURNAME_READINGS.iter().find(|(h, _)| *h == head) {
                        Some((_, p)) => format!("{p}{}", hanzi_pinyin(rest)),
                        None => hanzi_pinyin(s),
                    }
                }
                _ => hanzi_pinyin(s),
            }
        }
    }
}

/// Lower-cases, strips diacritics and tone marks, and keeps ASCII letters and digits only
/// (`Zhāng` → `zhang`, `Müller` → `muller`, `lǚ` → `lu`).
pub fn fold_latin(s: &str) -> String {
    s.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// NFKC (full-width → half-width), then traditional → simplified.
fn fold_text(s: &str) -> String {
    s.nfkc().map(simplify_char).collect()
}

/// Pinyin spellings of ü in Latin text (`lv`, `lyu` for 吕, `nv` for 女) read as `u`, as the
/// pinyin of hanzi is written here.
fn fold_pinyin_token(t: String) -> String {
    match t.as_str() {
        "lv" | "lyu" => "lu".to_owned(),
        "nv" | "nyu" => "nu".to_owned(),
        _ => t,
    }
}

/// Splits text into (hanzi segments, Latin tokens), at separators.
fn segments(s: &str) -> (Vec<String>, Vec<String>) {
    let folded = fold_text(s);
    let mut han = Vec::new();
    let mut latin = Vec::new();
    let mut cur_han = String::new();
    let mut cur_lat = String::new();
    for c in folded.chars() {
        if is_han(c) {
            if !cur_lat.is_empty() {
                latin.push(std::mem::take(&mut cur_lat));
            }
            cur_han.push(c);
        } else if is_name_separator(c) {
            if !cur_han.is_empty() {
                han.push(std::mem::take(&mut cur_han));
            }
            if !cur_lat.is_empty() {
                latin.push(std::mem::take(&mut cur_lat));
            }
        } else {
            if !cur_han.is_empty() {
                han.push(std::mem::take(&mut cur_han));
            }
            cur_lat.push(c);
        }
    }
    if !cur_han.is_empty() {
        han.push(cur_han);
    }
    if !cur_lat.is_empty() {
        latin.push(cur_lat);
    }
    let latin = latin
        .into_iter()
        .map(|t| fold_pinyin_token(fold_latin(&t)))
        .filter(|t| !t.is_empty())
        .collect();
    (han, latin)
}

/// Normalises one name; `None` when it holds neither hanzi nor letters.
pub fn normalize_name(n: &PersonName) -> Option<NormalizedName> {
    let part = |p: &Option<String>| {
        p.as_deref()
            .map(segments)
            .filter(|(h, l)| !h.is_empty() || !l.is_empty())
    };
    let family = part(&n.family);
    let given = part(&n.given);
    if family.is_some() || given.is_some() {
        let hanzi_of = |p: &Option<(Vec<String>, Vec<String>)>| {
            p.as_ref()
                .map(|(h, _)| h.concat())
                .filter(|h| !h.is_empty())
        };
        let fam_h = hanzi_of(&family);
        let giv_h = hanzi_of(&given);
        let fam_l = family.as_ref().map(|(h, l)| {
            if h.is_empty() {
                l.concat()
            } else {
                surname_pinyin(&h.concat())
            }
        });
        let giv_l = given.as_ref().map(|(h, l)| {
            if h.is_empty() {
                l.concat()
            } else {
                hanzi_pinyin(&h.concat())
            }
        });
        let hanzi = match (&fam_h, &giv_h) {
            (None, None) => None,
            (f, g) => Some(format!(
                "{}{}",
                f.as_deref().unwrap_or(""),
                g.as_deref().unwrap_or("")
            )),
        };
        let mut tokens: Vec<String> = Vec::new();
        tokens.extend(fam_l.clone());
        tokens.extend(giv_l.clone());
        return Some(NormalizedName::new(
            hanzi,
            fam_l.filter(|s| !s.is_empty()),
            giv_l.filter(|s| !s.is_empty()),
            tokens,
        ));
    }
    let (han, latin) = segments(&n.text);
    if han.is_empty() && latin.is_empty() {
        return None;
    }
    if han.is_empty() {
        return Some(NormalizedName::new(None, None, None, latin));
    }
    let hanzi = han.concat();
    if han.len() > 1 {
        // Separated parts (阿依古丽·买买提): no family/given structure.
        return Some(NormalizedName::new(
            Some(hanzi),
            None,
            None,
            han.iter().map(|h| hanzi_pinyin(h)).collect(),
        ));
    }
    let (fam, giv) = split_hanzi_name(&hanzi);
    let family = surname_pinyin(fam);
    let given = hanzi_pinyin(giv);
    let mut tokens = vec![family.clone()];
    if !given.is_empty() {
        tokens.push(given.clone());
    }
    Some(NormalizedName::new(
        Some(hanzi),
        Some(family),
        Some(given).filter(|g| !g.is_empty()),
        tokens,
    ))
}

/// Splits a simplified hanzi name into family and given name: a compound surname when the
/// name starts with one and has a given name after it, else the first character.
pub fn split_hanzi_name(name: &str) -> (&str, &str) {
    for s in COMPOUND_SURNAMES {
        if let Some(rest) = name.strip_prefix(s)
            && !rest.is_empty()
        {
            return (&name[..s.len()], rest);
        }
    }
    let cut = name.chars().next().map_or(0, char::len_utf8);
    name.split_at(cut)
}

/// A phone number as digits: without an extension (after `x`, `ext`, `转`, `#`), without the
/// `+86`/`0086`/`86` country code and without a leading trunk `0`. `None` for fewer than 7
/// digits.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let folded: String = raw.nfkc().collect::<String>().to_lowercase();
    let main = folded
        .split(['x', '#', '转'])
        .next()
        .unwrap_or("")
        .split("ext")
        .next()
        .unwrap_or("");
    let plus = main.trim_start().starts_with('+');
    let mut digits: String = main.chars().filter(char::is_ascii_digit).collect();
    if let Some(rest) = digits.strip_prefix("0086") {
        digits = rest.to_owned();
    } else if digits.starts_with("86") && (plus || digits.len() >= 12) {
        digits = digits.split_off(2);
    } else if plus {
        // Another country: keep its code, it cannot collide with a mainland number.
        return (digits.len() >= 7).then(|| format!("+{digits}"));
    }
    if digits.starts_with('0') && digits.len() >= 10 {
        digits.remove(0);
    }
    (digits.len() >= 7).then_some(digits)
}

/// Address tokens: Latin words and digit runs, and bigrams of consecutive hanzi (a single
/// hanzi between separators is a token of its own); sorted and de-duplicated.
pub fn address_tokens(text: &str) -> Vec<String> {
    let folded = fold_text(text);
    let mut tokens = Vec::new();
    let mut han: Vec<char> = Vec::new();
    let mut word = String::new();
    let flush_han = |han: &mut Vec<char>, tokens: &mut Vec<String>| {
        match han.len() {
            0 => {}
            1 => tokens.extend(han.first().map(char::to_string)),
            _ => tokens.extend(han.windows(2).map(|w| w.iter().collect::<String>())),
        }
        han.clear();
    };
    for c in folded.chars() {
        if is_han(c) {
            if !word.is_empty() {
                tokens.push(fold_latin(&std::mem::take(&mut word)));
            }
            han.push(c);
        } else if c.is_alphanumeric() {
            flush_han(&mut han, &mut tokens);
            word.push(c);
        } else {
            flush_han(&mut han, &mut tokens);
            if !word.is_empty() {
                tokens.push(fold_latin(&std::mem::take(&mut word)));
            }
        }
    }
    flush_han(&mut han, &mut tokens);
    if !word.is_empty() {
        tokens.push(fold_latin(&word));
    }
    tokens.retain(|t| !t.is_empty());
    tokens.sort();
    tokens.dedup();
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> NormalizedName {
        normalize_name(&PersonName::text(text)).unwrap()
    }

    #[test]
    fn chinese_names_fold_to_one_form() {
        let a = name("张伟");
        assert_eq!(a.hanzi.as_deref(), Some("张伟"));
        assert_eq!(a.family.as_deref(), Some("zhang"));
        assert_eq!(a.given.as_deref(), Some("wei"));
        assert_eq!(name("張偉").hanzi.as_deref(), Some("张伟"));
        assert_eq!(name(" 张 伟 ").keys(), a.keys());
        for latin in [
            "Zhang Wei",
            "ZHANG WEI",
            "zhāng wěi",
            "Wei Zhang",
            "ＺＨＡＮＧ　ＷＥＩ",
        ] {
            let l = name(latin);
            assert!(l.hanzi.is_none());
            assert!(
                l.keys().iter().any(|k| a.keys().contains(k)),
                "{latin}: {:?} vs {:?}",
                l.keys(),
                a.keys()
            );
        }
    }

    #[test]
    fn compound_surnames_and_surname_readings() {
        let n = name("欧阳晓东");
        assert_eq!(n.family.as_deref(), Some("ouyang"));
        assert_eq!(n.given.as_deref(), Some("xiaodong"));
        assert_eq!(name("单雄信").family.as_deref(), Some("shan"));
        assert_eq!(name("曾国藩").family.as_deref(), Some("zeng"));
        assert_eq!(name("司马光").family.as_deref(), Some("sima"));
        // A one-character name that is a compound surname prefix is not split after two.
        assert_eq!(split_hanzi_name("欧阳"), ("欧", "阳"));
    }

    #[test]
    fn minority_names_with_any_middle_dot_are_one_name() {
        let forms = [
            "阿依古丽·买买提",
            "阿依古丽•买买提",
            "阿依古丽．买买提",
            "阿依古丽・买买提",
            "阿依古丽 买买提",
        ];
        let first = name(forms[0]);
        assert_eq!(first.hanzi.as_deref(), Some("阿依古丽买买提"));
        assert_eq!(
            first.tokens,
            vec!["ayiguli".to_owned(), "maimaiti".to_owned()]
        );
        for f in forms {
            assert_eq!(name(f), first, "{f}");
        }
        let latin = name("Ayiguli Maimaiti");
        assert!(latin.keys().iter().any(|k| first.keys().contains(k)));
    }

    #[test]
    fn rare_characters_keep_their_identity() {
        let a = name("王䶮");
        assert_eq!(a.hanzi.as_deref(), Some("王䶮"));
        let b = name("李𬌗");
        assert_eq!(b.hanzi.as_deref(), Some("李𬌗"));
        assert!(!b.given.as_deref().unwrap_or("").is_empty());
    }

    #[test]
    fn latin_names_lose_case_and_diacritics() {
        assert_eq!(
            name("José MÜLLER").tokens,
            vec!["jose".to_owned(), "muller".to_owned()]
        );
        assert_eq!(name("Lyu Bu").tokens, name("吕布").tokens);
    }

    #[test]
    fn phones_compare_as_digits() {
        let cases = [
            ("+86 138-0013-8000", Some("13800138000")),
            ("0086 13800138000", Some("13800138000")),
            ("8613800138000", Some("13800138000")),
            ("138 0013 8000", Some("13800138000")),
            ("0771-5551234", Some("7715551234")),
            ("+86 771 5551234 x801", Some("7715551234")),
            ("(0771) 555 1234 转 801", Some("7715551234")),
            ("+1 415 555 0100", Some("+14155550100")),
            ("12345", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_phone(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn addresses_become_tokens() {
        assert_eq!(
            address_tokens("民族大道１００号"),
            vec!["100", "号", "大道", "族大", "民族"]
        );
        assert_eq!(
            address_tokens("12 Pinkerton Circuit, Richlands"),
            vec!["12", "circuit", "pinkerton", "richlands"]
        );
        assert_eq!(address_tokens("廣州"), address_tokens("广州"));
    }

    #[test]
    fn a_resident_id_is_cross_checked_with_the_stated_birth_date_and_sex() {
        // 11010519491231002X: born 1949-12-31, female.
        let base = Demographics {
            facility: "F".into(),
            local_id: "1".into(),
            identifiers: vec![OtherId::ResidentId {
                value: "11010519491231002x".into(),
            }],
            birth_date: Some("1949-12-31".into()),
            sex: Some(Sex::Female),
            ..Demographics::default()
        };
        let p = normalize(&base);
        assert!(p.resident_ids[0].valid && p.resident_ids[0].consistent);
        assert_eq!(p.resident_ids[0].number, "11010519491231002X");
        assert!(p.findings.is_empty());
        let infant = Demographics {
            birth_date: Some("2024-05-01".into()),
            ..base.clone()
        };
        let p = normalize(&infant);
        assert!(!p.resident_ids[0].consistent);
        assert_eq!(p.findings, vec![RecordFinding::ResidentIdBirthDateMismatch]);
        let male = Demographics {
            sex: Some(Sex::Male),
            ..base.clone()
        };
        assert_eq!(
            normalize(&male).findings,
            vec![RecordFinding::ResidentIdSexMismatch]
        );
        let invalid = Demographics {
            identifiers: vec![OtherId::ResidentId {
                value: "110105194912310021".into(),
            }],
            ..base
        };
        let p = normalize(&invalid);
        assert!(!p.resident_ids[0].valid);
        assert_eq!(p.findings, vec![RecordFinding::ResidentIdInvalid]);
    }
}
