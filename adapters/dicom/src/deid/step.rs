//! `deidentify_dicom`: the pipeline step that writes a de-identified copy of a received
//! instance, or of every instance of a completed study, for secondary use (DCM-06).
//!
//! ```yaml
//! - deidentify_dicom:
//!     project: teaching-2026        # the project key: UIDs and pseudonyms are stable within it
//!     secret: ${DEID_SECRET}        # HMAC key (≥ 16 bytes): the UID mapping, kept secret
//!     output: data/teaching         # the copies: <output>/<study>/<series>/<instance>.dcm
//!     options: [retain_patient_characteristics, clean_descriptors]
//! ```
//!
//! It reads the `dicom` source's messages: `event: instance` (one instance) and
//! `event: study_complete` (the whole study); the stored originals are never changed. The body
//! becomes `{"event": "deidentified", "project", "study_uid", "instances": [{sop_instance_uid,
//! series_uid, path}], "excluded": [reasons], "method"}` with the new UIDs only, header
//! `dicom-deidentified: yes`. An object that must not be exported (burned-in annotation) is
//! listed under `excluded`; when nothing could be exported the step fails permanently, so the
//! message is a dead letter that can be reprocessed.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::store::Store;
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

use super::{Deidentifier, Opt};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeidentifyDicomConfig {
    pub project: String,
    pub secret: String,
    pub output: PathBuf,
    #[serde(default)]
    pub options: Vec<OptionName>,
}

/// An option as written in YAML: the implemented ones and those refused with a reason.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionName {
    RetainUids,
    RetainDeviceIdentity,
    RetainInstitutionIdentity,
    RetainPatientCharacteristics,
    RetainLongitudinalFullDates,
    RetainLongitudinalModifiedDates,
    CleanDescriptors,
    CleanStructuredContent,
    RetainSafePrivate,
    CleanGraphics,
    CleanPixelData,
    CleanRecognizableVisualFeatures,
}

impl OptionName {
    fn resolve(self) -> Result<Opt, String> {
        Ok(match self {
            OptionName::RetainUids => Opt::RetainUids,
            OptionName::RetainDeviceIdentity => Opt::RetainDeviceIdentity,
            OptionName::RetainInstitutionIdentity => Opt::RetainInstitutionIdentity,
            OptionName::RetainPatientCharacteristics => Opt::RetainPatientCharacteristics,
            OptionName::RetainLongitudinalFullDates => Opt::RetainLongitudinalFullDates,
            OptionName::RetainLongitudinalModifiedDates => Opt::RetainLongitudinalModifiedDates,
            OptionName::CleanDescriptors => Opt::CleanDescriptors,
            OptionName::CleanStructuredContent => Opt::CleanStructuredContent,
            OptionName::RetainSafePrivate => {
                return Err("retain_safe_private is not supported: there is no list of safe private attributes here, so every private attribute is removed".into());
            }
            OptionName::CleanGraphics => {
                return Err("clean_graphics is not supported: graphics (overlays, curves) are removed by the basic profile".into());
            }
            OptionName::CleanPixelData | OptionName::CleanRecognizableVisualFeatures => {
                return Err("clean_pixel_data / clean_recognizable_visual_features are not supported: objects with burned-in annotation are excluded instead".into());
            }
        })
    }
}

#[typetag::deserialize(name = "deidentify_dicom")]
impl StepConfig for DeidentifyDicomConfig {
    fn type_name(&self) -> &'static str {
        "deidentify_dicom"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        let opts = self
            .options
            .iter()
            .map(|o| o.resolve())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("options: {e}"))?;
        let d = Deidentifier::new(&self.project, self.secret.as_bytes(), opts)
            .map_err(|e| format!("deidentify_dicom: {e}"))?;
        if self.output.as_os_str().is_empty() {
            return Err("output: empty path".into());
        }
        Ok(Arc::new(DeidentifyDicom {
            d,
            output: self.output.clone(),
            store: ctx.extensions.get::<Store>(),
        }))
    }
}

struct DeidentifyDicom {
    d: Deidentifier,
    output: PathBuf,
    store: Option<Arc<Store>>,
}

impl Step for DeidentifyDicom {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let id = work.id.to_string();
            let fail =
                |m: String| StepError::permanent(format!("message {id}: deidentify_dicom: {m}"));
            let body = work.json()?.clone();
            let store = self
                .store
                .as_ref()
                .ok_or_else(|| StepError::new("deidentify_dicom: the store is not available"))?;
            let s = |p: &str| body.pointer(p).and_then(|v| v.as_str()).map(str::to_owned);
            let (study, series, sop) = match s("/event").as_deref() {
                Some("instance") => (
                    s("/instance/study_uid"),
                    s("/instance/series_uid"),
                    s("/instance/sop_instance_uid"),
                ),
                Some("study_complete") => (s("/study/study_uid"), None, None),
                other => {
                    return Err(fail(format!(
                        "reads the dicom source's instance and study_complete events, not {other:?}"
                    )));
                }
            };
            let study = study.ok_or_else(|| fail("no study UID in the message".into()))?;
            let mut instances = store
                .dicom_instances(&study, series.as_deref())
                .await
                .map_err(|e| StepError::new(format!("deidentify_dicom: the study index: {e}")))?;
            if let Some(sop) = &sop {
                instances.retain(|i| &i.sop_instance_uid == sop);
            }
            if instances.is_empty() {
                return Err(fail(format!(
                    "study {study}: no such instance in the index"
                )));
            }
            let d = self.d.clone();
            let output = self.output.clone();
            let paths: Vec<PathBuf> = instances.iter().map(|i| PathBuf::from(&i.path)).collect();
            let done = tokio::task::spawn_blocking(move || {
                let mut written = Vec::new();
                let mut excluded = Vec::new();
                for p in paths {
                    match one(&d, &p, &output) {
                        Ok(v) => written.push(v),
                        Err(Exclude::Policy(reason)) => excluded.push(reason),
                        Err(Exclude::Io(e)) => return Err(e),
                    }
                }
                Ok((written, excluded))
            })
            .await
            .map_err(|e| StepError::new(format!("deidentify_dicom: {e}")))?
            .map_err(|e| StepError::new(format!("deidentify_dicom: {e}")))?;
            let (written, excluded) = done;
            if written.is_empty() {
                return Err(fail(format!("nothing exported: {}", excluded.join("; "))));
            }
            let method: Vec<&str> = std::iter::once(None)
                .chain(self.d.options().iter().copied().map(Some))
                .map(|o| super::method_code(o).0)
                .collect();
            let new_study = written
                .first()
                .and_then(|v: &serde_json::Value| v.get("study_uid").cloned())
                .unwrap_or_default();
            work.set_json(serde_json::json!({
                "event": "deidentified",
                "project": self.d.project,
                "study_uid": new_study,
                "instances": written,
                "excluded": excluded,
                "method": method,
            }));
            work.headers
                .insert("dicom-deidentified".into(), "yes".into());
            // The originals' identifying headers do not travel with the copy.
            for h in [
                "dicom-study-uid",
                "dicom-sop-instance-uid",
                "dicom-calling-ae",
            ] {
                work.headers.remove(h);
            }
            Ok(Flow::Continue)
        })
    }
}

enum Exclude {
    Policy(String),
    Io(String),
}

/// De-identifies one stored file into `output` (blocking).
fn one(
    d: &Deidentifier,
    path: &std::path::Path,
    output: &std::path::Path,
) -> Result<serde_json::Value, Exclude> {
    let obj = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| Exclude::Io(format!("{}: cannot be read: {e}", path.display())))?;
    let out = d.apply_file(obj).map_err(Exclude::Policy)?;
    let uid = |t| {
        out.element(t)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .unwrap_or_default()
    };
    let study = uid(dicom_core::Tag(0x0020, 0x000D));
    let series = uid(dicom_core::Tag(0x0020, 0x000E));
    let sop = uid(dicom_core::Tag(0x0008, 0x0018));
    for u in [&study, &series, &sop] {
        if !crate::uids::is_valid(u) {
            return Err(Exclude::Policy(format!(
                "the object has no valid UID ({u:?})"
            )));
        }
    }
    let dir = output.join(&study).join(&series);
    std::fs::create_dir_all(&dir).map_err(|e| Exclude::Io(format!("{}: {e}", dir.display())))?;
    let to = dir.join(format!("{sop}.dcm"));
    let tmp = dir.join(format!(".{sop}.part"));
    out.write_to_file(&tmp)
        .map_err(|e| Exclude::Io(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &to).map_err(|e| Exclude::Io(format!("{}: {e}", to.display())))?;
    Ok(serde_json::json!({
        "study_uid": study,
        "series_uid": series,
        "sop_instance_uid": sop,
        "path": to.display().to_string(),
    }))
}
