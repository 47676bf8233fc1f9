//! `consultation_create`: turns the consultation order an HIS sends (`ORM^O01`/`OML^O21`, made
//! into the JSON `"record": "order"` by `hl7_map`) into a consultation of the workflow
//! (issue 15 item 2; STANDARDS CN-01, CN-02, CN-03). The core knows no HL7: the step reads the
//! order's JSON fields by name.
//!
//! ```yaml
//! steps:
//!   - hl7_map: {}
//!   - consultation_create:
//!       service_type: institution-to-institution   # or direct-to-patient, internet-hospital
//!       agreement: auto          # auto (the requesting facility's active agreement, CN-02),
//!                                # none, or an agreement id
//!       province: "44"           # the requesting facility's province (per-province SLAs)
//!       min_title: attending     # the lowest acceptable title (CN-03)
//!       departments: { HZ-XNK: "03.02" }   # OBR-4 code (or text) → the platform's department
//!       default_department: "03" # when the order's department is not in the map
//!       purpose: 明确诊断并给出治疗方案   # 目的 (default: OBR-4's text)
//!       submit: true             # submit at once (default true)
//!       approve: false           # and approve as the pipeline (a facility without local QC)
//!       triage: triage           # dotted body path of a triage plugin's output (optional)
//!       patient_facility: county-3   # namespace of PID-3 (default: the message's facility)
//!       window: 1h               # a routine order's requested time becomes [time, time+window)
//! ```
//!
//! **The patient** is the `person-id` header that `match_patient` sets; without it the step
//! looks up the order's local patient id (the first `PID-3` that is not a resident id or an
//! insurance number) in the identity index, where the registration ADT put it. An unknown
//! patient is a retryable error: the ADT may still be on its way.
//!
//! **What is read.** `ORC-1` `NW` creates; `CA` (and the other cancel codes) cancels the
//! consultation made from the same placer order number, with `ORC-16` as the reason; other
//! controls only look the consultation up. The requesting doctor is `ORC-12`/`OBR-16`, the
//! urgency the order's (`TQ1-9`, `ORC-7.6`, …), the department `OBR-4`, the reason `OBR-31`,
//! the ICD-10 code the first `DG1`'s, the case summary `OBR-13` and the `NTE`s, the
//! attachments the `OBX`s (DICOM studies by UID, reference pointers as reports, other results
//! as references to this message's `OBX`). A missing required value is a permanent error
//! naming the HL7 field.
//!
//! **For the result.** The order's numbers (`ORC-2`, `ORC-3`), the HIS's own patient ids
//! (`PID-3` without national numbers), the ordering doctor's name and the service (`OBR-4`)
//! are kept with the request (`his_order`), so the signed opinion announced on completion
//! carries them back to the HIS (`hl7_build`).
//!
//! **Idempotent.** The consultation is keyed by the facility and the placer order number
//! (`ORC-2`, else the message id): a resent or retried order finds its consultation, and the
//! step carries it on to `submit`/`approve` where a retry left it. The message gets the header
//! `consultation-id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod order;

use chrono::TimeDelta;
use futures::future::BoxFuture;
use huizhen_domain::consultation::{
    Actor, Attachments, Command, ConsultError, ConsultationRequest, RequestedTime, Role,
    ServiceType, State, TriageOutput, Urgency,
};
use huizhen_domain::expert::{IcdCode, Title};
use serde::Deserialize;

use super::{Step, StepConfig};
use crate::extensions::Extensions;
use crate::runner::BuildContext;
use crate::store::consultations::{CommandBy, ConsultationError};
use crate::work::{Flow, StepError, Work};
use crate::workflow::Workflow;
use order::{Coded, Order, his_order, local_patient_id, parse_time};

/// The header with the consultation id.
pub const CONSULTATION_HEADER: &str = "consultation-id";

/// `- consultation_create: {…}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationCreateConfig {
    /// CN-01 service type.
    #[serde(default = "default_service")]
    pub service_type: ServiceType,
    /// `auto`, `none`, or an agreement id.
    #[serde(default = "default_agreement")]
    pub agreement: String,
    /// The requesting facility's province (GB/T 2260).
    #[serde(default)]
    pub province: Option<String>,
    /// The lowest acceptable professional title.
    #[serde(default = "default_title")]
    pub min_title: Title,
    /// `OBR-4` code (or text) → the platform's department code.
    #[serde(default)]
    pub departments: BTreeMap<String, String>,
    /// The department of an order whose department is not in `departments`.
    #[serde(default)]
    pub default_department: Option<String>,
    /// 目的 (default: `OBR-4`'s text).
    #[serde(default)]
    pub purpose: Option<String>,
    /// Submit the new consultation (drafting → pending-local-approval).
    #[serde(default = "yes")]
    pub submit: bool,
    /// Approve it as the pipeline (pending-local-approval → pending-match: assignment).
    #[serde(default)]
    pub approve: bool,
    /// Dotted body path of the triage plugin's output (`TriageOutput` JSON).
    #[serde(default)]
    pub triage: Option<String>,
    /// Namespace of the order's local patient id (default: the message's facility).
    #[serde(default)]
    pub patient_facility: Option<String>,
    /// A routine order's requested time becomes the window `[time, time + window)`.
    #[serde(default = "default_window", with = "crate::config::duration")]
    pub window: Duration,
}

fn default_service() -> ServiceType {
    ServiceType::InstitutionToInstitution
}
fn default_agreement() -> String {
    "auto".into()
}
fn default_title() -> Title {
    Title::Attending
}
fn yes() -> bool {
    true
}
fn default_window() -> Duration {
    Duration::from_secs(3600)
}

#[typetag::deserialize(name = "consultation_create")]
impl StepConfig for ConsultationCreateConfig {
    fn type_name(&self) -> &'static str {
        "consultation_create"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.agreement.trim().is_empty() {
            return Err("agreement: give `auto`, `none` or an agreement id".into());
        }
        if self.approve && !self.submit {
            return Err("approve: needs `submit: true` (a draft is submitted first)".into());
        }
        if self.window.is_zero() {
            return Err("window: must be more than 0".into());
        }
        for (name, v) in [
            ("province", self.province.as_deref()),
            ("default_department", self.default_department.as_deref()),
            ("purpose", self.purpose.as_deref()),
            ("patient_facility", self.patient_facility.as_deref()),
        ] {
            if v.is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("{name}: is blank (leave it out instead)"));
            }
        }
        for (code, dept) in &self.departments {
            if dept.trim().is_empty() {
                return Err(format!("departments.{code}: is blank"));
            }
        }
        if let Some(p) = &self.triage
            && p.split('.').any(str::is_empty)
        {
            return Err(format!("triage: {p:?} is not a dotted path (a.b.c)"));
        }
        Ok(Arc::new(ConsultationCreate {
            config: self.clone(),
            pipeline: ctx.pipeline.clone(),
            extensions: ctx.extensions.clone(),
        }))
    }
}

struct ConsultationCreate {
    config: ConsultationCreateConfig,
    pipeline: String,
    extensions: Extensions,
}

fn permanent(work: &Work, what: impl std::fmt::Display) -> StepError {
    StepError::permanent(format!("message {}: consultation_create: {what}", work.id))
}

fn retry(work: &Work, what: impl std::fmt::Display) -> StepError {
    StepError::new(format!("message {}: consultation_create: {what}", work.id))
}

/// What a workflow error means for the message: the store failing is worth a retry; a
/// refusal (invalid data, a state that does not allow the action) is not.
fn step_error(work: &Work, e: ConsultationError) -> StepError {
    match e {
        ConsultationError::Store(_) | ConsultationError::Busy(_) => retry(work, e),
        ConsultationError::Refused(ConsultError::Request(r)) => permanent(
            work,
            format!(
                "the order does not make a valid consultation request: {}",
                r.0.iter()
                    .map(|p| format!("{}: {}", p.path, p.problem))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        other => permanent(work, other),
    }
}

impl ConsultationCreate {
    fn read_order(&self, work: &mut Work) -> Result<Order, StepError> {
        if work.kind != "json" {
            return Err(permanent(
                work,
                format!(
                    "reads the JSON order record of hl7_map, but the message is of kind {}; put `- hl7_map: {{}}` before it",
                    work.kind
                ),
            ));
        }
        let value = work.json()?.clone();
        let order: Order = serde_path_to_error::deserialize(value).map_err(|e| {
            permanent(
                work,
                format!(
                    "the body is not the order record hl7_map makes: at `{}`",
                    e.path()
                ),
            )
        })?;
        if order.record.as_deref() != Some("order") {
            return Err(permanent(
                work,
                "the record is not an `order` (consultation_create reads ORM^O01 and OML^O21)",
            ));
        }
        Ok(order)
    }

    /// The patient's person id: the `person-id` header, else the identity index.
    async fn patient(&self, wf: &Workflow, work: &Work, order: &Order) -> Result<u64, StepError> {
        if let Some(p) = work.headers.get("person-id") {
            return p
                .trim()
                .parse()
                .map_err(|_| permanent(work, "the person-id header is not a person id"));
        }
        let facility = self
            .config
            .patient_facility
            .clone()
            .unwrap_or_else(|| work.facility.clone());
        let local = local_patient_id(order)
            .ok_or_else(|| permanent(work, "PID-3 has no local patient identifier"))?;
        let row = wf
            .store()
            .identity(&facility, local)
            .await
            .map_err(|e| retry(work, e))?;
        match row {
            Some(r) => Ok(r.person_id as u64),
            None => Err(retry(
                work,
                format!(
                    "the patient (PID-3 in namespace {facility}) is not in the identity index yet; put `match_patient` on the registration ADT"
                ),
            )),
        }
    }

    /// The department: `OBR-4`'s code or text through `departments`, else the default.
    fn department(&self, work: &Work, order: &Order) -> Result<String, StepError> {
        let d = order.requested_department.as_ref();
        let keys = [
            d.and_then(|d| d.code.as_deref()),
            d.and_then(|d| d.name.as_deref()),
            order
                .requested_service
                .as_ref()
                .and_then(|s| s.code.as_deref()),
        ];
        for k in keys.into_iter().flatten() {
            if let Some(v) = self.config.departments.get(k.trim()) {
                return Ok(v.clone());
            }
        }
        self.config.default_department.clone().ok_or_else(|| {
            permanent(
                work,
                format!(
                    "OBR-4: the department {:?} is not in `departments` and there is no `default_department`",
                    keys.into_iter().flatten().next().unwrap_or("")
                ),
            )
        })
    }

    /// The agreement under which the facility asks (CN-02).
    async fn agreement(&self, wf: &Workflow, work: &Work) -> Result<Option<String>, StepError> {
        match self.config.agreement.trim() {
            "none" => Ok(None),
            "auto" => {
                if self.config.service_type != ServiceType::InstitutionToInstitution {
                    return Ok(None);
                }
                let offset = TimeDelta::minutes(i64::from(wf.config().matching.utc_offset_minutes));
                let today = (wf.now() + offset).date_naive();
                let all = wf
                    .store()
                    .agreements_of(&work.facility)
                    .await
                    .map_err(|e| retry(work, e))?;
                all.into_iter()
                    .find(|a| a.is_active_on(today))
                    .map(|a| Some(a.id))
                    .ok_or_else(|| {
                        permanent(
                            work,
                            format!(
                                "facility {} has no cooperation agreement in force today (CN-02); import one, or set `agreement:`",
                                work.facility
                            ),
                        )
                    })
            }
            id => Ok(Some(id.to_owned())),
        }
    }

    fn requested_time(&self, order: &Order, offset: i32) -> RequestedTime {
        if order.urgency != Urgency::Routine {
            return RequestedTime::AsSoonAsPossible;
        }
        let parsed = order
            .requested_time
            .as_ref()
            .and_then(|t| t.iso.as_deref())
            .and_then(|iso| parse_time(iso, offset));
        match parsed {
            Some((from, true)) => RequestedTime::Window {
                from,
                to: from + TimeDelta::days(1),
            },
            Some((from, false)) => RequestedTime::Window {
                from,
                to: from + TimeDelta::from_std(self.config.window).unwrap_or(TimeDelta::hours(1)),
            },
            None => RequestedTime::AsSoonAsPossible,
        }
    }

    fn attachments(work: &Work, order: &Order) -> Attachments {
        let mut out = Attachments::default();
        for (i, a) in order.attachments.iter().enumerate() {
            let set = a
                .get("set_id")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| (i + 1).to_string(), str::to_owned);
            let local = format!("message/{}/OBX/{set}", work.id);
            match a.get("kind").and_then(serde_json::Value::as_str) {
                Some("dicom_study") => {
                    if let Some(uid) = a.get("study_uid").and_then(serde_json::Value::as_str) {
                        out.studies.push(uid.trim().to_owned());
                    }
                }
                Some("reference") => match a.get("pointer").and_then(serde_json::Value::as_str) {
                    Some(p) if !p.trim().is_empty() => out.reports.push(p.trim().to_owned()),
                    _ => out.reports.push(local),
                },
                Some("embedded") => out.reports.push(local),
                _ => out.observations.push(local),
            }
        }
        out
    }

    async fn request(
        &self,
        wf: &Workflow,
        work: &mut Work,
        order: &Order,
    ) -> Result<ConsultationRequest, StepError> {
        let patient = self.patient(wf, work, order).await?;
        let doctor = order
            .ordering_provider
            .as_ref()
            .and_then(|d| d.id.as_deref())
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| permanent(work, "ORC-12/OBR-16: the ordering provider has no id"))?
            .to_owned();
        let service_text = order
            .requested_service
            .as_ref()
            .and_then(Coded::text_or_code)
            .map(str::to_owned);
        let reasons: Vec<&str> = order
            .reason_for_study
            .iter()
            .filter_map(Coded::text_or_code)
            .collect();
        let reason = if reasons.is_empty() {
            service_text
                .clone()
                .ok_or_else(|| permanent(work, "OBR-31: the order gives no reason (邀请事由)"))?
        } else {
            reasons.join("；")
        };
        let case_summary = order
            .case_summary
            .as_deref()
            .or(order.clinical_info.as_deref())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                permanent(
                    work,
                    "OBR-13/NTE: the order has no case summary (病历摘要, CN-03)",
                )
            })?
            .to_owned();
        let triage = match &self.config.triage {
            None => None,
            Some(path) => {
                let mut v = work.json()?;
                let mut found = true;
                for part in path.split('.') {
                    match v.get(part) {
                        Some(next) => v = next,
                        None => {
                            found = false;
                            break;
                        }
                    }
                }
                if found {
                    Some(
                        serde_json::from_value::<TriageOutput>(v.clone()).map_err(|e| {
                            permanent(work, format!("{path}: not a triage output: {e}"))
                        })?,
                    )
                } else {
                    None
                }
            }
        };
        let offset = wf.config().matching.utc_offset_minutes;
        Ok(ConsultationRequest {
            patient,
            requesting_facility: work.facility.clone(),
            requesting_doctor: doctor,
            province: self.config.province.clone(),
            urgency: order.urgency,
            department: self.department(work, order)?,
            min_title: self.config.min_title,
            icd10: order
                .diagnoses
                .iter()
                .filter_map(|d| d.icd10.as_deref())
                .find_map(|c| IcdCode::parse(c).ok()),
            reason,
            purpose: self
                .config
                .purpose
                .clone()
                .or(service_text)
                .unwrap_or_else(|| "会诊意见 (expert opinion)".into()),
            case_summary,
            requested_time: self.requested_time(order, offset),
            attachments: Self::attachments(work, order),
            triage,
            service_type: self.config.service_type,
            agreement: self.agreement(wf, work).await?,
            his_order: his_order(order).map(Box::new),
        })
    }

    /// Carries a consultation on to `submit` and `approve` as configured, from where it is.
    async fn advance(
        &self,
        wf: &Workflow,
        work: &Work,
        id: &str,
        state: State,
        by: &CommandBy<'_>,
    ) -> Result<(), StepError> {
        let mut state = state;
        if self.config.submit && state == State::Drafting {
            let done = wf
                .execute(id, None, &Command::Submit, by)
                .await
                .map_err(|e| step_error(work, e))?;
            state = done.stored.consultation.state();
        }
        if self.config.approve && state == State::PendingLocalApproval {
            wf.execute(id, None, &Command::Approve, by)
                .await
                .map_err(|e| step_error(work, e))?;
        }
        Ok(())
    }
}

impl Step for ConsultationCreate {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let wf = self
                .extensions
                .get::<Workflow>()
                .ok_or_else(|| permanent(work, "no workflow (the step runs inside an engine)"))?;
            let order = self.read_order(work)?;
            let placer = order
                .placer_order_number
                .as_ref()
                .map(|p| p.id.trim().to_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| work.id.clone());
            let key = format!("{}/{placer}", work.facility);
            let actor = Actor::new(format!("pipeline:{}", self.pipeline), Role::System);
            let source = format!("message {}", work.id);
            let facility = work.facility.clone();
            let mut by = CommandBy::new(&actor);
            by.facility = &facility;
            by.source = &source;
            let id = match order.control.action.as_str() {
                "new" => {
                    let request = self.request(&wf, work, &order).await?;
                    let (stored, _) = wf
                        .create(&crate::message::new_id(), request, &by, Some(&key))
                        .await
                        .map_err(|e| step_error(work, e))?;
                    let id = stored.consultation.id().to_owned();
                    self.advance(&wf, work, &id, stored.consultation.state(), &by)
                        .await?;
                    id
                }
                "cancel" => {
                    let id = wf
                        .store()
                        .consultation_by_source(&key)
                        .await
                        .map_err(|e| step_error(work, e))?
                        .ok_or_else(|| {
                            permanent(work, format!("ORC-2: no consultation for order {placer}"))
                        })?;
                    let reason = order
                        .control_reason
                        .as_ref()
                        .and_then(Coded::text_or_code)
                        .map_or_else(
                            || format!("cancelled by the HIS (ORC-1 {})", order.control.code),
                            str::to_owned,
                        );
                    wf.execute(&id, None, &Command::Cancel { reason }, &by)
                        .await
                        .map_err(|e| step_error(work, e))?;
                    id
                }
                _ => match wf
                    .store()
                    .consultation_by_source(&key)
                    .await
                    .map_err(|e| step_error(work, e))?
                {
                    Some(id) => id,
                    None => return Ok(Flow::Continue),
                },
            };
            work.headers.insert(CONSULTATION_HEADER.into(), id);
            Ok(Flow::Continue)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_at_build() {
        let bad = [
            ("agreement: ' '", "agreement"),
            ("approve: true\nsubmit: false", "approve"),
            ("departments: { X: ' ' }", "departments.X"),
            ("triage: a..b", "triage"),
            ("window: 0s", "window"),
        ];
        for (yaml, want) in bad {
            let cfg: ConsultationCreateConfig = serde_saphyr::from_str(yaml).unwrap();
            let ctx = BuildContext {
                pipeline: "p".into(),
                facility: "f".into(),
                router: Default::default(),
                extensions: Extensions::default(),
            };
            let err = cfg.build(&ctx).err().unwrap_or_default();
            assert!(err.starts_with(want), "{yaml}: {err}");
        }
    }
}
