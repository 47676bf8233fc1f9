//! Fee schedules (STANDARDS CN-51, CN-63): one YAML file per facility, one entry per service
//! (the consultation's service type), each with its national 医疗服务项目 code kept exactly as
//! issued, the facility's local code, the province's price item code and the version of the
//! local ↔ national mapping; the consultation fee by the expert's title, and extra time.
//!
//! ```yaml
//! version: 1
//! facility: H44010600001          # the facility id (定点医药机构编号 for NHSA)
//! province: "44"                  # GB/T 2260: whose price items these are (CN-63)
//! mapping_version: "2026.01"      # the local ↔ national code mapping this file follows
//! services:
//!   - service_type: institution-to-institution
//!     name: 远程会诊
//!     local_code: HZ-YCHZ-01
//!     national_code: "003101000010000"   # as issued: never trimmed or re-formatted
//!     province_code: "310100001-1"       # the province's price item
//!     covered: true                      # false: 自费 (never paid by insurance)
//!     by_title:                          # yuan, two decimals at most (parsed as text, no float)
//!       chief-physician: 300.00
//!       associate-chief-physician: 200.00
//!       attending-physician: 100.00
//!     included_minutes: 30
//!     extra:                             # each started block beyond included_minutes
//!       block_minutes: 15
//!       max_blocks: 4
//!       name: 远程会诊加时
//!       local_code: HZ-YCHZ-02
//!       national_code: "003101000020000"
//!       province_code: "310100002-1"
//!       price: 50.00
//! agreements:                            # revenue share with the invited side (CN-63, CN-02)
//!   - id: AGR-2026-001
//!     invited_share_percent: 60
//! ```
//!
//! [`FeeSchedule::parse`] reports every problem at once as `file:line:column: message`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::money::{Fen, Rate};
use crate::consultation::ServiceType;
use crate::expert::Title;

/// A code as issued with the system it belongs to and the mapping version it was read under
/// (CN-51: every coded element stores system and version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCodes {
    /// The facility's own (HIS) code.
    pub local: String,
    /// The NHSA 医疗服务项目 code, exactly as issued.
    pub national: String,
    /// The province's price item code (CN-63: pricing authority is provincial).
    pub province: String,
    /// The mapping version the schedule follows.
    pub mapping_version: String,
}

/// One priced item of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedItem {
    /// Its name (`远程会诊`).
    pub name: String,
    /// Its codes.
    pub codes: ItemCodes,
}

/// Extra time beyond the included minutes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraTime {
    /// The item billed per block.
    pub item: PricedItem,
    /// Minutes per block (each started block counts).
    pub block_minutes: u32,
    /// At most this many blocks are billed.
    pub max_blocks: u32,
    /// Price per block.
    pub price: Fen,
}

/// The fee of one service type at one facility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFee {
    /// The consultation's service type this fee applies to.
    pub service_type: ServiceType,
    /// The consultation item.
    pub item: PricedItem,
    /// False for 自费 items (never covered by insurance).
    pub covered: bool,
    /// The price by the expert's title; a title missing here cannot be billed.
    pub by_title: BTreeMap<Title, Fen>,
    /// Minutes included in the base price.
    pub included_minutes: u32,
    /// Extra time, if billed.
    pub extra: Option<ExtraTime>,
}

/// A facility's fee schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    /// The facility (定点医药机构编号).
    pub facility: String,
    /// The province of the price items.
    pub province: String,
    /// The mapping version.
    pub mapping_version: String,
    /// One fee per service type.
    pub services: Vec<ServiceFee>,
    /// The invited side's share of the fee, by cooperation agreement id.
    pub agreements: BTreeMap<String, Rate>,
}

impl FeeSchedule {
    /// The fee of a service type.
    pub fn service(&self, service_type: ServiceType) -> Option<&ServiceFee> {
        self.services
            .iter()
            .find(|s| s.service_type == service_type)
    }
}

/// One problem in a schedule file, at its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleProblem {
    /// The file as the caller named it.
    pub file: String,
    /// 1-based line (0: the whole file).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScheduleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem of a schedule file (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ScheduleErrors(pub Vec<ScheduleProblem>);

// The file as written. Texts that must be kept exactly and amounts (read as text, never as a
// float) are spanned so a problem points at them.
type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    version: S<u32>,
    facility: S<String>,
    province: S<String>,
    mapping_version: S<String>,
    services: Vec<S<RawService>>,
    #[serde(default)]
    agreements: Vec<S<RawAgreement>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    service_type: ServiceType,
    name: S<String>,
    local_code: S<String>,
    national_code: S<String>,
    province_code: S<String>,
    #[serde(default = "yes")]
    covered: bool,
    by_title: BTreeMap<Title, S<Amount>>,
    #[serde(default)]
    included_minutes: u32,
    #[serde(default)]
    extra: Option<S<RawExtra>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtra {
    block_minutes: S<u32>,
    max_blocks: S<u32>,
    name: S<String>,
    local_code: S<String>,
    national_code: S<String>,
    province_code: S<String>,
    price: S<Amount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgreement {
    id: S<String>,
    invited_share_percent: S<u32>,
}

/// A yuan amount as written (a YAML number or string, read as its text).
struct Amount(String);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount in yuan (300.00)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                Ok(Amount(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Amount, E> {
                // Never through a float: the caller quotes the amount if the YAML reader
                // decided it was one (serde-saphyr hands plain scalars over as text first).
                Err(E::custom(
                    "write the amount as text (\"300.00\"): a float cannot be read exactly",
                ))
            }
        }
        d.deserialize_str(V)
    }
}

struct Check<'a> {
    file: &'a str,
    problems: Vec<ScheduleProblem>,
}

impl Check<'_> {
    fn at(&mut self, loc: &Location, message: String) {
        self.problems.push(ScheduleProblem {
            file: self.file.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message,
        });
    }

    /// A code or name: not blank, and (codes are kept exactly) no surrounding whitespace.
    fn text(&mut self, what: &str, v: &S<String>) -> String {
        if v.value.trim().is_empty() {
            self.at(&v.referenced, format!("{what} is blank"));
        } else if v.value.trim() != v.value {
            self.at(
                &v.referenced,
                format!("{what} `{}` has surrounding whitespace; codes are kept exactly as issued, so fix the file", v.value),
            );
        }
        v.value.clone()
    }

    fn amount(&mut self, what: &str, v: &S<Amount>) -> Fen {
        match v.value.0.parse::<Fen>() {
            Ok(f) if f.0 < 0 => {
                self.at(&v.referenced, format!("{what} is negative"));
                Fen::ZERO
            }
            Ok(f) => f,
            Err(e) => {
                self.at(&v.referenced, format!("{what}: {e}"));
                Fen::ZERO
            }
        }
    }
}

impl FeeSchedule {
    /// Reads a schedule file; `file` names it in the problems.
    pub fn parse(file: &str, text: &str) -> Result<FeeSchedule, ScheduleErrors> {
        let raw: RawSchedule = serde_saphyr::from_str(text).map_err(|e| {
            let inner = e.without_snippet();
            let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = inner.to_string();
            // The position is in front already.
            let message = match message.rsplit_once(" at line ") {
                Some((m, _)) if line > 0 => m.to_owned(),
                _ => message,
            };
            ScheduleErrors(vec![ScheduleProblem {
                file: file.to_owned(),
                line,
                column,
                message,
            }])
        })?;
        let mut c = Check {
            file,
            problems: Vec::new(),
        };
        if raw.version.value != 1 {
            c.at(
                &raw.version.referenced,
                format!("version {} is not supported (1)", raw.version.value),
            );
        }
        let facility = c.text("facility", &raw.facility);
        let province = c.text("province", &raw.province);
        let mapping_version = c.text("mapping_version", &raw.mapping_version);
        if raw.services.is_empty() {
            c.at(
                &raw.facility.referenced,
                "services is empty: a schedule prices at least one service".into(),
            );
        }
        let mut services: Vec<ServiceFee> = Vec::new();
        for (i, s) in raw.services.iter().enumerate() {
            let loc = &s.referenced;
            let s = &s.value;
            let p = |f: &str| format!("services[{i}].{f}");
            if services.iter().any(|o| o.service_type == s.service_type) {
                c.at(
                    loc,
                    format!(
                        "services[{i}]: service type `{}` is priced twice",
                        service_code(s.service_type)
                    ),
                );
            }
            let codes = ItemCodes {
                local: c.text(&p("local_code"), &s.local_code),
                national: c.text(&p("national_code"), &s.national_code),
                province: c.text(&p("province_code"), &s.province_code),
                mapping_version: mapping_version.clone(),
            };
            let item = PricedItem {
                name: c.text(&p("name"), &s.name),
                codes,
            };
            if s.by_title.is_empty() {
                c.at(loc, format!("{}: no title is priced", p("by_title")));
            }
            let mut by_title = BTreeMap::new();
            for (title, amount) in &s.by_title {
                let fen = c.amount(&p(&format!("by_title.{}", title.code())), amount);
                by_title.insert(*title, fen);
            }
            let extra = s.extra.as_ref().map(|e| {
                let eloc = &e.referenced;
                let e = &e.value;
                let q = |f: &str| format!("services[{i}].extra.{f}");
                if e.block_minutes.value == 0 {
                    c.at(
                        &e.block_minutes.referenced,
                        format!("{} is 0", q("block_minutes")),
                    );
                }
                if e.max_blocks.value == 0 {
                    c.at(
                        eloc,
                        format!("{} is 0: leave `extra` out instead", q("max_blocks")),
                    );
                }
                ExtraTime {
                    item: PricedItem {
                        name: c.text(&q("name"), &e.name),
                        codes: ItemCodes {
                            local: c.text(&q("local_code"), &e.local_code),
                            national: c.text(&q("national_code"), &e.national_code),
                            province: c.text(&q("province_code"), &e.province_code),
                            mapping_version: mapping_version.clone(),
                        },
                    },
                    block_minutes: e.block_minutes.value,
                    max_blocks: e.max_blocks.value,
                    price: c.amount(&q("price"), &e.price),
                }
            });
            services.push(ServiceFee {
                service_type: s.service_type,
                item,
                covered: s.covered,
                by_title,
                included_minutes: s.included_minutes,
                extra,
            });
        }
        let mut agreements = BTreeMap::new();
        for (i, a) in raw.agreements.iter().enumerate() {
            let id = c.text(&format!("agreements[{i}].id"), &a.value.id);
            let share = &a.value.invited_share_percent;
            match Rate::percent(share.value) {
                Ok(rate) => {
                    if agreements.insert(id.clone(), rate).is_some() {
                        c.at(&a.referenced, format!("agreement `{id}` is listed twice"));
                    }
                }
                Err(_) => c.at(
                    &share.referenced,
                    format!(
                        "agreements[{i}].invited_share_percent {} is over 100",
                        share.value
                    ),
                ),
            }
        }
        if c.problems.is_empty() {
            Ok(FeeSchedule {
                facility,
                province,
                mapping_version,
                services,
                agreements,
            })
        } else {
            Err(ScheduleErrors(c.problems))
        }
    }
}

/// The service type's code as written in YAML.
pub fn service_code(t: ServiceType) -> &'static str {
    t.code()
}

#[cfg(test)]
pub(crate) mod tests;
