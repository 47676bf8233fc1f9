//! The processing-activity record (STANDARDS CN-41, PIPL Art. 55–56): generated from the
//! configuration, it says for each pipeline which data categories it reads (its source), what
//! it does with them (its steps), where it keeps them (the engine's stores) and to whom it
//! sends them (its sinks), with the engine's own stores and safeguards. `huizhen compliance
//! record` prints it (text or JSON) as the data map of an impact assessment.
//!
//! Read from the pipeline files as written (every `${VARIABLE}` stays unexpanded, so no secret
//! is printed) after the configuration was checked; URLs lose their passwords and secret query
//! values ([`crate::store::redact_url`]).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::config::RootConfig;

/// The record.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessingRecord {
    /// The root file it was generated from (none: the built-in defaults).
    pub config: Option<String>,
    /// The engine's own stores and safeguards.
    pub engine: EngineRecord,
    /// One entry per pipeline, by name.
    pub pipelines: Vec<PipelineRecord>,
}

/// The engine's stores and safeguards.
#[derive(Debug, Clone, Serialize)]
pub struct EngineRecord {
    /// The journal database (URL without secrets).
    pub store: String,
    /// Encryption at rest of message and effect bodies (AES-256-GCM), and where the keys are.
    pub encryption_at_rest: bool,
    /// Where call recordings, DICOM instances and other objects are kept.
    pub objects_dir: String,
    /// The hash-chained audit trail: who read or changed what.
    pub audit: String,
    /// Data categories the engine itself keeps beside the journal.
    pub kept: Vec<&'static str>,
}

/// One pipeline's data flow.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRecord {
    pub name: String,
    pub facility: String,
    pub description: String,
    /// The pipeline file.
    pub file: String,
    /// Where the data comes from and what it is.
    pub reads: Flow,
    /// What the steps do with it, in order.
    pub processing: Vec<Flow>,
    /// Where it is kept inside the engine.
    pub stores: Vec<Flow>,
    /// Where it goes outside the engine (or to another pipeline).
    pub sends: Vec<Flow>,
    /// Every text in its steps' settings (a step that names another pipeline, as
    /// `device_reading`'s alerts do, sends to it).
    #[serde(skip)]
    mentions: Vec<String>,
}

/// One part of a flow: the component's type, what it concerns, the data categories.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Flow {
    /// The source, step or sink type (`mllp`, `match_patient`, `http`).
    pub via: String,
    /// Where (an address, a path, a pipeline), as configured.
    pub at: String,
    /// The data categories.
    pub categories: Vec<&'static str>,
}

/// Patient identity and demographics (names, identifiers, birth date, contact details).
pub const IDENTITY: &str = "patient identity and demographics (sensitive personal information)";
/// Medical records: orders, results, diagnoses.
pub const MEDICAL: &str = "medical records: orders, results, diagnoses (sensitive: health)";
/// Medical images with the patient's identity.
pub const IMAGES: &str = "medical images with patient identity (sensitive: health)";
/// Device readings: vital signs.
pub const VITALS: &str = "vital-sign readings from devices (sensitive: health)";
/// Consultation workflow records.
pub const CONSULTATION: &str =
    "consultation records: request, participants, opinion, decisions (sensitive: health)";
/// Whatever the sender sends, treated as sensitive.
pub const SENDER_DEFINED: &str =
    "documents as the sender defines them (treated as sensitive personal information)";
/// No personal data.
pub const NONE: &str = "no personal data (schedule ticks)";

/// What a source of `ty` with `settings` reads.
fn source_flow(ty: &str, s: &Value) -> Flow {
    let kind = text(s, "kind");
    let (at, categories): (String, Vec<&'static str>) = match ty {
        "mllp" => (
            format!("HL7 v2 over MLLP on {}{}", text(s, "listen"), allow_list(s)),
            vec![IDENTITY, MEDICAL],
        ),
        "http" => (
            format!("HTTP POST {} ({})", text(s, "path"), or(&kind, "json")),
            by_kind(&kind),
        ),
        "dicom" => (
            format!(
                "DICOM on {} as {}{}",
                text(s, "listen"),
                or(&text(s, "ae_title"), "HUIZHEN"),
                allow_list(s)
            ),
            vec![IMAGES, IDENTITY],
        ),
        "mqtt" => (
            format!("MQTT {} topics {}", redacted(s, "url"), list(s, "topics")),
            vec![VITALS],
        ),
        "amqp" => (
            format!("AMQP {} queue {}", redacted(s, "url"), text(s, "queue")),
            by_kind(&kind),
        ),
        "file" => (format!("files in {}", text(s, "dir")), by_kind(&kind)),
        "fhir_poll" => (
            format!("FHIR REST polled from {}", redacted(s, "url")),
            vec![IDENTITY, MEDICAL],
        ),
        "cron" => (format!("schedule {}", text(s, "schedule")), vec![NONE]),
        "internal" => (
            "messages routed from other pipelines".into(),
            vec![SENDER_DEFINED],
        ),
        _ => (String::new(), vec![SENDER_DEFINED]),
    };
    Flow {
        via: ty.to_owned(),
        at,
        categories,
    }
}

/// The categories of a body of `kind`.
fn by_kind(kind: &str) -> Vec<&'static str> {
    match kind {
        "hl7v2" => vec![IDENTITY, MEDICAL],
        "fhir+json" | "fhir" => vec![IDENTITY, MEDICAL],
        _ => vec![SENDER_DEFINED],
    }
}

/// What a step of `ty` does: (processing, a store it writes to, a pipeline it routes to).
fn step_flow(ty: &str, s: &Value) -> (Flow, Option<Flow>, Option<Flow>) {
    let f = |at: String, categories: Vec<&'static str>| Flow {
        via: ty.to_owned(),
        at,
        categories,
    };
    match ty {
        "hl7_map" => (
            f(
                "the typed record (patient, visit, order, results)".into(),
                vec![IDENTITY, MEDICAL],
            ),
            None,
            None,
        ),
        "match_patient" => (
            f("links the record to a master person".into(), vec![IDENTITY]),
            Some(f(
                "the identity index (names, identifiers, birth date, phones, addresses; sealed)"
                    .into(),
                vec![IDENTITY],
            )),
            None,
        ),
        "consultation_create" => (
            f(
                "creates a consultation from the order".into(),
                vec![CONSULTATION],
            ),
            Some(f(
                "the consultation workflow's records".into(),
                vec![CONSULTATION],
            )),
            None,
        ),
        "hl7v2_to_fhir" => (
            f(
                "maps HL7 v2 to FHIR R4 resources".into(),
                vec![IDENTITY, MEDICAL],
            ),
            None,
            None,
        ),
        "device_reading" => (
            f(
                "a reading becomes an Observation of its bound patient".into(),
                vec![VITALS],
            ),
            Some(f(
                "the device bindings and observations".into(),
                vec![VITALS],
            )),
            None,
        ),
        "dicom_prefetch" => (
            f(
                "pulls the patient's prior studies from the facility's PACS".into(),
                vec![IMAGES],
            ),
            None,
            None,
        ),
        "plugin" => (
            f(
                format!(
                    "the WASM plugin {} (sandboxed, no network)",
                    text(s, "name")
                ),
                vec![SENDER_DEFINED],
            ),
            None,
            None,
        ),
        "route" => {
            let to = text(s, "to");
            (
                f(format!("a copy to pipeline {to}"), vec![]),
                None,
                Some(f(format!("pipeline {to}"), vec![SENDER_DEFINED])),
            )
        }
        _ => (
            f(
                "filters or reshapes the message inside the engine".into(),
                vec![],
            ),
            None,
            None,
        ),
    }
}

/// What a sink of `ty` does: a store inside the engine, or a destination outside.
fn sink_flow(ty: &str, s: &Value) -> (bool, Flow) {
    let f = |at: String| Flow {
        via: ty.to_owned(),
        at,
        categories: vec![SENDER_DEFINED],
    };
    match ty {
        "journal" => (
            true,
            f("the journal (the message and what the steps made of it)".into()),
        ),
        "fhir_store" => (true, f("the engine's FHIR store (/fhir/r4)".into())),
        "mllp" => (false, f(format!("HL7 v2 over MLLP to {}", text(s, "to")))),
        "http" => (
            false,
            f(format!(
                "HTTP {} {}",
                or(&text(s, "method"), "POST"),
                crate::store::redact_url(&text(s, "url"))
            )),
        ),
        "amqp" => (
            false,
            f(format!(
                "AMQP {} exchange {:?} routing key {:?}",
                redacted(s, "url"),
                text(s, "exchange"),
                text(s, "routing_key")
            )),
        ),
        "mqtt" => (
            false,
            f(format!(
                "MQTT {} topic {}",
                redacted(s, "url"),
                text(s, "topic")
            )),
        ),
        "file" => (false, f(format!("files in {}", text(s, "dir")))),
        "sql" => (false, f(format!("SQL database {}", redacted(s, "url")))),
        "dicom" => (
            false,
            f(format!(
                "DICOM C-STORE to {} at {}",
                text(s, "called"),
                text(s, "to")
            )),
        ),
        "hl7_app_ack" => (false, f("application ACKs back to the sender".into())),
        other => (false, f(format!("{other} sink"))),
    }
}

/// Builds the record of `root` (from `root_file`) and the pipeline files `files`, each read as
/// written: `(path, text)`.
pub fn record(
    root: &RootConfig,
    root_file: Option<&Path>,
    files: &[(std::path::PathBuf, String)],
) -> Result<ProcessingRecord, String> {
    let mut pipelines = Vec::new();
    for (file, text) in files {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| format!("{}: {e}", file.display()))?;
        for doc in docs {
            pipelines.push(pipeline_record(file, &doc));
        }
    }
    pipelines.sort_by(|a, b| a.name.cmp(&b.name));
    propagate(&mut pipelines);
    let enc = &root.security.encryption;
    Ok(ProcessingRecord {
        config: root_file.map(|f| f.display().to_string()),
        engine: EngineRecord {
            store: crate::store::redact_url(&root.store.url),
            encryption_at_rest: enc.enabled,
            objects_dir: root.objects.dir.display().to_string(),
            audit: "hash-chained audit trail of every read and change of patient data, anchored with a signed checkpoint".into(),
            kept: vec![
                IDENTITY,
                MEDICAL,
                CONSULTATION,
                IMAGES,
                VITALS,
                "call recordings, when a participant's consent allows (process records: 3 years minimum, CN-30)",
            ],
        },
        pipelines,
    })
}

fn pipeline_record(file: &Path, doc: &Value) -> PipelineRecord {
    let (source_ty, source) = first_entry(&doc["source"]);
    let mut processing = Vec::new();
    let mut stores = Vec::new();
    let mut sends = Vec::new();
    let mut mentions = Vec::new();
    for step in doc["steps"].as_array().into_iter().flatten() {
        let (ty, s) = first_entry(step);
        texts_in(&s, &mut mentions);
        let (p, store, route) = step_flow(&ty, &s);
        processing.push(p);
        stores.extend(store);
        sends.extend(route);
    }
    for sink in doc["sinks"].as_array().into_iter().flatten() {
        let (ty, s) = first_entry(sink);
        let (kept, flow) = sink_flow(&ty, &s);
        if kept {
            stores.push(flow);
        } else {
            sends.push(flow);
        }
    }
    PipelineRecord {
        name: text(doc, "name"),
        facility: or(&text(doc, "facility"), "default"),
        description: text(doc, "description"),
        file: file.display().to_string(),
        reads: source_flow(&source_ty, &source),
        processing,
        stores,
        sends,
        mentions,
    }
}

fn texts_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| texts_in(x, out)),
        Value::Object(m) => m.values().for_each(|x| texts_in(x, out)),
        _ => {}
    }
}

/// The categories a pipeline handles: what its source reads (for an `internal` source: what
/// the pipelines that route to it handle, or the engine's own consultation events when none
/// does) and what its steps add. Its stores and destinations carry them.
fn propagate(pipelines: &mut [PipelineRecord]) {
    let own = |p: &PipelineRecord| -> Vec<&'static str> {
        let mut c: Vec<&'static str> = p.reads.categories.clone();
        for f in &p.processing {
            c.extend(f.categories.iter().copied());
        }
        c
    };
    // A step naming another pipeline (not already a `route`) sends to it.
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    for p in pipelines.iter_mut() {
        for n in &names {
            let routed = p.sends.iter().any(|f| f.at == format!("pipeline {n}"));
            if *n != p.name && !routed && p.mentions.contains(n) {
                p.sends.push(Flow {
                    via: "route".into(),
                    at: format!("pipeline {n}"),
                    categories: vec![SENDER_DEFINED],
                });
            }
        }
    }
    let mut handled: Vec<Vec<&'static str>> = pipelines.iter().map(own).collect();
    let internal: Vec<bool> = pipelines
        .iter()
        .map(|p| p.reads.via == "internal")
        .collect();
    for (i, h) in handled.iter_mut().enumerate() {
        if internal[i] {
            h.retain(|c| *c != SENDER_DEFINED);
        }
    }
    // Routes carry categories forward; a few passes reach every chain of a sane config.
    for _ in 0..pipelines.len().max(1) {
        let mut changed = false;
        for from in 0..pipelines.len() {
            let targets: Vec<String> = pipelines[from]
                .sends
                .iter()
                .filter(|f| f.via == "route")
                .filter_map(|f| f.at.strip_prefix("pipeline ").map(str::to_owned))
                .collect();
            for t in targets {
                if let Some(to) = pipelines.iter().position(|p| p.name == t) {
                    let add: Vec<&'static str> = handled[from].clone();
                    for c in add {
                        if !handled[to].contains(&c) {
                            handled[to].push(c);
                            changed = true;
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (i, p) in pipelines.iter_mut().enumerate() {
        let mut c = std::mem::take(&mut handled[i]);
        if c.is_empty() {
            // Fed by the engine itself: the consultation, billing and device announcements.
            c.push(CONSULTATION);
        }
        let mut seen = Vec::new();
        c.retain(|x| {
            let new = !seen.contains(x);
            seen.push(*x);
            new
        });
        if internal[i] {
            p.reads.categories = c.clone();
        }
        for f in p.stores.iter_mut().chain(p.sends.iter_mut()) {
            if f.categories == [SENDER_DEFINED] || f.via == "route" {
                f.categories = c.clone();
            }
        }
    }
}

/// The type and settings of `{ type: {…} }`.
fn first_entry(v: &Value) -> (String, Value) {
    v.as_object()
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() { default } else { s }.to_owned()
}

fn list(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        _ => text(v, key),
    }
}

fn allow_list(s: &Value) -> String {
    match list(s, "allow") {
        a if a.is_empty() => ", any peer".into(),
        a => format!(", peers {a}"),
    }
}

fn redacted(v: &Value, key: &str) -> String {
    crate::store::redact_url(&text(v, key))
}

impl ProcessingRecord {
    /// The record as text, one block per pipeline.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Processing-activity record (CN-41), from {}",
            self.config.as_deref().unwrap_or("the built-in defaults")
        );
        let e = &self.engine;
        let _ = writeln!(out, "\nEngine");
        let _ = writeln!(out, "  store:       {}", e.store);
        let _ = writeln!(
            out,
            "  at rest:     {}",
            if e.encryption_at_rest {
                "bodies encrypted (AES-256-GCM)"
            } else {
                "NOT encrypted (security.encryption.enabled: false)"
            }
        );
        let _ = writeln!(out, "  objects:     {}", e.objects_dir);
        let _ = writeln!(out, "  audit:       {}", e.audit);
        let _ = writeln!(out, "  keeps:       {}", e.kept.join("; "));
        for p in &self.pipelines {
            let _ = writeln!(
                out,
                "\nPipeline {} (facility {}, {})",
                p.name, p.facility, p.file
            );
            if !p.description.is_empty() {
                let _ = writeln!(out, "  {}", p.description);
            }
            let line = |out: &mut String, label: &str, f: &Flow| {
                let _ = write!(out, "  {label:<9} {}: {}", f.via, f.at);
                if !f.categories.is_empty() {
                    let _ = write!(out, " [{}]", f.categories.join("; "));
                }
                out.push('\n');
            };
            line(&mut out, "reads", &p.reads);
            for f in &p.processing {
                line(&mut out, "processes", f);
            }
            for f in &p.stores {
                line(&mut out, "stores", f);
            }
            for f in &p.sends {
                line(&mut out, "sends", f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pipeline_says_what_it_reads_keeps_and_sends_without_secrets() {
        let text = r#"
version: 1
name: lis
facility: clinic-a
description: Lab results
source:
  mllp: { listen: 0.0.0.0:2575, allow: [10.1.0.0/16] }
steps:
  - match_patient: {}
  - route: { to: results-fhir }
sinks:
  - journal: {}
  - http: { url: "https://lab:s3cret@his.example.cn/api?token=abc", bearer: "${TOKEN}" }
---
version: 1
name: results-fhir
source:
  internal: {}
steps:
  - hl7v2_to_fhir: {}
sinks:
  - fhir_store: {}
  - sql: { url: "postgres://his:pw@db.example.cn/his", statements: [] }
"#;
        let r = record(
            &RootConfig::default(),
            None,
            &[("pipelines/lis.yaml".into(), text.into())],
        )
        .unwrap();
        assert_eq!(r.pipelines.len(), 2);
        let lis = &r.pipelines[0];
        assert_eq!(
            (lis.name.as_str(), lis.facility.as_str()),
            ("lis", "clinic-a")
        );
        assert_eq!(lis.reads.via, "mllp");
        assert!(lis.reads.at.contains("0.0.0.0:2575, peers 10.1.0.0/16"));
        assert_eq!(lis.reads.categories, [IDENTITY, MEDICAL]);
        assert!(
            lis.stores
                .iter()
                .any(|f| f.via == "match_patient" && f.at.contains("identity index"))
        );
        assert!(lis.stores.iter().any(|f| f.via == "journal"));
        let sends: Vec<&str> = lis.sends.iter().map(|f| f.at.as_str()).collect();
        assert_eq!(sends[0], "pipeline results-fhir");
        assert!(
            sends[1].contains("his.example.cn")
                && !sends[1].contains("s3cret")
                && !sends[1].contains("abc"),
            "{sends:?}"
        );
        let fhir = &r.pipelines[1];
        assert_eq!(fhir.reads.via, "internal");
        assert!(fhir.stores.iter().any(|f| f.via == "fhir_store"));
        assert!(fhir.sends[0].at.contains("db.example.cn") && !fhir.sends[0].at.contains(":pw@"));
        let text = r.to_text();
        assert!(text.contains("Pipeline lis (facility clinic-a"), "{text}");
        assert!(
            !text.contains("s3cret") && !text.contains("${TOKEN}"),
            "{text}"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("s3cret"));
    }
}
