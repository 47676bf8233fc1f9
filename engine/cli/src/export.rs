//! `huizhen export --deidentify PROFILE`: journaled messages with patient data removed, masked,
//! pseudonymised or date-shifted, for test environments (数据脱敏).
//!
//! A profile (YAML, `${ENV}` allowed) lists rules by field: a dotted path into JSON bodies
//! (`patient.name`, `patients.*.phone`) or an HL7 field (`PID-5`, `NK1-2`) for `hl7v2` bodies.
//!
//! ```yaml
//! version: 1
//! key: ${HUIZHEN_DEID_KEY}      # for hash (HMAC-SHA256) and the date shift; ≥ 16 bytes
//! date_shift_days: -37          # optional; default: derived from the key (1–365 days back)
//! rules:
//!   - { field: patient.name, action: mask }
//!   - { field: patient.id_number, action: hash }
//!   - { field: patient.birth_date, action: shift }
//!   - { field: PID-13, action: drop }
//! ```
//!
//! Actions: `drop` (remove the JSON key / empty the HL7 field), `mask` (keep the first
//! character, `*` for the rest), `hash` (a stable pseudonym `h:` + 16 hex of the HMAC, so the
//! same patient links across records), `shift` (dates `YYYY-MM-DD…` or HL7 `YYYYMMDD…` moved by
//! the same number of days everywhere, so intervals survive). `--deidentify default` uses the
//! built-in profile below (the key then comes from `--key` or `HUIZHEN_DEID_KEY`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use hmac::{Hmac, Mac};
use huizhen_core::store::{ListFilter, Store};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A profile file, or `default` for the built-in one.
    #[arg(long, value_name = "PROFILE")]
    deidentify: String,
    /// The key of the built-in profile (else HUIZHEN_DEID_KEY).
    #[arg(long, env = "HUIZHEN_DEID_KEY", hide_env_values = true)]
    key: Option<String>,
    #[arg(long)]
    pipeline: Option<String>,
    /// received, processing, done, failed or dead.
    #[arg(long)]
    state: Option<String>,
    /// Most messages to export.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Drop,
    Mask,
    Hash,
    Shift,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub field: String,
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub version: u32,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub date_shift_days: Option<i64>,
    pub rules: Vec<Rule>,
}

const DEFAULT_PROFILE: &str = r#"version: 1
rules:
  # JSON bodies: the usual names of patient fields, wherever they are nested.
  - { field: "**.name", action: mask }
  - { field: "**.patient_name", action: mask }
  - { field: "**.id_number", action: hash }
  - { field: "**.identifiers", action: hash }
  - { field: "**.phone", action: drop }
  - { field: "**.address", action: drop }
  - { field: "**.birth_date", action: shift }
  - { field: "**.note", action: drop }
  # HL7 v2 bodies (PID: identifiers, name, birth date, address, phones, SSN/ID; NK1: next of kin).
  - { field: PID-3, action: hash }
  - { field: PID-5, action: mask }
  - { field: PID-6, action: mask }
  - { field: PID-7, action: shift }
  - { field: PID-11, action: drop }
  - { field: PID-13, action: drop }
  - { field: PID-14, action: drop }
  - { field: PID-19, action: hash }
  - { field: NK1-2, action: mask }
  - { field: NK1-4, action: drop }
  - { field: NK1-5, action: drop }
  - { field: NTE-3, action: drop }
"#;

/// The rules, ready to apply.
pub struct Deidentifier {
    rules: Vec<Rule>,
    key: Vec<u8>,
    shift_days: i64,
}

impl Deidentifier {
    pub fn new(profile: Profile, key: Option<String>) -> Result<Deidentifier> {
        if profile.version != 1 {
            bail!("version: {} is not supported (expected 1)", profile.version);
        }
        let key = profile.key.or(key).context(
            "the profile needs a key (`key:` in the profile, --key or HUIZHEN_DEID_KEY)",
        )?;
        if key.len() < 16 {
            bail!("the de-identification key must be at least 16 bytes");
        }
        let mut d = Deidentifier {
            rules: profile.rules,
            key: key.into_bytes(),
            shift_days: 0,
        };
        d.shift_days = match profile.date_shift_days {
            Some(n) => n,
            None => {
                let h = d.mac(b"date-shift");
                -((u16::from_be_bytes([h[0], h[1]]) % 365) as i64 + 1)
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

    fn text(&self, action: Action, s: &str) -> Option<String> {
        match action {
            Action::Drop => None,
            Action::Mask => {
                let mut chars = s.chars();
                Some(match chars.next() {
                    Some(first) => std::iter::once(first)
                        .chain(chars.map(|c| if c.is_whitespace() { c } else { '*' }))
                        .collect(),
                    None => String::new(),
                })
            }
            Action::Hash => {
                if s.is_empty() {
                    Some(String::new())
                } else {
                    Some(format!("h:{}", &hex::encode(self.mac(s.as_bytes()))[..16]))
                }
            }
            Action::Shift => Some(shift_date(s, self.shift_days).unwrap_or_else(|| {
                // Not a date: better gone than kept.
                String::new()
            })),
        }
    }

    fn json(&self, action: Action, v: &Value) -> Option<Value> {
        match v {
            Value::String(s) => self.text(action, s).map(Value::String),
            Value::Null => Some(Value::Null),
            Value::Array(items) => {
                if action == Action::Drop {
                    return None;
                }
                Some(Value::Array(
                    items.iter().filter_map(|i| self.json(action, i)).collect(),
                ))
            }
            Value::Object(map) => {
                if action == Action::Drop {
                    return None;
                }
                Some(Value::Object(
                    map.iter()
                        .filter_map(|(k, v)| self.json(action, v).map(|v| (k.clone(), v)))
                        .collect(),
                ))
            }
            other => self.text(action, &other.to_string()).map(Value::String),
        }
    }

    /// Applies the JSON rules to a body.
    pub fn apply_json(&self, body: &mut Value) {
        for r in &self.rules {
            if is_hl7_path(&r.field) {
                continue;
            }
            let path: Vec<&str> = r.field.split('.').collect();
            self.walk(body, &path, r.action);
        }
    }

    fn walk(&self, v: &mut Value, path: &[&str], action: Action) {
        let Some((head, rest)) = path.split_first() else {
            return;
        };
        match (*head, v) {
            ("**", v) => {
                // Here or at any depth below.
                self.walk(v, rest, action);
                match v {
                    Value::Object(map) => {
                        for child in map.values_mut() {
                            self.walk(child, path, action);
                        }
                    }
                    Value::Array(items) => {
                        for child in items {
                            self.walk(child, path, action);
                        }
                    }
                    _ => {}
                }
            }
            ("*", Value::Array(items)) => {
                for child in items {
                    self.walk(child, rest, action);
                }
            }
            ("*", Value::Object(map)) => {
                for child in map.values_mut() {
                    self.walk(child, rest, action);
                }
            }
            (key, Value::Object(map)) => {
                if rest.is_empty() {
                    if let Some(old) = map.get(key) {
                        match self.json(action, old) {
                            Some(new) => {
                                map.insert(key.to_owned(), new);
                            }
                            None => {
                                map.remove(key);
                            }
                        }
                    }
                } else if let Some(child) = map.get_mut(key) {
                    self.walk(child, rest, action);
                }
            }
            (_, Value::Array(items)) => {
                for child in items {
                    self.walk(child, path, action);
                }
            }
            _ => {}
        }
    }

    /// Applies the HL7 rules to a decoded HL7 v2 message (segments separated by CR).
    pub fn apply_hl7(&self, text: &str) -> String {
        let sep = text
            .strip_prefix("MSH")
            .and_then(|r| r.chars().next())
            .unwrap_or('|');
        let enc: Vec<char> = text
            .strip_prefix("MSH")
            .map(|r| r.chars().skip(1).take_while(|c| *c != sep).collect())
            .unwrap_or_else(|| vec!['^', '~', '\\', '&']);
        let mut out = Vec::new();
        for seg in text.split('\r') {
            let name = seg.get(..3).unwrap_or("");
            let mut fields: Vec<String> = seg.split(sep).map(str::to_owned).collect();
            for r in &self.rules {
                let Some((rs, n)) = hl7_rule(&r.field) else {
                    continue;
                };
                if rs != name {
                    continue;
                }
                // MSH-1 is the separator itself, so MSH-n sits at index n-1; others at n.
                let idx = if name == "MSH" { n - 1 } else { n };
                if idx == 0 || idx >= fields.len() {
                    continue;
                }
                let old = &fields[idx];
                fields[idx] = match r.action {
                    Action::Drop => String::new(),
                    Action::Mask => old
                        .chars()
                        .enumerate()
                        .map(|(i, c)| if i == 0 || enc.contains(&c) { c } else { '*' })
                        .collect(),
                    action => {
                        // Per repetition, first component: identifiers and dates live there.
                        old.split(enc.get(1).copied().unwrap_or('~'))
                            .map(|rep| {
                                let first = rep
                                    .split(enc.first().copied().unwrap_or('^'))
                                    .next()
                                    .unwrap_or("");
                                self.text(action, first).unwrap_or_default()
                            })
                            .collect::<Vec<_>>()
                            .join(&enc.get(1).copied().unwrap_or('~').to_string())
                    }
                };
            }
            out.push(fields.join(&sep.to_string()));
        }
        out.join("\r")
    }
}

fn is_hl7_path(f: &str) -> bool {
    hl7_rule(f).is_some()
}

/// `PID-5` → ("PID", 5).
fn hl7_rule(f: &str) -> Option<(&str, usize)> {
    let (seg, n) = f.split_once('-')?;
    if seg.len() != 3
        || !seg
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return None;
    }
    let n: usize = n.parse().ok()?;
    (n > 0).then_some((seg, n))
}

/// Shifts `YYYY-MM-DD…` or `YYYYMMDD…` by `days`, keeping what follows the date.
fn shift_date(s: &str, days: i64) -> Option<String> {
    use chrono::NaiveDate;
    let (date, rest, dashed) = if s.len() >= 10 && s.as_bytes()[4] == b'-' {
        (
            NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").ok()?,
            &s[10..],
            true,
        )
    } else if s.len() >= 8 && s[..8].bytes().all(|b| b.is_ascii_digit()) {
        (
            NaiveDate::parse_from_str(&s[..8], "%Y%m%d").ok()?,
            &s[8..],
            false,
        )
    } else {
        return None;
    };
    let moved = date.checked_add_signed(chrono::TimeDelta::days(days))?;
    let fmt = if dashed { "%Y-%m-%d" } else { "%Y%m%d" };
    Some(format!("{}{rest}", moved.format(fmt)))
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
    let d = Deidentifier::new(load_profile(&a.deidentify)?, a.key.clone())?;
    let state = a
        .state
        .as_deref()
        .map(|s| {
            huizhen_core::message::State::parse(s).with_context(|| format!("unknown state {s:?}"))
        })
        .transpose()?;
    let mut cursor = None;
    let mut n = 0usize;
    let mut ids = Vec::new();
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
            let body = match m.kind.as_str() {
                "hl7v2" => {
                    let decoded = huizhen_hl7::expr::decode_body(&m.body, &m.headers)
                        .map_err(|e| anyhow::anyhow!("message {}: {e}", m.id))?;
                    Value::String(d.apply_hl7(&decoded.text))
                }
                _ => match serde_json::from_slice::<Value>(&m.body) {
                    Ok(mut v) => {
                        d.apply_json(&mut v);
                        v
                    }
                    // A body that is neither JSON nor HL7 cannot be de-identified field by
                    // field: it is left out, and said so.
                    Err(_) => {
                        eprintln!("{}: {} body is not JSON; left out", m.id, m.kind);
                        continue;
                    }
                },
            };
            let out = serde_json::json!({
                "id": m.id,
                "pipeline": m.pipeline,
                "facility": m.facility,
                "kind": m.kind,
                "state": m.state,
                "received_at": m.received_at,
                "body": body,
            });
            println!("{}", serde_json::to_string(&out)?);
            ids.push(m.id.clone());
            n += 1;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    store
        .audit(&crate::security::cli_event(
            "message.export",
            "Message",
            "",
            format!(
                "de-identified with {}: {} messages",
                a.deidentify,
                ids.len()
            ),
        ))
        .await?;
    eprintln!("{n} messages exported, de-identified with {}", a.deidentify);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(rules: &str) -> Deidentifier {
        let p: Profile = huizhen_core::config::parse_yaml(
            Path::new("p.yaml"),
            &format!("version: 1\nkey: a-test-key-of-enough-length\ndate_shift_days: -10\nrules:\n{rules}"),
        )
        .unwrap();
        Deidentifier::new(p, None).unwrap()
    }

    #[test]
    fn json_rules() {
        let d = d(
            "  - { field: patient.name, action: mask }\n  - { field: patient.id, action: hash }\n  - { field: patient.phone, action: drop }\n  - { field: patient.birth_date, action: shift }\n  - { field: visits.*.doctor, action: mask }\n",
        );
        let mut v: Value = serde_json::from_str(
            r#"{"patient":{"name":"欧阳明月","id":"330523199001011238","phone":"139","birth_date":"1990-01-05"},"visits":[{"doctor":"王医生"}],"dept":"cardiology"}"#,
        )
        .unwrap();
        d.apply_json(&mut v);
        assert_eq!(v["patient"]["name"], "欧***");
        let h = v["patient"]["id"].as_str().unwrap();
        assert!(h.starts_with("h:") && h.len() == 18 && !h.contains("3305"));
        assert!(v["patient"].get("phone").is_none());
        assert_eq!(v["patient"]["birth_date"], "1989-12-26");
        assert_eq!(v["visits"][0]["doctor"], "王**");
        assert_eq!(v["dept"], "cardiology", "other fields stay");
        // The same id gives the same pseudonym (records stay linkable).
        let mut w: Value =
            serde_json::from_str(r#"{"patient":{"id":"330523199001011238"}}"#).unwrap();
        d.apply_json(&mut w);
        assert_eq!(w["patient"]["id"], h);
    }

    #[test]
    fn default_profile_finds_nested_fields_and_hl7() {
        let p = load_profile("default").unwrap();
        let d = Deidentifier::new(p, Some("a-test-key-of-enough-length".into())).unwrap();
        let mut v: Value = serde_json::from_str(
            r#"{"referral":{"patient":{"name":"张三","id_number":"330523199001011238","phone":"13912345678"}}}"#,
        )
        .unwrap();
        d.apply_json(&mut v);
        let s = v.to_string();
        assert!(
            !s.contains("张三") && !s.contains("3305231990") && !s.contains("1391234"),
            "{s}"
        );
        let hl7 = d.apply_hl7("MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|C1|P|2.5\rPID|1||330523199001011238^^^H^MR||张^三丰||19900105|M|||浙江省杭州市^^^^310000||13912345678\rPV1|1|I");
        assert!(
            !hl7.contains("三丰")
                && !hl7.contains("3305231990")
                && !hl7.contains("1391234")
                && !hl7.contains("杭州"),
            "{hl7}"
        );
        assert!(hl7.contains("ADT^A01|C1|P|2.5"), "the header stays: {hl7}");
        assert!(hl7.contains("|张^**|"), "{hl7}");
        assert!(hl7.contains("|M|"), "sex stays: {hl7}");
    }

    #[test]
    fn bad_profiles_say_where() {
        let e = huizhen_core::config::parse_yaml::<Profile>(
            Path::new("p.yaml"),
            "version: 1\nrules:\n  - { field: a, action: scramble }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.yaml:3"), "{e}");
        let p: Profile =
            huizhen_core::config::parse_yaml(Path::new("p.yaml"), "version: 1\nrules: []\n")
                .unwrap();
        assert!(Deidentifier::new(p, None).is_err(), "no key");
    }
}
