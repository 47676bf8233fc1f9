//! A seeded, pure generator of labelled Chinese patient registrations for testing and
//! benchmarking the matcher (STANDARDS MATCH-05 AT: a labelled set with GB18030-only rare
//! characters and minority names with `·`).
//!
//! It makes households (single adults; couples with children, sometimes twins, sometimes an
//! infant registered under a parent's resident id) sharing an address and often a phone,
//! and registers every person at 1–3 of the facilities under different local ids. Each
//! registration is written with realistic variation: hanzi or pinyin (with or without tone
//! marks, upper-case, given name first), traditional characters, homophone substitutions,
//! pinyin typos, any middle-dot variant in minority names, birth dates in several formats,
//! some day/month swaps and one-component errors, missing ids, phones and addresses.
//!
//! The randomness is a SplitMix64 seeded by the caller: the same seed gives the same records.

use std::collections::HashSet;

use chrono::{Datelike, NaiveDate};
use pinyin::ToPinyin;
use serde::{Deserialize, Serialize};

use super::demographics::{Demographics, OtherId, PersonName, PostalAddress};
use super::normalize::split_hanzi_name;
use super::t2s::traditional_of;
use crate::patient::Sex;

/// SplitMix64: a tiny seeded PRNG (no OS entropy; the same seed, the same stream).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        #[allow(clippy::cast_precision_loss)]
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// The role of a person in their household.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An adult (a single person or a parent).
    Adult,
    /// A child.
    Child,
    /// One of twins.
    Twin,
    /// A child under one year old.
    Infant,
}

/// The ground truth of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Truth {
    /// The real person.
    pub person: u64,
    /// The household.
    pub family: u64,
    /// The person's role in it.
    pub role: Role,
}

/// How two registrations' people are related.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same person.
    Same,
    /// Twins.
    Twins,
    /// A parent and their child.
    ParentChild,
    /// Siblings (not twins).
    Siblings,
    /// Unrelated, or a couple.
    Other,
}

/// How `a` and `b` are related.
pub fn relation(a: &Truth, b: &Truth) -> Relation {
    if a.person == b.person {
        return Relation::Same;
    }
    if a.family != b.family {
        return Relation::Other;
    }
    match (a.role, b.role) {
        (Role::Twin, Role::Twin) => Relation::Twins,
        (Role::Adult, Role::Adult) => Relation::Other,
        (Role::Adult, _) | (_, Role::Adult) => Relation::ParentChild,
        _ => Relation::Siblings,
    }
}

/// A registration and its truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabeledRecord {
    /// What the facility sent.
    pub demographics: Demographics,
    /// Who it really is.
    pub truth: Truth,
}

/// Generator settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynthConfig {
    /// How many people (each registered 1–3 times).
    pub people: usize,
    /// The seed.
    pub seed: u64,
    /// How many facilities.
    pub facilities: usize,
    /// "Today", for ages (no clock is read).
    pub today: NaiveDate,
    /// The share of registrations that get corrupted (typos, swaps, variants); 1.0 = the
    /// rates described in the module documentation.
    pub noise: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            people: 5_000,
            seed: 14,
            facilities: 5,
            today: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            noise: 1.0,
        }
    }
}

const SURNAMES: &[(&str, u32)] = &[
    ("王", 72),
    ("李", 70),
    ("张", 68),
    ("刘", 52),
    ("陈", 45),
    ("杨", 33),
    ("黄", 24),
    ("赵", 22),
    ("吴", 20),
    ("周", 20),
    ("徐", 16),
    ("孙", 15),
    ("马", 14),
    ("朱", 13),
    ("胡", 13),
    ("郭", 12),
    ("何", 11),
    ("林", 11),
    ("罗", 10),
    ("高", 10),
    ("郑", 9),
    ("梁", 9),
    ("谢", 8),
    ("宋", 7),
    ("唐", 7),
    ("许", 7),
    ("韩", 6),
    ("冯", 6),
    ("邓", 6),
    ("曹", 6),
    ("彭", 5),
    ("曾", 5),
    ("肖", 5),
    ("田", 5),
    ("董", 5),
    ("袁", 4),
    ("潘", 4),
    ("于", 4),
    ("蒋", 4),
    ("蔡", 4),
    ("余", 4),
    ("杜", 4),
    ("叶", 4),
    ("程", 4),
    ("苏", 3),
    ("魏", 3),
    ("吕", 3),
    ("丁", 3),
    ("任", 3),
    ("沈", 3),
    ("姚", 3),
    ("卢", 3),
    ("姜", 3),
    ("崔", 3),
    ("钟", 3),
    ("谭", 3),
    ("欧阳", 1),
    ("司马", 1),
    ("诸葛", 1),
    ("上官", 1),
    ("单", 1),
    ("覃", 1),
    ("亓", 1),
    ("冼", 1),
    ("佘", 1),
    ("禤", 1),
];

const GIVEN_CHARS: &[&str] = &[
    "伟", "芳", "娜", "秀", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
    "明", "超", "秀", "霞", "平", "刚", "桂", "英", "华", "玉", "萍", "红", "建", "国", "文", "辉",
    "鹏", "晨", "宇", "浩", "欣", "怡", "婷", "雪", "琳", "晶", "斌", "波", "峰", "海", "燕", "飞",
    "鑫", "阳", "佳", "嘉", "子", "梓", "轩", "涵", "思", "睿", "博", "雨", "晓", "东", "春", "梅",
    "兰", "志", "永", "德", "福", "庆", "荣", "宁", "凯", "健", "瑞", "婉", "倩", "颖", "璐", "昊",
    "天", "一", "诺", "安", "泽", "然", "铭", "俊", "豪", "逸", "辰", "雅", "薇", "可", "馨", "悦",
];

/// Rare characters, several beyond the BMP (GB18030-only in GBK terms).
const RARE_GIVEN: &[&str] = &[
    "䶮", "𬌗", "堃", "喆", "玥", "淼", "犇", "赟", "珺", "𬀩", "𫖯", "昇",
];

/// Homophones (same toneless pinyin) that registrars mix up.
const HOMOPHONES: &[(&str, &str)] = &[
    ("伟", "玮"),
    ("丽", "莉"),
    ("静", "婧"),
    ("明", "铭"),
    ("华", "桦"),
    ("军", "君"),
    ("杰", "洁"),
    ("芳", "方"),
    ("敏", "珉"),
    ("强", "蔷"),
    ("磊", "垒"),
    ("洋", "阳"),
    ("勇", "永"),
    ("艳", "燕"),
    ("娟", "鹃"),
    ("涛", "韬"),
    ("斌", "彬"),
    ("霞", "侠"),
    ("鹏", "朋"),
    ("辉", "晖"),
    ("婷", "亭"),
    ("刚", "钢"),
    ("平", "萍"),
    ("红", "虹"),
    ("文", "雯"),
    ("建", "健"),
    ("峰", "锋"),
    ("欣", "新"),
    ("晨", "辰"),
    ("浩", "昊"),
    ("梅", "玫"),
    ("宇", "雨"),
    ("琳", "林"),
    ("晶", "菁"),
    ("佳", "嘉"),
    ("子", "梓"),
];

const MINORITY_FEMALE: &[&str] = &[
    "阿依古丽",
    "古丽娜尔",
    "帕提古丽",
    "热依拉",
    "阿娜尔",
    "米热古丽",
];
const MINORITY_MALE: &[&str] = &[
    "买买提",
    "艾力",
    "阿不都",
    "吐尔逊",
    "依明",
    "热合曼",
    "努尔",
    "艾克拜尔",
];
const DOTS: &[&str] = &["·", "•", "．", "・"];

const REGIONS: &[(&str, &str, &str)] = &[
    ("110105", "北京市朝阳区", "100020"),
    ("310104", "上海市徐汇区", "200030"),
    ("440106", "广东省广州市天河区", "510630"),
    ("450103", "广西南宁市青秀区", "530022"),
    ("510107", "四川省成都市武侯区", "610041"),
    ("650102", "新疆乌鲁木齐市天山区", "830002"),
    ("330106", "浙江省杭州市西湖区", "310012"),
    ("420106", "湖北省武汉市武昌区", "430061"),
];
const ROADS: &[&str] = &[
    "民族大道",
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "和平街",
    "长安街",
    "新华路",
    "朝阳路",
    "友谊路",
    "东风路",
    "青年路",
    "光明街",
    "文化路",
    "胜利路",
    "团结路",
];

/// A person before registration.
struct Person {
    truth: Truth,
    surname: String,
    given: String,
    /// For minority names: the second part (the father's name); the name is `given·this`.
    patronym: Option<String>,
    birth: NaiveDate,
    sex: Sex,
    resident_id: Option<String>,
    /// Registered under this (a parent's) id instead.
    borrowed_id: Option<String>,
    phone: Option<String>,
    region: usize,
    street: String,
    insurance: Option<(String, String)>,
}

/// True when two given names are read alike (the same toneless pinyin).
fn sounds_alike(a: &str, b: &str) -> bool {
    let py = |s: &str| -> String {
        s.chars()
            .map(|c| {
                c.to_pinyin()
                    .map_or_else(|| c.to_string(), |p| p.plain().to_owned())
            })
            .collect()
    };
    a == b || py(a) == py(b)
}

/// Makes a valid resident id for a region, birth date, sex and sequence.
pub fn make_resident_id(region: &str, birth: NaiveDate, sex: Sex, sequence: u32) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const C: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let seq = (sequence % 500) * 2 + u32::from(sex == Sex::Male);
    let body = format!("{region}{}{seq:03}", birth.format("%Y%m%d"));
    let sum: u32 = body
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    let check = C.get((sum % 11) as usize).copied().unwrap_or('0');
    format!("{body}{check}")
}

struct Gen {
    rng: SplitMix64,
    cfg: SynthConfig,
    surname_total: u32,
    next_person: u64,
    next_family: u64,
    /// Resident ids issued so far: a number belongs to one person.
    issued: HashSet<String>,
}

impl Gen {
    /// A resident id no one else has: the next free sequence number from `sequence` (two
    /// people of one region, birth date and sex differ in it).
    fn unique_resident_id(
        &mut self,
        region: &str,
        birth: NaiveDate,
        sex: Sex,
        sequence: u32,
    ) -> String {
        for k in 0..500 {
            let id = make_resident_id(region, birth, sex, sequence + k);
            if self.issued.insert(id.clone()) {
                return id;
            }
        }
        make_resident_id(region, birth, sex, sequence)
    }

    fn surname(&mut self) -> String {
        let mut x = (self.rng.next_u64() % u64::from(self.surname_total.max(1))) as u32;
        for (s, w) in SURNAMES {
            if x < *w {
                return (*s).to_owned();
            }
            x -= w;
        }
        "王".to_owned()
    }

    fn given(&mut self) -> String {
        let mut g = String::new();
        let n = if self.rng.chance(0.3) { 1 } else { 2 };
        for _ in 0..n {
            let pool = if self.rng.chance(0.03) {
                RARE_GIVEN
            } else {
                GIVEN_CHARS
            };
            g.push_str(self.rng.pick(pool).copied().unwrap_or("伟"));
        }
        g
    }

    fn date_between(&mut self, from_year: i32, to_year: i32) -> NaiveDate {
        let start = NaiveDate::from_ymd_opt(from_year, 1, 1).unwrap_or_default();
        let end = NaiveDate::from_ymd_opt(to_year, 12, 31).unwrap_or_default();
        let days = usize::try_from((end - start).num_days().max(1)).unwrap_or(1);
        start + chrono::Duration::days(i64::try_from(self.rng.below(days)).unwrap_or(0))
    }

    fn phone(&mut self) -> String {
        let prefix = self
            .rng
            .pick(&["138", "139", "135", "158", "186", "177", "152", "131"])
            .copied()
            .unwrap_or("138");
        format!("{prefix}{:08}", self.rng.below(100_000_000))
    }

    fn person(
        &mut self,
        family: u64,
        role: Role,
        surname: String,
        birth: NaiveDate,
        region: usize,
        street: &str,
    ) -> Person {
        self.next_person += 1;
        let sex = if self.rng.chance(0.5) {
            Sex::Male
        } else {
            Sex::Female
        };
        let region_code = REGIONS.get(region).map_or("110105", |r| r.0);
        let seq = u32::try_from(self.rng.below(500)).unwrap_or(0);
        let insurance = self.rng.chance(0.3).then(|| {
            (
                format!("{:016}", self.rng.next_u64() % 10_000_000_000_000_000),
                region_code.to_owned(),
            )
        });
        Person {
            truth: Truth {
                person: self.next_person,
                family,
                role,
            },
            surname,
            given: self.given(),
            patronym: None,
            birth,
            sex,
            resident_id: Some(self.unique_resident_id(region_code, birth, sex, seq)),
            borrowed_id: None,
            phone: None,
            region,
            street: street.to_owned(),
            insurance,
        }
    }

    fn street(&mut self) -> String {
        format!(
            "{}{}号{}栋{}室",
            self.rng.pick(ROADS).copied().unwrap_or("人民路"),
            1 + self.rng.below(300),
            1 + self.rng.below(20),
            101 + self.rng.below(1500)
        )
    }

    /// One household of people.
    fn household(&mut self) -> Vec<Person> {
        self.next_family += 1;
        let family = self.next_family;
        let region = self.rng.below(REGIONS.len());
        let street = self.street();
        let today_year = self.cfg.today.year();
        if self.rng.chance(0.45) {
            let mut p = if self.rng.chance(0.08) {
                // A minority (Uyghur-style) name: given·father's name.
                let b = self.date_between(1950, 2000);
                let mut p = self.person(family, Role::Adult, String::new(), b, region, &street);
                let female = p.sex == Sex::Female;
                p.given = self
                    .rng
                    .pick(if female {
                        MINORITY_FEMALE
                    } else {
                        MINORITY_MALE
                    })
                    .copied()
                    .unwrap_or("艾力")
                    .to_owned();
                p.patronym = Some(
                    self.rng
                        .pick(MINORITY_MALE)
                        .copied()
                        .unwrap_or("买买提")
                        .to_owned(),
                );
                p
            } else {
                let s = self.surname();
                let b = self.date_between(1950, 2000);
                self.person(family, Role::Adult, s, b, region, &street)
            };
            p.phone = Some(self.phone());
            return vec![p];
        }
        let fam_surname = self.surname();
        let fb = self.date_between(1960, 1996);
        let mut father = self.person(
            family,
            Role::Adult,
            fam_surname.clone(),
            fb,
            region,
            &street,
        );
        father.sex = Sex::Male;
        if father.resident_id.is_some() {
            father.resident_id = Some(self.unique_resident_id(
                REGIONS.get(region).map_or("110105", |r| r.0),
                father.birth,
                Sex::Male,
                7,
            ));
        }
        let s = self.surname();
        let mb = self.date_between(1962, 1998);
        let mut mother = self.person(family, Role::Adult, s, mb, region, &street);
        mother.sex = Sex::Female;
        mother.resident_id = Some(self.unique_resident_id(
            REGIONS.get(region).map_or("110105", |r| r.0),
            mother.birth,
            Sex::Female,
            8,
        ));
        let shared_phone = self.phone();
        father.phone = Some(shared_phone.clone());
        mother.phone = Some(if self.rng.chance(0.5) {
            shared_phone.clone()
        } else {
            self.phone()
        });
        let mut people = vec![father, mother];
        let child_surname = |g: &mut Gen, f: &str| {
            if g.rng.chance(0.9) {
                f.to_owned()
            } else {
                g.surname()
            }
        };
        let kids = 1 + self.rng.below(2);
        for k in 0..kids {
            let s = child_surname(self, &fam_surname);
            let b = self.date_between(2000, today_year - 2);
            let mut c = self.person(family, Role::Child, s, b, region, &street);
            // Parents do not give two children (or a child and a parent) the same name, nor
            // two names that sound the same (孙毅/孙怡).
            while people
                .iter()
                .any(|p: &Person| sounds_alike(&p.given, &c.given))
            {
                c.given = self.given();
            }
            c.phone = Some(shared_phone.clone());
            if self.rng.chance(0.4) {
                c.resident_id = None;
            }
            if k == 0 && self.rng.chance(0.12) {
                // Twins: same birth date, surname, address and phone; different given names
                // and ids.
                c.truth.role = Role::Twin;
                let mut t = self.person(
                    family,
                    Role::Twin,
                    c.surname.clone(),
                    c.birth,
                    region,
                    &street,
                );
                while sounds_alike(&t.given, &c.given) {
                    t.given = self.given();
                }
                t.phone = c.phone.clone();
                if c.resident_id.is_none() {
                    t.resident_id = None;
                }
                people.push(t);
            }
            people.push(c);
        }
        if self.rng.chance(0.15) {
            let s = child_surname(self, &fam_surname);
            let b = self.date_between(today_year - 1, today_year - 1);
            let mut infant = self.person(family, Role::Infant, s, b, region, &street);
            while people
                .iter()
                .any(|p: &Person| sounds_alike(&p.given, &infant.given))
            {
                infant.given = self.given();
            }
            infant.phone = Some(shared_phone);
            infant.resident_id = None;
            infant.insurance = None;
            if self.rng.chance(0.6) {
                // Registered under a parent's resident id number.
                let parent = people
                    .get(self.rng.below(2))
                    .and_then(|p| p.resident_id.clone());
                infant.borrowed_id = parent;
            }
            people.push(infant);
        }
        people
    }

    /// The hanzi name of a person, maybe with typos.
    fn hanzi_name(&mut self, p: &Person, noisy: bool) -> String {
        if let Some(patronym) = &p.patronym {
            let dot = if noisy && self.rng.chance(0.5) {
                self.rng.pick(DOTS).copied().unwrap_or("·")
            } else {
                "·"
            };
            return format!("{}{dot}{patronym}", p.given);
        }
        let mut given = p.given.clone();
        if noisy && self.rng.chance(0.05) {
            // A homophone for one character.
            let chars: Vec<String> = given.chars().map(String::from).collect();
            let i = self.rng.below(chars.len());
            if let Some(c) = chars.get(i)
                && let Some((a, b)) = HOMOPHONES.iter().find(|(a, b)| a == c || b == c)
            {
                let sub = if a == c { b } else { a };
                given = chars
                    .iter()
                    .enumerate()
                    .map(|(j, ch)| if j == i { *sub } else { ch.as_str() })
                    .collect();
            }
        }
        let mut name = format!("{}{given}", p.surname);
        if noisy && self.rng.chance(0.04) {
            name = name
                .chars()
                .map(|c| traditional_of(c).unwrap_or(c))
                .collect();
        }
        name
    }

    /// The pinyin of a person's name: family and given, title-case, maybe toned, maybe
    /// upper-case, maybe given first, maybe with a typo.
    fn pinyin_name(&mut self, p: &Person, noisy: bool) -> String {
        let toned = self.rng.chance(0.3);
        let py = |s: &str| -> String {
            s.chars()
                .map(|c| match c.to_pinyin() {
                    Some(x) => if toned { x.with_tone() } else { x.plain() }.to_owned(),
                    None => String::new(),
                })
                .collect()
        };
        let (family, given) = match &p.patronym {
            Some(pat) => (py(pat), py(&p.given)),
            None => {
                let full = format!("{}{}", p.surname, p.given);
                let (f, g) = split_hanzi_name(&full);
                (py(f), py(g))
            }
        };
        let title = |s: &str| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        };
        let mut given = given;
        if noisy && self.rng.chance(0.06) && given.len() >= 3 {
            // Swap two adjacent letters.
            let mut chars: Vec<char> = given.chars().collect();
            let i = self.rng.below(chars.len().saturating_sub(1));
            chars.swap(i, i + 1);
            given = chars.into_iter().collect();
        }
        let text = if p.patronym.is_some() || (noisy && self.rng.chance(0.15)) {
            format!("{} {}", title(&given), title(&family))
        } else {
            format!("{} {}", title(&family), title(&given))
        };
        if self.rng.chance(0.3) {
            text.to_uppercase()
        } else {
            text
        }
    }

    fn birth_text(&mut self, p: &Person, noisy: bool) -> String {
        let mut d = p.birth;
        if noisy && self.rng.chance(0.02) && d.day() <= 12 && d.day() != d.month() {
            d = NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()).unwrap_or(d);
        } else if noisy && self.rng.chance(0.02) {
            d = d
                .with_day(if d.day() > 1 { d.day() - 1 } else { 2 })
                .unwrap_or(d);
        }
        match self.rng.below(4) {
            0 => d.format("%Y%m%d").to_string(),
            1 => d.format("%Y-%m-%d").to_string(),
            2 => format!("{}/{}/{}", d.year(), d.month(), d.day()),
            _ => format!("{}年{}月{}日", d.year(), d.month(), d.day()),
        }
    }

    fn phone_text(&mut self, phone: &str) -> String {
        match self.rng.below(4) {
            0 => phone.to_owned(),
            1 => format!("+86 {phone}"),
            2 => format!(
                "0086-{}-{}-{}",
                phone.get(..3).unwrap_or(""),
                phone.get(3..7).unwrap_or(""),
                phone.get(7..).unwrap_or("")
            ),
            _ => format!(
                "{} {} {}",
                phone.get(..3).unwrap_or(""),
                phone.get(3..7).unwrap_or(""),
                phone.get(7..).unwrap_or("")
            ),
        }
    }

    fn register(&mut self, p: &Person, facility: usize, local: u64) -> LabeledRecord {
        let noisy = self.rng.chance(self.cfg.noise);
        let mut names = Vec::new();
        let form = self.rng.below(10);
        if form < 7 || form == 9 {
            names.push(PersonName::text(self.hanzi_name(p, noisy)));
        }
        if form >= 7 {
            names.push(PersonName::text(self.pinyin_name(p, noisy)));
        }
        let mut identifiers = Vec::new();
        let id_rate = match p.truth.role {
            Role::Adult => 0.75,
            _ => 0.6,
        };
        if let Some(id) = p.borrowed_id.as_ref().or(p.resident_id.as_ref())
            && self.rng.chance(id_rate)
        {
            identifiers.push(OtherId::ResidentId { value: id.clone() });
        }
        if let Some((psn, region)) = &p.insurance
            && self.rng.chance(0.5)
        {
            identifiers.push(OtherId::Insurance {
                psn_no: psn.clone(),
                region: region.clone(),
            });
        }
        let phones = match &p.phone {
            Some(ph) if !noisy || self.rng.chance(0.85) => vec![self.phone_text(ph)],
            _ => Vec::new(),
        };
        let region = REGIONS
            .get(p.region)
            .copied()
            .unwrap_or(("110105", "北京市朝阳区", "100020"));
        let addresses = if !noisy || self.rng.chance(0.8) {
            let text = if noisy && self.rng.chance(0.3) {
                p.street.clone()
            } else {
                format!("{}{}", region.1, p.street)
            };
            vec![PostalAddress {
                text,
                postal_code: self.rng.chance(0.5).then(|| region.2.to_owned()),
            }]
        } else {
            Vec::new()
        };
        LabeledRecord {
            demographics: Demographics {
                facility: format!("F{:02}", facility + 1),
                local_id: format!("{:08}", local),
                identifiers,
                names,
                birth_date: Some(self.birth_text(p, noisy)),
                sex: (!noisy || self.rng.chance(0.97)).then_some(p.sex),
                phones,
                addresses,
            },
            truth: p.truth,
        }
    }
}

/// Generates labelled registrations, in arrival order (households interleaved).
pub fn generate(cfg: SynthConfig) -> Vec<LabeledRecord> {
    let mut g = Gen {
        rng: SplitMix64::new(cfg.seed),
        cfg,
        surname_total: SURNAMES.iter().map(|(_, w)| w).sum(),
        next_person: 0,
        next_family: 0,
        issued: HashSet::new(),
    };
    let mut people = Vec::with_capacity(cfg.people);
    while people.len() < cfg.people {
        people.extend(g.household());
    }
    people.truncate(cfg.people);
    let facilities = cfg.facilities.max(1);
    let mut local_ids = vec![0u64; facilities];
    let mut records = Vec::with_capacity(cfg.people * 3 / 2);
    for p in &people {
        let n = match g.rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        }
        .min(facilities);
        let first = g.rng.below(facilities);
        for k in 0..n {
            let f = (first + k) % facilities;
            let local = local_ids.get_mut(f).map_or(0, |l| {
                *l += 1;
                *l
            });
            records.push(g.register(p, f, local));
        }
    }
    // Arrival order: shuffle (Fisher–Yates) so that a person's registrations are spread out.
    for i in (1..records.len()).rev() {
        let j = g.rng.below(i + 1);
        records.swap(i, j);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::normalize::normalize;
    use crate::resident_id::check_resident_id;

    #[test]
    fn generation_is_seeded_and_labelled() {
        let cfg = SynthConfig {
            people: 600,
            ..SynthConfig::default()
        };
        let a = generate(cfg);
        assert_eq!(a, generate(cfg));
        assert_ne!(a, generate(SynthConfig { seed: 15, ..cfg }));
        let persons: std::collections::HashSet<u64> = a.iter().map(|r| r.truth.person).collect();
        assert_eq!(persons.len(), 600);
        assert!(a.len() > 700, "{}", a.len());
        // The variety the brief asks for is present.
        let texts: Vec<String> = a
            .iter()
            .flat_map(|r| r.demographics.names.iter().map(|n| n.text.clone()))
            .collect();
        assert!(
            texts.iter().any(|t| DOTS.iter().any(|d| t.contains(d))),
            "minority names with a dot"
        );
        assert!(
            texts.iter().any(|t| t.is_ascii() && !t.is_empty()),
            "pinyin names"
        );
        assert!(a.iter().any(|r| r.truth.role == Role::Twin));
        assert!(
            a.iter()
                .any(|r| r.truth.role == Role::Infant && !r.demographics.identifiers.is_empty()),
            "an infant under a parent's id"
        );
        // A resident id belongs to one person (infants borrow a parent's, in their household).
        let mut owners: std::collections::HashMap<&str, (u64, u64)> =
            std::collections::HashMap::new();
        for r in &a {
            for id in &r.demographics.identifiers {
                if let OtherId::ResidentId { value } = id
                    && r.truth.role != Role::Infant
                {
                    let owner = owners
                        .entry(value)
                        .or_insert((r.truth.person, r.truth.family));
                    assert_eq!(owner.0, r.truth.person, "{value} issued twice");
                }
            }
        }
        // Every generated resident id is valid.
        for r in &a {
            for id in &r.demographics.identifiers {
                if let OtherId::ResidentId { value } = id {
                    assert!(check_resident_id(value).is_ok(), "{value}");
                }
            }
            assert!(normalize(&r.demographics).birth_date.is_some());
        }
    }

    #[test]
    fn homophones_are_homophones() {
        for (a, b) in HOMOPHONES {
            let py = |s: &str| {
                s.chars()
                    .filter_map(|c| c.to_pinyin())
                    .map(|p| p.plain())
                    .collect::<String>()
            };
            assert_eq!(py(a), py(b), "{a} {b}");
        }
    }

    #[test]
    fn relations() {
        let t = |person, family, role| Truth {
            person,
            family,
            role,
        };
        assert_eq!(
            relation(&t(1, 1, Role::Adult), &t(1, 1, Role::Adult)),
            Relation::Same
        );
        assert_eq!(
            relation(&t(1, 1, Role::Twin), &t(2, 1, Role::Twin)),
            Relation::Twins
        );
        assert_eq!(
            relation(&t(1, 1, Role::Adult), &t(2, 1, Role::Infant)),
            Relation::ParentChild
        );
        assert_eq!(
            relation(&t(1, 1, Role::Child), &t(2, 1, Role::Twin)),
            Relation::Siblings
        );
        assert_eq!(
            relation(&t(1, 1, Role::Adult), &t(2, 2, Role::Child)),
            Relation::Other
        );
    }
}
