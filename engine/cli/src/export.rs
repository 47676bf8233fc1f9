//! `huizhen export --deidentify PROFILE`: journaled messages with patient data removed,
//! pseudonymised or date-shifted, for test environments, teaching and research (数据脱敏).
//!
//! A profile is an **allow-list**: it names what may leave, and everything it does not name is
//! dropped: HL7 segments, fields, components and JSON keys alike. A profile (YAML, `${ENV}`
//! allowed) lists rules by field: an HL7 path for `hl7v2` bodies (`PID-8`, `PID-3.1`, `OBX-5`,
//! `ZDS-*` for a whole segment) or a dotted path into JSON bodies (`patient.sex`,
//! `**.birth_date`, `orders.*.service`).
//!
//! ```yaml
//! version: 2
//! key: ${HUIZHEN_DEID_KEY}      # for hash (HMAC-SHA256) and the date shift; ≥ 16 bytes
//! date_shift_days: -37          # optional; default: derived from the key (1–365 days back)
//! rules:
//!   - { field: PID-3, action: hash }           # every repetition: h:… of the identifier
//!   - { field: PID-7, action: shift }
//!   - { field: PID-8, action: keep }
//!   - { field: OBX-5, action: keep, when: { field: OBX-2, in: [NM, CE, CWE] } }
//!   - { field: patient.sex, action: keep }
//! ```
//!
//! Actions: `keep` (as is), `drop` (carve a part out of a kept whole), `mask` (the first
//! character stays, `*` for the rest), `hash` (a stable pseudonym `h:` + 16 hex of the HMAC,
//! so the same patient links across records), `shift` (full dates `YYYYMMDD`, `YYYY-MM-DD`,
//! `YYYY/MM/DD`, `YYYY年M月D日`, full-width digits too, moved by the same number of days
//! everywhere so intervals survive; a value that is not such a date is dropped). The most
//! specific rule wins (`PID-3.4` over `PID-3`, `patient.phone` over `patient`); on an HL7
//! field or segment, `hash` and `shift` act on the first component of each repetition, where
//! identifiers and dates live, and drop the other components. `when` keeps a rule to the
//! segments (JSON objects) whose sibling field (key) holds one of the values listed.
//! `--deidentify default` uses [`DEFAULT_PROFILE`] (the key then comes from `--key` or
//! `HUIZHEN_DEID_KEY`).
//!
//! HL7 bodies are split into segments by the HL7 parser (CR, LF or CRLF terminators), and
//! values are decoded before they are masked, hashed or shifted. The audit event is written
//! before the first line is printed, and no input makes the export panic: a body that cannot
//! be read is left out and named (by id only) on stderr.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use hmac::{Hmac, Mac};
use huizhen_core::store::{ListFilter, Store};
use huizhen_hl7::{Delimiters, Element, Message};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Args)]
#[command(after_help = "\
A profile is an allow-list: what it does not name is dropped (segments, fields, JSON keys).
The built-in `default` keeps, for HL7: the MSH structure (type, version, applications; MSH-7
shifted, MSH-10 hashed), EVN type and shifted times, PID-1, PID-3 hashed, PID-7 shifted,
PID-8 (sex), PV1 class, ward code, service and shifted times (visit number hashed), ORC/OBR
codes and status (order numbers hashed, times shifted), OBX codes, units, ranges and flags,
and OBX-5 only for coded and numeric results (NM, SN, CE, CWE, CNE; DT/TS shifted), DG1 codes,
AL1 codes, MRG-1 hashed; never names, addresses, phones, next of kin, insurance, guarantors,
staff, notes (NTE) or Z-segments. For JSON it keeps the record shape of the HL7 mapping and
common names (sex, gender, department, codes), shifts birth dates and times, hashes ids.
See docs/security.md (de-identified export) to write a profile of your own.")]
pub struct ExportArgs {
    #[command(flatten)]
    pub(crate) store: crate::StoreArgs,
    /// A profile file (YAML, version 2), or `default` for the built-in allow-list.
    #[arg(long, value_name = "PROFILE")]
    deidentify: String,
    /// The key, for a profile without `key:` such as `default` (else HUIZHEN_DEID_KEY).
    #[arg(long, env = "HUIZHEN_DEID_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Only this pipeline's messages.
    #[arg(long)]
    pipeline: Option<String>,
    /// received, processing, done, failed or dead.
    #[arg(long)]
    state: Option<String>,
    /// Most messages to export.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

/// What happens to a value a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Exported as it is.
    Keep,
    /// Removed (useful inside a part that is otherwise kept).
    Drop,
    /// The first character stays, every other non-blank character becomes `*`.
    Mask,
    /// `h:` + 16 hex characters of the HMAC-SHA256 of the value under the profile's key.
    Hash,
    /// A full date moved by the profile's number of days; anything else is dropped.
    Shift,
}

/// One rule of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// An HL7 path (`PID-8`, `PID-3.1`, `PID-3.1.2`, `ZDS-*`) or a dotted JSON path
    /// (`patient.sex`; `*` is any one key or array item, `**` any depth).
    pub field: String,
    /// What to do with the value.
    pub action: Action,
    /// Apply only where a sibling holds one of these values.
    #[serde(default)]
    pub when: Option<When>,
}

/// A condition on a sibling: another field of the same HL7 segment (`OBX-2`, or a component
/// `OBX-3.3`), or another key of the same JSON object (`kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The sibling field.
    pub field: String,
    /// The values (exact, decoded text) for which the rule applies.
    #[serde(rename = "in")]
    pub one_of: Vec<String>,
}

/// A de-identification profile (see the module documentation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile format: 2 (an allow-list).
    pub version: u32,
    /// HMAC key of the pseudonyms and of the derived date shift, at least 16 bytes.
    #[serde(default)]
    pub key: Option<String>,
    /// Days every date moves (−36 500 to 36 500); default derived from the key (1–365 back).
    #[serde(default)]
    pub date_shift_days: Option<i64>,
    /// What may leave; everything else is dropped.
    pub rules: Vec<Rule>,
}

/// The built-in allow-list, for teaching and research exports: structure, codes, coded and
/// numeric results, sex, pseudonymous identifiers and shifted dates. Nothing that names,
/// locates or reaches a person: no names, addresses, phones, next of kin, insurance,
/// guarantors, staff, free text or Z-segments.
pub const DEFAULT_PROFILE: &str = r#"version: 2
rules:
  # --- HL7 v2 ---------------------------------------------------------------------------
  # MSH-1/MSH-2 (the delimiters) always stay, so the output parses.
  - { field: MSH-3, action: keep }     # sending application
  - { field: MSH-4, action: keep }     # sending facility (a hospital, not a patient)
  - { field: MSH-5, action: keep }
  - { field: MSH-6, action: keep }
  - { field: MSH-7, action: shift }
  - { field: MSH-9, action: keep }     # message type
  - { field: MSH-10, action: hash }    # control id: links to the source system
  - { field: MSH-11, action: keep }
  - { field: MSH-12, action: keep }
  - { field: EVN-1, action: keep }
  - { field: EVN-2, action: shift }
  - { field: EVN-6, action: shift }
  - { field: PID-1, action: keep }
  - { field: PID-3, action: hash }     # identifiers: h:… per repetition, authority dropped
  - { field: PID-7, action: shift }    # birth date
  - { field: PID-8, action: keep }     # sex
  - { field: MRG-1, action: hash }     # prior identifiers: same pseudonyms as PID-3
  - { field: PV1-1, action: keep }
  - { field: PV1-2, action: keep }     # patient class
  - { field: PV1-3.1, action: keep }   # ward (point of care), not room or bed
  - { field: PV1-10, action: keep }    # hospital service
  - { field: PV1-18, action: keep }    # patient type
  - { field: PV1-19, action: hash }    # visit number
  - { field: PV1-44, action: shift }   # admitted
  - { field: PV1-45, action: shift }   # discharged
  - { field: DG1-1, action: keep }
  - { field: DG1-2, action: keep }
  - { field: DG1-3, action: keep }     # diagnosis code (ICD-10)
  - { field: DG1-5, action: shift }
  - { field: DG1-6, action: keep }
  - { field: AL1-1, action: keep }
  - { field: AL1-2, action: keep }
  - { field: AL1-3, action: keep }     # allergen code
  - { field: AL1-4, action: keep }
  - { field: ORC-1, action: keep }
  - { field: ORC-2, action: hash }
  - { field: ORC-3, action: hash }
  - { field: ORC-5, action: keep }
  - { field: ORC-9, action: shift }
  - { field: OBR-1, action: keep }
  - { field: OBR-2, action: hash }
  - { field: OBR-3, action: hash }
  - { field: OBR-4, action: keep }     # what was ordered
  - { field: OBR-7, action: shift }
  - { field: OBR-22, action: shift }
  - { field: OBR-25, action: keep }
  - { field: OBX-1, action: keep }
  - { field: OBX-2, action: keep }     # value type
  - { field: OBX-3, action: keep }     # what was observed
  - { field: OBX-4, action: keep }
  - { field: OBX-5, action: keep, when: { field: OBX-2, in: [NM, SN, CE, CWE, CNE, NA] } }
  - { field: OBX-5, action: shift, when: { field: OBX-2, in: [DT, DTM, TS] } }
  - { field: OBX-6, action: keep }
  - { field: OBX-7, action: keep }
  - { field: OBX-8, action: keep }
  - { field: OBX-11, action: keep }
  - { field: OBX-14, action: shift }
  - { field: SPM-4, action: keep }     # specimen type
  - { field: MSA-1, action: keep }
  - { field: MSA-2, action: hash }     # the acknowledged control id, as MSH-10
  # --- JSON: the records of the HL7 mapping, and common names ----------------------------
  - { field: "**.record", action: keep }
  - { field: "**.message_type", action: keep }
  - { field: "**.event", action: keep }
  - { field: "**.event_time", action: shift }
  - { field: "**.control_id", action: hash }
  - { field: "**.sending_application", action: keep }
  - { field: "**.sending_facility", action: keep }
  - { field: "**.identifiers.*.id", action: hash }
  - { field: "**.identifiers.*.type_code", action: keep }
  - { field: "**.id_number", action: hash }
  - { field: "**.patient_id", action: hash }
  - { field: "**.birth_date", action: shift }
  - { field: "**.sex", action: keep }
  - { field: "**.gender", action: keep }
  - { field: "**.department", action: keep }
  - { field: "**.visit.patient_class", action: keep }
  - { field: "**.visit.location.point_of_care", action: keep }
  - { field: "**.visit.hospital_service", action: keep }
  - { field: "**.visit.visit_number.id", action: hash }
  - { field: "**.visit.admit_time", action: shift }
  - { field: "**.merge.prior_identifiers.*.id", action: hash }
  - { field: "**.orders.*.set_id", action: keep }
  - { field: "**.orders.*.placer_number.id", action: hash }
  - { field: "**.orders.*.filler_number.id", action: hash }
  - { field: "**.orders.*.service", action: keep }
  - { field: "**.orders.*.result_status", action: keep }
  - { field: "**.observation_time", action: shift }
  - { field: "**.observations.*.set_id", action: keep }
  - { field: "**.observations.*.value_type", action: keep }
  - { field: "**.observations.*.code", action: keep }
  - { field: "**.observations.*.sub_id", action: keep }
  - { field: "**.observations.*.units", action: keep }
  - { field: "**.observations.*.reference_range", action: keep }
  - { field: "**.observations.*.abnormal_flags", action: keep }
  - { field: "**.observations.*.result_status", action: keep }
  - { field: "**.values.*.kind", action: keep }
  - { field: "**.values.*.number", action: keep }
  - { field: "**.values.*.code", action: keep }
  - { field: "**.values.*.system", action: keep }
  - { field: "**.values.*.text", action: keep, when: { field: kind, in: [numeric, coded] } }
"#;

/// An HL7 rule, parsed: which segment, and which field, component and subcomponent.
#[derive(Debug, Clone)]
struct Hl7Rule {
    segment: String,
    /// `None` for the whole segment (`ZDS-*`).
    field: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
    action: Action,
    when: Option<Hl7When>,
}

#[derive(Debug, Clone)]
struct Hl7When {
    field: usize,
    component: usize,
    one_of: Vec<String>,
}

impl Hl7Rule {
    /// How specific the rule is: 0 segment, 1 field, 2 component, 3 subcomponent.
    fn level(&self) -> u8 {
        match (self.field, self.component, self.subcomponent) {
            (None, _, _) => 0,
            (Some(_), None, _) => 1,
            (Some(_), Some(_), None) => 2,
            (Some(_), Some(_), Some(_)) => 3,
        }
    }

    /// True if the rule covers field `f`, component `c`, subcomponent `s`.
    fn covers(&self, f: usize, c: usize, s: usize) -> bool {
        self.field.is_none_or(|x| x == f)
            && self.component.is_none_or(|x| x == c)
            && self.subcomponent.is_none_or(|x| x == s)
    }

    fn holds(&self, seg: &huizhen_hl7::Segment<'_>) -> bool {
        let Some(w) = &self.when else {
            return true;
        };
        let value = seg
            .field(w.field)
            .and_then(|f| f.repetition(1))
            .and_then(|r| r.component(w.component))
            .map(|c| c.value().text().into_owned())
            .unwrap_or_default();
        w.one_of.contains(&value)
    }
}

/// A JSON rule, parsed: the path split on dots.
#[derive(Debug, Clone)]
struct JsonRule {
    path: Vec<String>,
    action: Action,
    when: Option<(String, Vec<String>)>,
}

impl JsonRule {
    /// The positions reachable from `pos` without consuming a key (`**` matches nothing too).
    fn closure(&self, pos: usize, out: &mut Vec<usize>) {
        out.push(pos);
        if self.path.get(pos).is_some_and(|p| p == "**") {
            self.closure(pos + 1, out);
        }
    }

    fn complete(&self, pos: usize) -> bool {
        let mut c = Vec::new();
        self.closure(pos, &mut c);
        c.contains(&self.path.len())
    }

    /// Positions after stepping into the child `key` (`None`: an array item).
    fn advance(&self, pos: usize, key: Option<&str>, out: &mut Vec<usize>) {
        let mut c = Vec::new();
        self.closure(pos, &mut c);
        for q in c {
            match self.path.get(q).map(String::as_str) {
                None => {}
                Some("**") => out.push(q),
                Some("*") => out.push(q + 1),
                Some(lit) if key == Some(lit) => out.push(q + 1),
                Some(_) => {}
            }
        }
        if key.is_none() {
            // Arrays are transparent: `patient.name` also reaches `patient[3].name`.
            out.push(pos);
        }
    }
}

/// A state of the JSON walk: rule index and position in its path.
type States = Vec<(usize, usize)>;

/// The rules, ready to apply.
pub struct Deidentifier {
    hl7: Vec<Hl7Rule>,
    json: Vec<JsonRule>,
    key: Vec<u8>,
    shift_days: i64,
}

/// The largest date shift accepted (a century), so that shifting never overflows.
const MAX_SHIFT_DAYS: i64 = 36_500;

/// `PID-5`, `ZDS-*` or `PID-3.1.2` look like HL7; any other field is a JSON path.
fn looks_hl7(f: &str) -> bool {
    let mut chars = f.chars();
    let name: String = chars.by_ref().take(3).collect();
    name.len() == 3
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && chars.next() == Some('-')
}

fn hl7_path(field: &str) -> std::result::Result<huizhen_hl7::Path, String> {
    if field.contains('[') {
        return Err(
            "occurrence and repetition indices are not used in profiles: a rule applies to every \
             occurrence and repetition (write PID-3, not PID-3[2])"
                .into(),
        );
    }
    field
        .parse::<huizhen_hl7::Path>()
        .map_err(|e| e.to_string())
}

impl Deidentifier {
    /// Checks and compiles a profile; `source` names it in errors.
    pub fn new(profile: Profile, key: Option<String>, source: &str) -> Result<Deidentifier> {
        match profile.version {
            2 => {}
            1 => bail!(
                "{source}: version 1 profiles kept every field no rule named; version 2 keeps \
                 only what its rules name (add `{{ field: …, action: keep }}` for each field to \
                 export) and says `version: 2`"
            ),
            v => bail!("{source}: version {v} is not supported (expected 2)"),
        }
        let key = profile.key.or(key).with_context(|| {
            format!("{source}: the profile needs a key (`key:` in the profile, --key or HUIZHEN_DEID_KEY)")
        })?;
        if key.len() < 16 {
            bail!("{source}: the de-identification key must be at least 16 bytes");
        }
        let mut hl7 = Vec::new();
        let mut json = Vec::new();
        for (i, r) in profile.rules.iter().enumerate() {
            let at = format!("{source}: rule {} ({:?})", i + 1, r.field);
            if looks_hl7(&r.field) {
                let (segment, field, component, subcomponent) =
                    if let Some(seg) = r.field.strip_suffix("-*") {
                        (seg.to_owned(), None, None, None)
                    } else {
                        let p = hl7_path(&r.field).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
                        (p.segment, Some(p.field), p.component, p.subcomponent)
                    };
                let when = match &r.when {
                    None => None,
                    Some(w) => {
                        let p = hl7_path(&w.field)
                            .map_err(|e| anyhow::anyhow!("{at}: when.field: {e}"))?;
                        if p.segment != segment || p.subcomponent.is_some() {
                            bail!(
                                "{at}: when.field {:?} must be a field (or component) of the same segment {segment}",
                                w.field
                            );
                        }
                        Some(Hl7When {
                            field: p.field,
                            component: p.component.unwrap_or(1),
                            one_of: w.one_of.clone(),
                        })
                    }
                };
                hl7.push(Hl7Rule {
                    segment,
                    field,
                    component,
                    subcomponent,
                    action: r.action,
                    when,
                });
            } else {
                let path: Vec<String> = r.field.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    bail!("{at}: an empty key in the path (two dots, or a dot at an end)");
                }
                let when = match &r.when {
                    None => None,
                    Some(w) if w.field.is_empty() || w.field.contains('.') => bail!(
                        "{at}: when.field {:?} must be one key of the same object (no dots)",
                        w.field
                    ),
                    Some(w) => Some((w.field.clone(), w.one_of.clone())),
                };
                json.push(JsonRule {
                    path,
                    action: r.action,
                    when,
                });
            }
        }
        let mut d = Deidentifier {
            hl7,
            json,
            key: key.into_bytes(),
            shift_days: 0,
        };
        d.shift_days = match profile.date_shift_days {
            Some(n) if n.abs() <= MAX_SHIFT_DAYS => n,
            Some(n) => bail!(
                "{source}: date_shift_days {n} is out of range (at most {MAX_SHIFT_DAYS} days either way)"
            ),
            None => {
                let h = d.mac(b"date-shift");
                -(i64::from(u16::from_be_bytes([h[0], h[1]]) % 365) + 1)
            }
        };
        Ok(d)
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    /// Applies `action` to a text; `None` means the value is dropped.
    fn text(&self, action: Action, s: &str) -> Option<String> {
        match action {
            Action::Keep => Some(s.to_owned()),
            Action::Drop => None,
            Action::Mask => Some(mask(s, true)),
            Action::Hash => {
                if s.is_empty() {
                    Some(String::new())
                } else {
                    Some(format!("h:{}", &hex::encode(self.mac(s.as_bytes()))[..16]))
                }
            }
            Action::Shift => shift_date(s, self.shift_days),
        }
    }

    fn json_leaf(&self, action: Action, v: &Value) -> Option<Value> {
        match (action, v) {
            (Action::Drop, _) => None,
            (Action::Keep, v) => Some(v.clone()),
            (_, Value::Null) => Some(Value::Null),
            (action, Value::String(s)) => self.text(action, s).map(Value::String),
            (action, other) => self.text(action, &other.to_string()).map(Value::String),
        }
    }

    /// The JSON body with only what the rules name; `Value::Null` when nothing is named.
    pub fn apply_json(&self, body: &Value) -> Value {
        let states: States = (0..self.json.len()).map(|i| (i, 0)).collect();
        self.json_node(body, &states, None).unwrap_or(Value::Null)
    }

    fn json_node(&self, v: &Value, states: &States, inherited: Option<Action>) -> Option<Value> {
        // The most specific rule is the one naming this node itself; among those, the first.
        let own = states
            .iter()
            .filter(|(r, p)| self.json[*r].complete(*p))
            .map(|(r, _)| *r)
            .min()
            .map(|r| self.json[r].action);
        let effective = own.or(inherited);
        match v {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, child) in map {
                    let mut next: States = Vec::new();
                    for &(r, p) in states {
                        let rule = &self.json[r];
                        let mut ps = Vec::new();
                        rule.advance(p, Some(k), &mut ps);
                        for q in ps {
                            if rule.complete(q)
                                && let Some((field, one_of)) = &rule.when
                            {
                                let sibling = match map.get(field) {
                                    Some(Value::String(s)) => s.clone(),
                                    Some(other) => other.to_string(),
                                    None => String::new(),
                                };
                                if !one_of.contains(&sibling) {
                                    continue;
                                }
                            }
                            if !next.contains(&(r, q)) {
                                next.push((r, q));
                            }
                        }
                    }
                    if next.is_empty() && effective.is_none() {
                        continue;
                    }
                    if let Some(c) = self.json_node(child, &next, effective) {
                        out.insert(k.clone(), c);
                    }
                }
                (!out.is_empty() || effective.is_some_and(|a| a != Action::Drop))
                    .then_some(Value::Object(out))
            }
            Value::Array(items) => {
                let mut next: States = Vec::new();
                for &(r, p) in states {
                    let mut ps = Vec::new();
                    self.json[r].advance(p, None, &mut ps);
                    for q in ps {
                        if !next.contains(&(r, q)) {
                            next.push((r, q));
                        }
                    }
                }
                let out: Vec<Value> = items
                    .iter()
                    .filter_map(|i| self.json_node(i, &next, effective))
                    .collect();
                (!out.is_empty() || effective.is_some_and(|a| a != Action::Drop))
                    .then_some(Value::Array(out))
            }
            leaf => self.json_leaf(effective?, leaf),
        }
    }

    /// The HL7 message with only what the rules name, segments joined by CR. Fails only when
    /// the text is not an HL7 message the parser can read (then nothing of it is exported).
    #[cfg(test)]
    pub fn apply_hl7(&self, text: &str) -> Result<String, huizhen_hl7::ParseError> {
        Ok(self.apply_hl7_message(&Message::parse(text)?))
    }

    /// [`Deidentifier::apply_hl7`] on a parsed message.
    pub fn apply_hl7_message(&self, msg: &Message) -> String {
        let d = *msg.delimiters();
        let sep = d.field.to_string();
        let mut out: Vec<String> = Vec::new();
        for (i, seg) in msg.segments().enumerate() {
            let name = seg.name();
            // The first segment is the MSH (the parser checks it): its delimiters always stay.
            let header = i == 0;
            let rules: Vec<&Hl7Rule> = self
                .hl7
                .iter()
                .filter(|r| r.segment == name && r.holds(&seg))
                .collect();
            if rules.is_empty() && !header {
                continue;
            }
            let first = if header { 3 } else { 1 };
            let mut fields: Vec<String> = (first..=seg.field_count())
                .map(|n| match seg.field(n) {
                    Some(f) => self.hl7_field(&rules, n, f, &d),
                    None => String::new(),
                })
                .collect();
            while fields.last().is_some_and(String::is_empty) {
                fields.pop();
            }
            let mut line = name.to_owned();
            if header {
                line.push_str(&sep);
                line.push_str(&d.encoding_characters());
            }
            for f in fields {
                line.push_str(&sep);
                line.push_str(&f);
            }
            out.push(line);
        }
        out.join("\r")
    }

    fn hl7_field(
        &self,
        rules: &[&Hl7Rule],
        n: usize,
        field: Element<'_>,
        d: &Delimiters,
    ) -> String {
        if !rules.iter().any(|r| r.field.is_none_or(|f| f == n)) {
            return String::new();
        }
        let reps: Vec<String> = field
            .repetitions()
            .map(|rep| {
                let comps: Vec<String> = rep
                    .components()
                    .enumerate()
                    .map(|(ci, comp)| {
                        let subs: Vec<String> = comp
                            .subcomponents()
                            .enumerate()
                            .map(|(si, sub)| self.hl7_leaf(rules, n, ci + 1, si + 1, sub, d))
                            .collect();
                        join_trimmed(subs, d.subcomponent)
                    })
                    .collect();
                join_trimmed(comps, d.component)
            })
            .collect();
        join_trimmed(reps, d.repetition)
    }

    /// One subcomponent (the smallest part) under the most specific rule that covers it.
    fn hl7_leaf(
        &self,
        rules: &[&Hl7Rule],
        f: usize,
        c: usize,
        s: usize,
        leaf: Element<'_>,
        d: &Delimiters,
    ) -> String {
        // The most specific rule that covers the leaf; among those, the first in the profile.
        let best = rules
            .iter()
            .filter(|r| r.covers(f, c, s))
            .map(|r| r.level())
            .max();
        let Some(rule) =
            best.and_then(|l| rules.iter().find(|r| r.covers(f, c, s) && r.level() == l))
        else {
            return String::new();
        };
        // Is this leaf the first part of what the rule names? Hash and shift act only there.
        let first = match rule.level() {
            0 | 1 => c == 1 && s == 1,
            2 => s == 1,
            _ => true,
        };
        if leaf.is_null() {
            return match rule.action {
                Action::Drop => String::new(),
                Action::Keep | Action::Mask => leaf.raw().to_owned(),
                Action::Hash | Action::Shift if first => leaf.raw().to_owned(),
                _ => String::new(),
            };
        }
        let text = leaf.text();
        let out = match rule.action {
            Action::Keep => return leaf.raw().to_owned(),
            Action::Drop => None,
            Action::Mask => Some(mask(&text, first)),
            Action::Hash | Action::Shift if first => self.text(rule.action, &text),
            Action::Hash | Action::Shift => None,
        };
        out.map(|t| huizhen_hl7::escape::escape(&t, d))
            .unwrap_or_default()
    }
}

/// Joins parts with `sep`, leaving out the empty parts at the end.
fn join_trimmed(mut parts: Vec<String>, sep: char) -> String {
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts.join(&sep.to_string())
}

/// The first character (when `keep_first`) stays; every other non-blank character is `*`.
fn mask(s: &str, keep_first: bool) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i == 0 && keep_first) || c.is_whitespace() {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// Full-width forms (`２０２４`, `－`, `：`) read as their ASCII counterparts.
fn narrow(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        c => c,
    }
}

/// Reads up to `max` ASCII digits (at least `min`) from `chars` at `*at`.
fn digits(chars: &[char], at: &mut usize, min: usize, max: usize) -> Option<u32> {
    let start = *at;
    while *at < chars.len() && *at - start < max && chars[*at].is_ascii_digit() {
        *at += 1;
    }
    if *at - start < min {
        return None;
    }
    chars[start..*at]
        .iter()
        .try_fold(0u32, |n, c| Some(n * 10 + c.to_digit(10)?))
}

/// Shifts a full date by `days`: `YYYYMMDD…` (HL7), `YYYY-MM-DD…`, `YYYY/MM/DD…` or
/// `YYYY年M月D日…`, full-width digits and signs included (written back in ASCII). What
/// follows the date must be a time (digits and `.:+-TZ` or blanks) and is kept; anything
/// else, or a value that is not a date, gives `None`. Character-aware: no input panics.
fn shift_date(s: &str, days: i64) -> Option<String> {
    use chrono::NaiveDate;
    let chars: Vec<char> = s.trim().chars().map(narrow).collect();
    let mut at = 0;
    let year = digits(&chars, &mut at, 4, 4)?;
    #[derive(Clone, Copy)]
    enum Style {
        Compact,
        Dash,
        Slash,
        Chinese,
    }
    let (style, month, day) = match chars.get(at) {
        Some(c) if c.is_ascii_digit() => {
            let m = digits(&chars, &mut at, 2, 2)?;
            let d = digits(&chars, &mut at, 2, 2)?;
            (Style::Compact, m, d)
        }
        Some(&sep @ ('-' | '/')) => {
            at += 1;
            let m = digits(&chars, &mut at, 1, 2)?;
            if chars.get(at) != Some(&sep) {
                return None;
            }
            at += 1;
            let d = digits(&chars, &mut at, 1, 2)?;
            let style = if sep == '-' {
                Style::Dash
            } else {
                Style::Slash
            };
            (style, m, d)
        }
        Some('年') => {
            at += 1;
            let m = digits(&chars, &mut at, 1, 2)?;
            if chars.get(at) != Some(&'月') {
                return None;
            }
            at += 1;
            let d = digits(&chars, &mut at, 1, 2)?;
            if chars.get(at) != Some(&'日') {
                return None;
            }
            at += 1;
            (Style::Chinese, m, d)
        }
        _ => return None,
    };
    let rest: String = chars.get(at..).unwrap_or_default().iter().collect();
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '+' | '-' | 'T' | 'Z' | ' '))
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let moved = date.checked_add_signed(chrono::TimeDelta::try_days(days)?)?;
    if !(1..=9999).contains(&chrono::Datelike::year(&moved)) {
        return None;
    }
    let shown = match style {
        Style::Compact => moved.format("%Y%m%d").to_string(),
        Style::Dash => moved.format("%Y-%m-%d").to_string(),
        Style::Slash => moved.format("%Y/%m/%d").to_string(),
        Style::Chinese => {
            use chrono::Datelike;
            format!("{}年{}月{}日", moved.year(), moved.month(), moved.day())
        }
    };
    Some(format!("{shown}{rest}"))
}

fn load_profile(which: &str) -> Result<Profile> {
    if which == "default" {
        return huizhen_core::config::parse_yaml(
            Path::new("<built-in default profile>"),
            DEFAULT_PROFILE,
        )
        .map_err(|e| anyhow::anyhow!("{e}"));
    }
    let path = Path::new(which);
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the profile", path.display()))?;
    huizhen_core::config::parse_yaml(path, &text).map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn export(store: &Store, a: ExportArgs) -> Result<ExitCode> {
    let d = Deidentifier::new(load_profile(&a.deidentify)?, a.key.clone(), &a.deidentify)?;
    let state = a
        .state
        .as_deref()
        .map(|s| {
            huizhen_core::message::State::parse(s).with_context(|| format!("unknown state {s:?}"))
        })
        .transpose()?;
    // On the record before anything leaves: an export that fails half-way is still audited.
    store
        .audit(&crate::security::cli_event(
            "message.export",
            "Message",
            "",
            format!(
                "de-identified with {}; pipeline {}, state {}, limit {}",
                a.deidentify,
                a.pipeline.as_deref().unwrap_or("*"),
                a.state.as_deref().unwrap_or("*"),
                a.limit
            ),
        ))
        .await
        .context("writing the audit event of the export")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut cursor = None;
    let mut n = 0usize;
    let mut left_out = 0usize;
    let pb = crate::progress::counter("exported");
    'pages: loop {
        let page = store
            .list(&ListFilter {
                pipeline: a.pipeline.clone(),
                state,
                limit: Some(500),
                cursor: cursor.clone(),
                ..ListFilter::default()
            })
            .await?;
        for summary in &page.messages {
            if n >= a.limit {
                break 'pages;
            }
            let Some(m) = store.get(&summary.id).await? else {
                continue;
            };
            // A body that cannot be read field by field is left out and said so (by id: the
            // reason could quote patient data), never exported as it is.
            let body = match m.kind.as_str() {
                "hl7v2" => match huizhen_hl7::expr::decode_body(&m.body, &m.headers)
                    .map_err(|e| e.to_string())
                    .and_then(|t| Message::from_decoded(t).map_err(|e| e.to_string()))
                {
                    Ok(msg) => Value::String(d.apply_hl7_message(&msg)),
                    Err(_) => {
                        eprintln!("{}: hl7v2 body does not decode or parse; left out", m.id);
                        left_out += 1;
                        continue;
                    }
                },
                _ => match serde_json::from_slice::<Value>(&m.body) {
                    Ok(v) => d.apply_json(&v),
                    Err(_) => {
                        eprintln!("{}: {} body is not JSON; left out", m.id, m.kind);
                        left_out += 1;
                        continue;
                    }
                },
            };
            let line = serde_json::json!({
                "id": m.id,
                "pipeline": m.pipeline,
                "facility": m.facility,
                "kind": m.kind,
                "state": m.state,
                "received_at": m.received_at,
                "body": body,
            });
            serde_json::to_writer(&mut out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| incomplete(e, n))?;
            n += 1;
            pb.inc(1);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.flush().map_err(|e| incomplete(e, n))?;
    pb.finish_and_clear();
    eprintln!(
        "{n} messages exported, de-identified with {}{}",
        a.deidentify,
        if left_out > 0 {
            format!("; {left_out} left out")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A write error of the export: unlike a listing, an export whose reader went away (EPIPE) is
/// incomplete, so it fails (status 1) with how far it got, and the error carries no
/// `io::Error` that `main` would take for a quiet `| head`.
fn incomplete(e: std::io::Error, written: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "writing the export to stdout: {e}; the export is incomplete ({written} messages written)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-test-key-of-enough-length";

    fn d(rules: &str) -> Deidentifier {
        let p: Profile = huizhen_core::config::parse_yaml(
            Path::new("p.yaml"),
            &format!("version: 2\nkey: {KEY}\ndate_shift_days: -10\nrules:\n{rules}"),
        )
        .unwrap();
        Deidentifier::new(p, None, "p.yaml").unwrap()
    }

    fn default() -> Deidentifier {
        Deidentifier::new(
            load_profile("default").unwrap(),
            Some(KEY.into()),
            "default",
        )
        .unwrap()
    }

    /// The error of a profile that must be refused.
    fn refused(text: &str) -> String {
        let p: Profile = huizhen_core::config::parse_yaml(Path::new("p.yaml"), text).unwrap();
        match Deidentifier::new(p, Some(KEY.into()), "p.yaml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn json_keeps_only_what_is_named() {
        let d = d(concat!(
            "  - { field: patient, action: keep }\n",
            "  - { field: patient.phone, action: drop }\n",
            "  - { field: patient.name, action: mask }\n",
            "  - { field: patient.id, action: hash }\n",
            "  - { field: patient.birth_date, action: shift }\n",
            "  - { field: visits.*.dept, action: keep }\n",
            "  - { field: \"**.code\", action: keep }\n",
            "  - { field: \"**.text\", action: keep, when: { field: kind, in: [coded] } }\n",
        ));
        let v: Value = serde_json::from_str(
            r#"{"patient":{"name":"欧阳明月","id":"330523199001011238","phone":"139","birth_date":"1990-01-05","sex":"F"},
                "visits":[{"doctor":"王医生","dept":"心内科"},{"doctor":"李医生"}],
                "results":[{"kind":"coded","code":"POS","text":"阳性"},{"kind":"text","text":"张三的备注"}],
                "address":"杭州市"}"#,
        )
        .unwrap();
        let out = d.apply_json(&v);
        let p = &out["patient"];
        assert_eq!(p["name"], "欧***");
        let h = p["id"].as_str().unwrap();
        assert!(h.starts_with("h:") && h.len() == 18, "{h}");
        assert!(
            p.get("phone").is_none(),
            "a drop inside a kept object: {out}"
        );
        assert_eq!(p["birth_date"], "1989-12-26");
        assert_eq!(p["sex"], "F", "kept with its object");
        assert_eq!(out["visits"], serde_json::json!([{"dept": "心内科"}]));
        assert_eq!(
            out["results"],
            serde_json::json!([{"code": "POS", "text": "阳性"}]),
            "text only where the sibling kind is coded"
        );
        assert!(out.get("address").is_none(), "not named, so dropped: {out}");
        // The same id gives the same pseudonym (records stay linkable).
        let w = d.apply_json(&serde_json::json!({"patient": {"id": "330523199001011238"}}));
        assert_eq!(w["patient"]["id"], h);
        // Nothing named: nothing exported.
        assert_eq!(
            d.apply_json(&serde_json::json!({"note": "张三"})),
            Value::Null
        );
    }

    #[test]
    fn default_profile_on_json_keeps_the_record_shape_and_drops_the_person() {
        let d = default();
        let v: Value = serde_json::from_str(
            r#"{"record":"patient","message_type":"ADT^A01","identifiers":[{"id":"330523199001011238","assigning_authority":"CHN","type_code":"NI","resident_id":{"region":"330523","birth_date":"1990-01-01","sex":"male"}}],
                "names":[{"family":"张","given":"三丰","text":"张三丰"}],"birth_date":{"raw":"19900101","iso":"1990-01-01"},"sex":{"code":"M","normalized":"male"},
                "addresses":[{"street":"递铺街道","city":"湖州"}],"home_phones":[{"number":"13912345678"}],
                "referral":{"department":"cardiology","patient":{"name":"欧阳明月","phone":"13912345678","note":"张三"}},
                "orders":[{"service":{"code":"GLU"},"observations":[{"value_type":"NM","values":[{"kind":"numeric","text":"7.8","number":7.8}]},
                                                                   {"value_type":"ST","values":[{"kind":"text","text":"病人张三丰自述"}],"notes":["张三丰"]}]}]}"#,
        )
        .unwrap();
        let out = d.apply_json(&v);
        let s = out.to_string();
        for secret in [
            "张三",
            "三丰",
            "欧阳",
            "330523",
            "1990-01-01",
            "19900101",
            "递铺",
            "湖州",
            "13912345678",
            "病人",
        ] {
            assert!(!s.contains(secret), "{secret} exported: {s}");
        }
        assert_eq!(out["record"], "patient");
        assert_eq!(out["sex"]["code"], "M");
        assert_eq!(out["referral"]["department"], "cardiology");
        assert_eq!(out["identifiers"][0]["type_code"], "NI");
        assert!(
            out["identifiers"][0]["id"]
                .as_str()
                .unwrap()
                .starts_with("h:")
        );
        assert_eq!(out["orders"][0]["service"]["code"], "GLU");
        assert_eq!(
            out["orders"][0]["observations"][0]["values"][0]["text"],
            "7.8"
        );
    }

    /// Segments of every type found in the repository's HL7 fixtures and tests, and the
    /// patient data they carry. Each secret must be in the input (so the test cannot pass by
    /// accident) and must not be in the export.
    const MORE_SEGMENTS: &str = concat!(
        "MSH|^~\\&|HIS|JDXRMYY|HUIZHEN|PROVINCE-RC|20240315083012||ADT^A01^ADT_A01|HIS20240315000123|P|2.5|||AL|NE|CHN|UNICODE UTF-8\r",
        "EVN|A01|20240315083000|||0231^李^建国^^^^^^^L\r",
        "PID|1|H0009^^^OLD|H00012345^^^JDXRMYY^MR~330781199001011234^^^CHN^NNCHN|ALT777|张三^^^^^^L~ZHANG^SAN^^^^^A|王^母亲|19900101|M|别名|汉|城关镇人民路88号^^兰溪市^浙江省^321100^CHN^H|0579|^PRN^PH^^86^579^88123456~^PRN^CP^^86^^13800138000|^WPN^PH^^86^579^82228888|zh|M^已婚|佛教|AC20240001|330781199001011234|DL-889911||兰溪|||||||\r",
        "NK1|1|李四^^^^^^L|SPO^配偶|城关镇人民路88号^^兰溪市^浙江省^321100^CHN|^PRN^CP^^86^^13900139000\r",
        "PV1|1|I|NK^0302^01^JDXRMYY^^^^^心内科病区||||0231^李^建国^^^^^^^L|||CAR||||7|||0231^李^建国^^^^^^^L|IP|I20240315001|||||||||||||||||||||||||20240315080000\r",
        "IN1|1|NCMS^新农合|INS01|兰溪市医保局|兰溪市府前路1号||||||||||张三|SEL|19900101|城关镇人民路88号\r",
        "GT1|1|G001|张大山^^^^^^L||城关镇人民路88号|13700137000\r",
        "AL1|1|DA|PCN^青霉素过敏原^L|SV|皮疹\r",
        "DG1|1||I20.000^不稳定型心绞痛^ICD10-CN|张三自述胸痛|20240315|A\r",
        "MRG|0009998887^^^HXXRMYY^MR~450821198503120035^^^CHN^NI||AC778^^^HXXRMYY||||张^三峰\r",
        "ORC|NW|ORD20240316001|||SC||||20240316101400|||1102^赵^敏\r",
        "OBR|1|ORD20240316001||CT-HEAD^头颅CT平扫^L|||20240316101400\r",
        "OBX|1|TX|11450-4^主诉^LN||胸闷、胸痛 3 天\\.br\\加重 2 小时||||||F\r",
        "OBX|2|NM|8480-6^收缩压^LN||150|mm[Hg]|90-140|H|||F\r",
        "OBX|3|ST|X-NOTE^备注^L||血压 150\\S\\95；药物过敏：青霉素\\T\\头孢|||||F\r",
        "OBX|4|CX|ID^身份^L||330781199001011234^^^CHN^NI|||||F\r",
        "OBX|5|FT|NOTE||\\H\\危急值\\N\\ 联系家属李四|||||F\r",
        "NTE|1||请远程会诊专家阅片，患者张三\r",
        "TXA|1|CN|TX|||||||||DOC-张三-001\r",
        "ZDS|1.2.156.112604.1.2.1.20240315.1^HIS^Application^DICOM\r",
        "ZPI|1|医保|33052300001\r",
        "MSA|AA|HIS20240315000123\r",
        "ERR|^^^207&Application internal error&HL70357|PID^1^5|张三 not found\r",
    );

    const SECRETS: &[&str] = &[
        // names (patients, kin, guarantors, staff)
        "张三",
        "三丰",
        "三峰",
        "李四",
        "王五",
        "王𠀀",
        "张大山",
        "建国",
        "赵^敏",
        "病人1",
        "ZHANG",
        "别名",
        "母亲",
        // identifiers
        "330523199001011238",
        "330781199001011234",
        "450821198503120035",
        "H00012345",
        "H00023456",
        "0009998887",
        "A123456789",
        "H0009",
        "ALT777",
        "AC20240001",
        "DL-889911",
        "I20240315001",
        "AC778",
        "33052300001",
        "HIS20240315000123",
        "HIS000123",
        "LIS0007",
        "ORD20240316001",
        "DOC-",
        // phones and addresses
        "0572-5551234",
        "13800138000",
        "13900139000",
        "13700137000",
        "88123456",
        "82228888",
        "城关镇",
        "人民路",
        "递铺",
        "湖州",
        "兰溪",
        "府前路",
        "321100",
        "313300",
        // birth dates (shifted, never as sent)
        "19900101",
        "19751212",
        "19800101",
        // free text and Z-segments
        "胸闷",
        "青霉素\\T\\头孢",
        "危急值",
        "建议内分泌科会诊",
        "请远程会诊专家阅片",
        "窦性心律",
        "皮疹",
        "1.2.156.112604",
        "医保",
        "0302",
        "心内科病区",
    ];

    /// Every HL7 fixture of the repository (tests/fixtures/hl7 and the parser's fuzz corpus),
    /// decoded as the export decodes journaled bodies, plus [`MORE_SEGMENTS`].
    fn fixtures() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut out = vec![("more-segments".to_owned(), MORE_SEGMENTS.to_owned())];
        for dir in ["tests/fixtures/hl7", "adapters/hl7v2/fuzz/corpus/parse"] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files {
                let raw = std::fs::read(&f).unwrap();
                let text = huizhen_hl7::expr::decode_body(&raw, &Default::default())
                    .unwrap()
                    .text;
                out.push((f.display().to_string(), text));
            }
        }
        assert!(out.len() >= 15, "the fixtures moved: {}", out.len());
        out
    }

    /// The segments the default profile may let out, and which of their fields.
    fn allowed(segment: &str) -> Option<&'static [usize]> {
        Some(match segment {
            "MSH" => &[1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12],
            "EVN" => &[1, 2, 6],
            "PID" => &[1, 3, 7, 8],
            "MRG" => &[1],
            "PV1" => &[1, 2, 3, 10, 18, 19, 44, 45],
            "DG1" => &[1, 2, 3, 5, 6],
            "AL1" => &[1, 2, 3, 4],
            "ORC" => &[1, 2, 3, 5, 9],
            "OBR" => &[1, 2, 3, 4, 7, 22, 25],
            "OBX" => &[1, 2, 3, 4, 5, 6, 7, 8, 11, 14],
            "MSA" => &[1, 2],
            _ => return None,
        })
    }

    #[test]
    fn default_profile_lets_no_patient_data_out_of_any_fixture_with_any_line_ending() {
        let d = default();
        let fixtures = fixtures();
        let all_inputs: String = fixtures.iter().map(|(_, t)| t.as_str()).collect();
        for s in SECRETS {
            assert!(
                all_inputs.contains(s),
                "{s} is in no fixture: the test would prove nothing"
            );
        }
        let mut exported = 0;
        for (name, text) in &fixtures {
            // The same message with CR, LF and CRLF terminators.
            let cr = text.replace("\r\n", "\r").replace('\n', "\r");
            let variants = [cr.clone(), cr.replace('\r', "\n"), cr.replace('\r', "\r\n")];
            let mut outputs = Vec::new();
            for v in &variants {
                let Ok(out) = d.apply_hl7(v) else {
                    // Unreadable as HL7 (the truncated header, the batch envelope): the export
                    // leaves such a body out.
                    assert!(Message::parse(v).is_err(), "{name}");
                    continue;
                };
                for s in SECRETS {
                    assert!(!out.contains(s), "{name}: {s} exported:\n{out}");
                }
                let parsed = Message::parse(&out).unwrap();
                for seg in parsed.segments() {
                    let Some(fields) = allowed(seg.name()) else {
                        panic!("{name}: segment {} exported:\n{out}", seg.name());
                    };
                    for (i, f) in seg.fields().enumerate() {
                        assert!(
                            f.raw().is_empty() || fields.contains(&(i + 1)),
                            "{name}: {}-{} exported:\n{out}",
                            seg.name(),
                            i + 1
                        );
                    }
                }
                if let Some(pid3) = parsed.field("PID", 3) {
                    for rep in pid3.repetitions() {
                        assert!(rep.raw().starts_with("h:"), "{name}: {out}");
                    }
                }
                outputs.push(out);
            }
            assert!(
                outputs.windows(2).all(|w| w[0] == w[1]),
                "{name}: CR, LF and CRLF give different exports: {outputs:#?}"
            );
            exported += outputs.len();
        }
        assert!(exported >= 40, "{exported}");
    }

    #[test]
    fn default_profile_keeps_what_teaching_needs() {
        let d = default();
        let out = d.apply_hl7(MORE_SEGMENTS).unwrap();
        let m = Message::parse(&out).unwrap();
        let get = |p: &str| m.get_str(p).unwrap().unwrap_or_default();
        assert_eq!(get("MSH-9"), "ADT^A01^ADT_A01");
        assert_eq!(get("MSH-12"), "2.5");
        assert_eq!(get("PID-8"), "M");
        assert_eq!(get("PID-7").len(), 8, "shifted, still a date: {out}");
        assert_ne!(get("PID-7"), "19900101");
        assert!(get("PID-3[2]").starts_with("h:"), "{out}");
        assert_eq!(
            get("MRG-1[2]"),
            d.apply_hl7("MSH|^~\\&|X\rPID|1||450821198503120035^^^CHN^NI")
                .unwrap()
                .split("PID|1||")
                .nth(1)
                .unwrap(),
            "the same id gives the same pseudonym in MRG and PID"
        );
        assert_eq!(get("PV1-2"), "I");
        assert_eq!(get("PV1-3"), "NK", "the ward, not the room or the bed");
        assert_eq!(get("DG1-3"), "I20.000^不稳定型心绞痛^ICD10-CN");
        assert_eq!(get("OBX[2]-5"), "150", "numeric results stay");
        assert_eq!(get("OBX[2]-6"), "mm[Hg]");
        assert_eq!(get("OBX[1]-5"), "", "free text goes");
        assert_eq!(get("OBX[4]-5"), "", "an identifier as a result goes");
        for gone in ["NK1", "IN1", "GT1", "NTE", "TXA", "ZDS", "ZPI", "ERR"] {
            assert!(m.segment(gone, 1).is_none(), "{gone}: {out}");
        }
    }

    #[test]
    fn other_delimiters_and_escapes_are_kept_valid() {
        let d = d(concat!(
            "  - { field: PID-5, action: mask }\n",
            "  - { field: PID-11.1, action: keep }\n",
            "  - { field: PID-3.5, action: keep }\n",
            "  - { field: PID-3, action: hash }\n",
        ));
        let out = d
            .apply_hl7("MSH|!@#$%|HIS|JDXRMYY\rPID|1||H001!!!JDXRMYY!MR@33078119900101!!!CHN!NI||张#S#三!!!!!!L||||||路#S#88号$东区#P#")
            .unwrap();
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.delimiters().component, '!');
        assert_eq!(m.get_str("PID-5.1").unwrap().unwrap(), "张**", "{out}");
        assert_eq!(
            m.get_str("PID-11.1").unwrap().unwrap(),
            "路!88号$东区%",
            "{out}"
        );
        assert!(m.get_str("PID-3.1").unwrap().unwrap().starts_with("h:"));
        assert_eq!(m.get_str("PID-3[2].5").unwrap().unwrap(), "NI", "{out}");
        assert_eq!(
            m.get_str("PID-3.4").unwrap().unwrap(),
            "",
            "the authority goes"
        );
    }

    #[test]
    fn dates_shift_char_aware_and_non_dates_are_dropped() {
        for (input, expected) in [
            ("20240101", Some("20231222")),
            ("20240101083000+0800", Some("20231222083000+0800")),
            ("2024-01-05T10:00:00Z", Some("2023-12-26T10:00:00Z")),
            ("2024/01/05", Some("2023/12/26")),
            ("２０２４０１０１", Some("20231222")),
            ("２０２４－０１－０５", Some("2023-12-26")),
            ("2024年1月1日", Some("2023年12月22日")),
            ("２０２４年１月１日 ８：３０", Some("2023年12月22日 8:30")),
            ("2024-01-0张", None),
            ("2024-01-05张三", None),
            ("20240101张三", None),
            ("1990", None),
            ("199001", None),
            ("2024-13-45", None),
            ("张三", None),
            ("", None),
            ("9999-12-31", Some("9999-12-21")),
            ("2024年1月", None),
            ("2024-1", None),
            ("20240230", None),
        ] {
            assert_eq!(shift_date(input, -10).as_deref(), expected, "{input}");
        }
        assert_eq!(shift_date("00000101", -10), None, "before year 0 and back");
        assert_eq!(
            shift_date("20240101", MAX_SHIFT_DAYS).as_deref(),
            Some("21231208")
        );
    }

    #[test]
    fn chinese_and_full_width_dates_in_hl7_do_not_panic() {
        let d = default();
        for pid in [
            "PID|1||123^^^H||张^三||２０２４０１０１",
            "PID|1||123^^^H||张^三||2024年1月1日|F",
            "PID|1||123^^^H||张^三||2024-01-0张|F",
            "PID|1||123^^^H||张^三||1990张三丰",
            "PID|1||123^^^H||张^三||张三丰",
        ] {
            let out = d.apply_hl7(&format!("MSH|^~\\&|HIS|H\n{pid}\n")).unwrap();
            assert!(!out.contains('张') && !out.contains('三'), "{out}");
            assert!(out.contains("|h:"), "{out}");
        }
    }

    /// A small deterministic generator (xorshift), so the loop needs no new dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let d = default();
        let pieces = [
            "MSH|^~\\&|",
            "MSH|",
            "PID|",
            "OBX|",
            "MRG|",
            "PV1|",
            "ZZZ|",
            "|",
            "^",
            "~",
            "\\",
            "&",
            "#",
            "\r",
            "\n",
            "\r\n",
            "\"\"",
            "2024",
            "0101",
            "-",
            "年",
            "月",
            "日",
            "２",
            "０",
            "张",
            "𠀀",
            "\u{FEFF}",
            "\u{0B}",
            "\u{1C}",
            "\\X0D\\",
            "\\S\\",
            "\\",
            "é",
            "1",
            "NM",
            "TX",
            " ",
            "\u{0}",
            "\u{FFFD}",
            "h:",
            "**",
            ".",
            "*",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let n = (rng.next() % 40) as usize;
            let text: String = (0..n).map(|_| rng.pick(&pieces)).collect();
            let _ = d.apply_hl7(&text);
            let _ = shift_date(&text, -((rng.next() % 36_500) as i64));
            let json = serde_json::json!({"a": {"birth_date": text, "sex": [text.clone()]}, "values": [{"kind": text}]});
            let _ = d.apply_json(&json);
        }
        // And raw bytes through the decoder, as the export reads journaled bodies.
        for _ in 0..5_000 {
            let n = (rng.next() % 200) as usize;
            let mut bytes = b"MSH|^~\\&|".to_vec();
            bytes.extend((0..n).map(|_| (rng.next() & 0xFF) as u8));
            if let Ok(dec) = huizhen_hl7::expr::decode_body(&bytes, &Default::default())
                && let Ok(m) = Message::from_decoded(dec)
            {
                let _ = d.apply_hl7_message(&m);
            }
        }
    }

    #[test]
    fn custom_profiles_name_what_to_keep() {
        let d = d(concat!(
            "  - { field: ZDS-*, action: keep }\n",
            "  - { field: ZDS-1.2, action: drop }\n",
            "  - { field: NK1-3, action: keep }\n",
        ));
        let out = d
            .apply_hl7("MSH|^~\\&|HIS\rNK1|1|李四|SPO^配偶|城关镇\rZDS|1.2.3^HIS^App|x\rPID|1||123")
            .unwrap();
        assert_eq!(out, "MSH|^~\\&\rNK1|||SPO^配偶\rZDS|1.2.3^^App|x");
    }

    #[test]
    fn bad_profiles_say_what_and_where() {
        let e = huizhen_core::config::parse_yaml::<Profile>(
            Path::new("p.yaml"),
            "version: 2\nrules:\n  - { field: a, action: scramble }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.yaml:3"), "{e}");
        let e = refused("version: 1\nrules: []\n");
        assert!(
            e.contains("version 2 keeps only what its rules name"),
            "{e}"
        );
        let e = refused("version: 2\nrules:\n  - { field: \"PID-3[2]\", action: hash }\n");
        assert!(e.contains("rule 1") && e.contains("not PID-3[2]"), "{e}");
        let e = refused(
            "version: 2\nrules:\n  - { field: x, action: keep }\n  - { field: PID-0, action: keep }\n",
        );
        assert!(e.contains("rule 2 (\"PID-0\")"), "{e}");
        let e = refused(
            "version: 2\nrules:\n  - { field: OBX-5, action: keep, when: { field: PID-2, in: [NM] } }\n",
        );
        assert!(e.contains("same segment OBX"), "{e}");
        let e = refused("version: 2\nrules:\n  - { field: a..b, action: keep }\n");
        assert!(e.contains("empty key"), "{e}");
        let e = refused("version: 2\ndate_shift_days: 9223372036854775807\nrules: []\n");
        assert!(e.contains("out of range"), "{e}");
        let p: Profile =
            huizhen_core::config::parse_yaml(Path::new("p.yaml"), "version: 2\nrules: []\n")
                .unwrap();
        assert!(Deidentifier::new(p, None, "p.yaml").is_err(), "no key");
    }
}
