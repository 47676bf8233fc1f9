//! The matcher's input: what one facility's record says about a person (STANDARDS MATCH-05,
//! IHE-01 PIX feed, IHE-02 PDQ query). Built from a [`PatientRecord`] (an ADT) with
//! [`Demographics::from_record`], or directly (an API call, a FHIR Patient, an import file).
//!
//! Values are kept as sent; [`crate::identity::normalize`] turns them into what is compared.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::patient::{PatientRecord, Sex};

/// One person as one facility knows them: the identifier the record is keyed on (facility
/// namespace + local id, the PIX "source identifier") and the demographics to match on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    /// The facility's assigning authority (namespace, URI or OID): the PIX domain of
    /// `local_id`.
    pub facility: String,
    /// The facility's own patient id (MRN, 病案号/患者ID) the record is keyed on.
    pub local_id: String,
    /// Other identifiers: resident identity numbers, 医保 numbers, other national ids.
    #[serde(default)]
    pub identifiers: Vec<OtherId>,
    /// Every name, ideographic (张伟, 阿依古丽·买买提) and phonetic (Zhang Wei).
    #[serde(default)]
    pub names: Vec<PersonName>,
    /// The birth date as sent; read by [`parse_birth_date`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// Administrative sex; `Unknown`/`Other` are not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Phone numbers as sent (any format: `+86 138-0013-8000`, `0771 5551234`).
    #[serde(default)]
    pub phones: Vec<String>,
    /// Addresses.
    #[serde(default)]
    pub addresses: Vec<PostalAddress>,
}

/// An identifier other than the local one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OtherId {
    /// A resident identity number (居民身份证号, HL7 type code `NI`), validated with
    /// [`crate::check_resident_id`] when normalised; an invalid one is still compared as a
    /// plain number but never fires a deterministic rule.
    ResidentId {
        /// The number as sent.
        value: String,
    },
    /// A national medical insurance person number (医保 `psn_no`) with the insured region
    /// (参保地, GB/T 2260 code): the pair is unique, the number alone is not.
    Insurance {
        /// `psn_no`.
        psn_no: String,
        /// The insured region code (参保地 `insuplc_admdvs`).
        region: String,
    },
    /// Any other national or regional identifier, compared as (system, value): a passport,
    /// a social security number, an 电子健康卡 id.
    National {
        /// The identifier system (assigning authority or type code).
        system: String,
        /// The value.
        value: String,
    },
}

/// A person name as sent: the parts when the sender separated them, and the whole text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonName {
    /// Family name (姓), when sent separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Given name(s) (名), when sent separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given: Option<String>,
    /// The whole name (`张伟`, `阿依古丽·买买提`, `ZHANG WEI`, `Wei Zhang`). When `family`
    /// or `given` is set this may be empty; it is used when both parts are missing.
    #[serde(default)]
    pub text: String,
}

impl PersonName {
    /// A name known only as one text (`张伟`, `Zhang Wei`): the family name is found when
    /// normalising (a compound-surname list for hanzi; both orders are tried for Latin).
    pub fn text(text: impl Into<String>) -> PersonName {
        PersonName {
            family: None,
            given: None,
            text: text.into(),
        }
    }

    /// A name sent as family and given parts.
    pub fn parts(family: impl Into<String>, given: impl Into<String>) -> PersonName {
        PersonName {
            family: Some(family.into()),
            given: Some(given.into()),
            text: String::new(),
        }
    }
}

/// An address as free text plus the postal code (compared separately).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostalAddress {
    /// Everything but the postal code, in any order (`广西南宁市青秀区民族大道100号`,
    /// `12 pinkerton circuit, richlands, vic`).
    pub text: String,
    /// The postal code (邮编).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

impl Demographics {
    /// The demographics of an ADT patient record, keyed on `facility` + the record's first
    /// identifier that is not a resident id or insurance number (the facility's MRN); `None`
    /// when the record has no such identifier.
    ///
    /// `facility` is the assigning authority of the local id; when `None`, the identifier's
    /// own assigning authority is used, else the sending facility (`MSH-4`). Identifiers
    /// with type code `NI` become resident ids; type `psn_no` (or assigning authority
    /// `psn_no`/`医保`) become insurance numbers, their assigning authority read as the
    /// insured region when it is a 6-digit code; other identifiers with another assigning
    /// authority than the local one become national ids (system = the authority, else the
    /// type code).
    pub fn from_record(record: &PatientRecord, facility: Option<&str>) -> Option<Demographics> {
        let is_special = |t: Option<&str>| {
            matches!(
                t.map(str::to_ascii_uppercase).as_deref(),
                Some("NI" | "PSN_NO" | "PSN" | "SS" | "PPN" | "HC")
            )
        };
        let local = record
            .identifiers
            .iter()
            .find(|i| !is_special(i.type_code.as_deref()) && !i.id.trim().is_empty())?;
        let facility = facility
            .map(str::to_owned)
            .or_else(|| local.assigning_authority.clone())
            .or_else(|| record.sending_facility.clone())
            .unwrap_or_default();
        let mut identifiers = Vec::new();
        for id in &record.identifiers {
            if std::ptr::eq(id, local) || id.id.trim().is_empty() {
                continue;
            }
            let type_code = id.type_code.as_deref().unwrap_or("").to_ascii_uppercase();
            let authority = id.assigning_authority.clone().unwrap_or_default();
            if type_code == "NI" {
                identifiers.push(OtherId::ResidentId {
                    value: id.id.clone(),
                });
            } else if type_code == "PSN_NO" || type_code == "PSN" {
                identifiers.push(OtherId::Insurance {
                    psn_no: id.id.clone(),
                    region: authority,
                });
            } else {
                let system = if authority.is_empty() {
                    type_code
                } else {
                    authority
                };
                identifiers.push(OtherId::National {
                    system,
                    value: id.id.clone(),
                });
            }
        }
        let names = record
            .names
            .value()
            .map(|names| {
                names
                    .iter()
                    .map(|n| PersonName {
                        family: n.family.clone(),
                        given: match (&n.given, &n.further_given) {
                            (Some(g), Some(f)) => Some(format!("{g} {f}")),
                            (g, _) => g.clone(),
                        },
                        text: n.text.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let phones = [&record.home_phones, &record.business_phones]
            .into_iter()
            .filter_map(|f| f.value())
            .flatten()
            .filter_map(|t| t.digits.clone().or_else(|| t.number.clone()))
            .collect();
        let addresses = record
            .addresses
            .value()
            .map(|addrs| {
                addrs
                    .iter()
                    .map(|a| PostalAddress {
                        text: [&a.province, &a.city, &a.county, &a.street, &a.other]
                            .into_iter()
                            .flatten()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                        postal_code: a.postal_code.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Demographics {
            facility,
            local_id: local.id.trim().to_owned(),
            identifiers,
            names,
            birth_date: record.birth_date.value().map(|t| t.raw.clone()),
            sex: record.sex.value().map(|s| s.normalized),
            phones,
            addresses,
        })
    }
}

/// A birth date as read by [`parse_birth_date`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirthDate {
    /// The date (day-first reading for an ambiguous `DD/MM/YYYY`).
    pub date: NaiveDate,
    /// True when the text was `DD/MM/YYYY`-like with both first parts ≤ 12, so it could also
    /// be month-first: comparison then also accepts the swapped reading as exact.
    pub ambiguous: bool,
}

impl BirthDate {
    /// The other reading of an ambiguous date (day and month swapped), if valid and different.
    pub fn swapped(&self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.date.year(), self.date.day(), self.date.month())
            .filter(|d| *d != self.date)
    }
}

/// Reads a birth date in the formats HIS systems and forms use, `None` when it is none of them
/// or not a valid day:
///
/// * `YYYYMMDD` and HL7 DTM with day precision or more (`19850312`, `198503120830`),
/// * `YYYY-MM-DD` (and ISO date-times), `YYYY/M/D`, `YYYY.M.D`,
/// * `YYYY年M月D日` (full-width digits too),
/// * `DD/MM/YYYY` (also `-` or `.`): read day first (the Hong Kong, Macau and Commonwealth
///   usage; mainland forms write the year first). When the first part is > 12 it can only be a
///   day; when the second part is > 12 the text is read month-first (`03/25/1985`); when both
///   are ≤ 12 the date is marked [`BirthDate::ambiguous`] and matching accepts either reading.
///
/// A year or year-month alone (`1985`, `1985-03`) is not a birth date for matching: `None`.
pub fn parse_birth_date(raw: &str) -> Option<BirthDate> {
    let text: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(u32::from(c) - 0xFF10 + u32::from('0')).unwrap_or(c),
            '年' | '月' | '／' | '－' | '．' => '-',
            '日' | '号' => ' ',
            c => c,
        })
        .collect();
    let text = text.trim();
    if text.len() >= 8 && text.bytes().take(8).all(|b| b.is_ascii_digit()) {
        let iso = crate::datetime::parse_dtm(text)?;
        let date = NaiveDate::parse_from_str(iso.get(..10)?, "%Y-%m-%d").ok()?;
        return Some(BirthDate {
            date,
            ambiguous: false,
        });
    }
    // Split the date part (before any time) on separators.
    let date_part = text.split(['T', ' ']).next().unwrap_or("");
    let parts: Vec<&str> = date_part
        .split(['-', '/', '.'])
        .filter(|p| !p.is_empty())
        .collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (a_n, b_n, c_n) = (num(a)?, num(b)?, num(c)?);
    if a.len() == 4 {
        let date = NaiveDate::from_ymd_opt(i32::try_from(a_n).ok()?, b_n, c_n)?;
        return Some(BirthDate {
            date,
            ambiguous: false,
        });
    }
    if c.len() != 4 {
        return None;
    }
    let year = i32::try_from(c_n).ok()?;
    if a_n > 12 || b_n <= 12 {
        // Day first: DD/MM/YYYY.
        let date = NaiveDate::from_ymd_opt(year, b_n, a_n)?;
        Some(BirthDate {
            date,
            ambiguous: a_n <= 12 && a_n != b_n,
        })
    } else {
        // The second part cannot be a month: MM/DD/YYYY.
        let date = NaiveDate::from_ymd_opt(year, a_n, b_n)?;
        Some(BirthDate {
            date,
            ambiguous: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Option<(&str, bool)>) {
        let got =
            parse_birth_date(raw).map(|b| (b.date.format("%Y-%m-%d").to_string(), b.ambiguous));
        assert_eq!(
            got,
            expected.map(|(d, a)| (d.to_owned(), a)),
            "parse_birth_date({raw:?})"
        );
    }

    #[test]
    fn birth_dates_in_the_formats_his_send() {
        check("19850312", Some(("1985-03-12", false)));
        check("198503120830", Some(("1985-03-12", false)));
        check("1985-03-12", Some(("1985-03-12", false)));
        check("1985-03-12T08:30:00+08:00", Some(("1985-03-12", false)));
        check("1985/3/2", Some(("1985-03-02", false)));
        check("1985.3.2", Some(("1985-03-02", false)));
        check("1985年3月2日", Some(("1985-03-02", false)));
        check("１９８５年３月２日", Some(("1985-03-02", false)));
        check("25/03/1985", Some(("1985-03-25", false)));
        check("03/25/1985", Some(("1985-03-25", false)));
        check("02/03/1985", Some(("1985-03-02", true)));
        check("03/03/1985", Some(("1985-03-03", false)));
        check("1985", None);
        check("1985-03", None);
        check("1985-02-30", None);
        check("31/02/1985", None);
        check("yesterday", None);
        check("", None);
    }

    #[test]
    fn an_ambiguous_date_has_a_swapped_reading() {
        let b = parse_birth_date("02/03/1985").unwrap();
        assert_eq!(b.swapped(), NaiveDate::from_ymd_opt(1985, 2, 3));
    }
}
