//! Billing at run time (issue 19; STANDARDS CN-60 … CN-63): the `billing:` settings, the
//! [`Insurer`] port an insurance-platform adapter implements (`adapters/insurer`: NHSA-style
//! HTTP JSON), and the saga runner ([`Billing`]) that opens a settlement for a completed
//! consultation and drives the domain's saga through the insurer, persisting it before every
//! call. Rules are the domain's (`huizhen_domain::billing`), state is `store::billing`, the API
//! `http::billing`.
//!
//! ```yaml
//! billing:
//!   institution: H44010600001        # 定点医药机构编号 (12): msgid prefix, fixmedins_code
//!   institution_name: 某某人民医院
//!   schedules: [billing/fees.yaml]   # fee schedules, one per facility (relative to the root file)
//!   utc_offset_minutes: 480          # the institution's local time (msgid, inf_time)
//!   coverage:                        # the local estimate
//!     rate_percent: 80                 # the built-in policy: 80 %, at most 150 yuan a visit
//!     cap_per_visit: "150.00"
//!     deductible: "0.00"               # the plan's terms the estimate assumes: 起付线 per year
//!     annual_limit: "3000.00"          # 年度限额 (absent: none)
//!     plugin: coverage-basic           # a `coverage` plugin instead of the built-in policy
//!     config: { rate: "80", cap_fen: "15000" }   # the plugin's config values
//!   lease: 2m                        # a runner's hold on a saga (longer than a call)
//!   resume_interval: 30s             # how often sagas left unfinished are taken up again
//!   insurer:                         # the platform adapter; none: self-pay only
//!     nhsa: { url: "http://…/fsi/api", timeout: 10s, … }
//!   reconciliation: { schedule: "0 30 1 * * *", statements: billing/statements/ }
//!   invoices:                        # the finance e-invoice platform (CN-70); none: no invoices
//!     finance-einvoice: { url: "http://…/einvoice", agency_code: "450103", … }
//!   outbound_pipeline: his-charges   # settlement.settled / .cancelled (the DFT^P03 body)
//! ```

mod insurer;
mod invoice;
mod reconcile;
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use huizhen_domain::billing::{CoveragePolicy, FeeSchedule, Fen, Rate, SimplePolicy};
use serde::Deserialize;

pub use insurer::{Answer, Insurer, InsurerConfig, InsurerContext};
pub use invoice::{InvoicePlatform, InvoicePlatformConfig, InvoiceRequest, IssuedInvoice};
pub use reconcile::{Reconciliation, ReconciliationConfig};
pub use runner::{Billing, BillingError};

/// The `billing:` block of the root file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// 定点医药机构编号: 12 letters or digits (the msgid prefix, `fixmedins_code`).
    pub institution: String,
    /// 定点医药机构名称 (`fixmedins_name`).
    pub institution_name: String,
    /// Fee schedule files, one per facility (relative paths are relative to the root file).
    #[serde(default)]
    pub schedules: Vec<PathBuf>,
    /// The institution's local time offset in minutes (default +480, Beijing).
    #[serde(default = "default_offset")]
    pub utc_offset_minutes: i32,
    /// The local coverage estimate.
    #[serde(default)]
    pub coverage: CoverageConfig,
    /// How long a runner holds a saga (default 2 minutes; longer than the insurer's timeout).
    #[serde(default = "default_lease", with = "crate::config::duration")]
    pub lease: Duration,
    /// How often unfinished sagas are taken up again (default 30 s).
    #[serde(default = "default_resume", with = "crate::config::duration")]
    pub resume_interval: Duration,
    /// The insurance platform adapter; none: only self-pay settlements.
    #[serde(default)]
    pub insurer: Option<Box<dyn InsurerConfig>>,
    /// The daily reconciliation against the platform's statement files.
    #[serde(default)]
    pub reconciliation: Option<ReconciliationConfig>,
    /// The finance platform that issues e-invoices (CN-70); none: no invoices.
    #[serde(default)]
    pub invoices: Option<Box<dyn InvoicePlatformConfig>>,
    /// The pipeline a settled (or cancelled) settlement's charge is announced to
    /// (`settlement.settled`, `settlement.cancelled`: the body `hl7_build` makes a `DFT^P03`
    /// of); none: kept in the outbox only.
    #[serde(default)]
    pub outbound_pipeline: Option<String>,
}

fn default_offset() -> i32 {
    480
}

fn default_lease() -> Duration {
    Duration::from_secs(120)
}

fn default_resume() -> Duration {
    Duration::from_secs(30)
}

/// `billing.coverage`: the built-in policy's terms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageConfig {
    /// Percent covered (default 80).
    #[serde(default = "default_rate")]
    pub rate_percent: u32,
    /// Most covered per visit, yuan as text (default `"150.00"`).
    #[serde(default = "default_cap")]
    pub cap_per_visit: String,
    /// The deductible (起付线) per insurance year the estimate assumes, yuan as text (default
    /// none). The patient's year-to-date usage (the store's books) says how much is left.
    #[serde(default)]
    pub deductible: Option<String>,
    /// The most insurance pays per insurance year (年度限额), yuan as text; none: no limit.
    #[serde(default)]
    pub annual_limit: Option<String>,
    /// A `coverage` plugin (by name, from the plugin folder) that computes the estimate instead
    /// of the built-in policy; its answers are checked like the built-in one's.
    #[serde(default)]
    pub plugin: Option<String>,
    /// The plugin's `config:` values (`host.config`), e.g. `{ rate: "80", cap_fen: "15000" }`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn default_rate() -> u32 {
    80
}

fn default_cap() -> String {
    "150.00".into()
}

impl Default for CoverageConfig {
    fn default() -> Self {
        CoverageConfig {
            rate_percent: default_rate(),
            cap_per_visit: default_cap(),
            deductible: None,
            annual_limit: None,
            plugin: None,
            config: BTreeMap::new(),
        }
    }
}

/// The settings, checked and loaded.
#[derive(Clone)]
pub struct BillingSettings {
    /// 定点医药机构编号.
    pub institution: String,
    /// Its name.
    pub institution_name: String,
    /// Its local time.
    pub offset: FixedOffset,
    /// The local estimate's policy: the built-in [`SimplePolicy`], or a `coverage` plugin
    /// (`billing.coverage.plugin`, set by the engine once its plugin host has started).
    pub policy: Arc<dyn CoveragePolicy + Send + Sync>,
    /// The plan's terms the estimate assumes (deductible, annual limit).
    pub terms: CoverageTerms,
    /// Fee schedules by facility.
    pub schedules: BTreeMap<String, FeeSchedule>,
    /// A runner's hold on a saga.
    pub lease: Duration,
    /// How often unfinished sagas are taken up again.
    pub resume_interval: Duration,
    /// The platform adapter.
    pub insurer: Option<Arc<dyn Insurer>>,
    /// The daily reconciliation.
    pub reconciliation: Option<Reconciliation>,
    /// The e-invoice platform.
    pub invoices: Option<Arc<dyn InvoicePlatform>>,
    /// Where charges are announced.
    pub outbound_pipeline: Option<String>,
}

/// The plan's terms the local estimate assumes (`billing.coverage.deductible`, `.annual_limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoverageTerms {
    /// The deductible per insurance year.
    pub deductible: Fen,
    /// The annual limit; none: no limit.
    pub annual_limit: Option<Fen>,
}

impl std::fmt::Debug for BillingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingSettings")
            .field("institution", &self.institution)
            .field("policy", &self.policy.name())
            .field("schedules", &self.schedules.keys().collect::<Vec<_>>())
            .field(
                "insurer",
                &self.insurer.as_ref().map(|i| i.name().to_owned()),
            )
            .finish()
    }
}

impl BillingConfig {
    /// Checks the settings and reads the schedules (relative to `base`); every problem at once,
    /// each named by its path or as `file:line:column`.
    pub fn load(&self, base: Option<&Path>) -> Result<BillingSettings, Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = huizhen_domain::billing::msgid::check_institution(&self.institution) {
            problems.push(format!("billing.institution: {e}"));
        }
        if self.institution_name.trim().is_empty() {
            problems.push("billing.institution_name: is blank".into());
        }
        let offset = FixedOffset::east_opt(self.utc_offset_minutes.saturating_mul(60));
        if offset.is_none() {
            problems.push(format!(
                "billing.utc_offset_minutes: {} is not an offset",
                self.utc_offset_minutes
            ));
        }
        let rate = Rate::percent(self.coverage.rate_percent);
        if rate.is_err() {
            problems.push(format!(
                "billing.coverage.rate_percent: {} is over 100",
                self.coverage.rate_percent
            ));
        }
        let cap = self.coverage.cap_per_visit.parse::<Fen>();
        if let Err(e) = &cap {
            problems.push(format!("billing.coverage.cap_per_visit: {e}"));
        }
        let mut yuan = |key: &str, v: &Option<String>| -> Option<Fen> {
            let v = v.as_deref()?;
            match v.parse::<Fen>() {
                Ok(f) if f.0 >= 0 => Some(f),
                Ok(f) => {
                    problems.push(format!("billing.coverage.{key}: {f} is negative"));
                    None
                }
                Err(e) => {
                    problems.push(format!("billing.coverage.{key}: {e}"));
                    None
                }
            }
        };
        let terms = CoverageTerms {
            deductible: yuan("deductible", &self.coverage.deductible).unwrap_or(Fen::ZERO),
            annual_limit: yuan("annual_limit", &self.coverage.annual_limit),
        };
        if let Some(p) = &self.coverage.plugin
            && p.trim().is_empty()
        {
            problems.push("billing.coverage.plugin: is blank".into());
        }
        let mut schedules = BTreeMap::new();
        for (i, file) in self.schedules.iter().enumerate() {
            let path = match base {
                Some(b) if file.is_relative() => b.join(file),
                _ => file.clone(),
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!(
                        "billing.schedules[{i}]: cannot read {}: {e}",
                        path.display()
                    ));
                    continue;
                }
            };
            match FeeSchedule::parse(&path.display().to_string(), &text) {
                Ok(s) => {
                    if schedules.contains_key(&s.facility) {
                        problems.push(format!(
                            "billing.schedules[{i}]: facility {} has a schedule already",
                            s.facility
                        ));
                    }
                    schedules.insert(s.facility.clone(), s);
                }
                Err(e) => problems.extend(e.0.iter().map(ToString::to_string)),
            }
        }
        let offset = offset.unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"));
        let ctx = InsurerContext {
            institution: self.institution.clone(),
            institution_name: self.institution_name.clone(),
            offset,
            base_dir: base.map(Path::to_path_buf),
        };
        let invoices = match &self.invoices {
            Some(cfg) => match cfg.build(&ctx) {
                Ok(i) => Some(i),
                Err(e) => {
                    problems.push(format!("billing.invoices: {e}"));
                    None
                }
            },
            None => None,
        };
        let insurer = match &self.insurer {
            Some(cfg) => match cfg.build(&ctx) {
                Ok(i) => Some(i),
                Err(e) => {
                    problems.push(format!("billing.insurer: {e}"));
                    None
                }
            },
            None => None,
        };
        let reconciliation = match &self.reconciliation {
            Some(r) => match crate::sources::parse_schedule(&r.schedule) {
                Ok(schedule) => Some(Reconciliation {
                    schedule,
                    statements: match base {
                        Some(b) if r.statements.is_relative() => b.join(&r.statements),
                        _ => r.statements.clone(),
                    },
                }),
                Err(e) => {
                    problems.push(format!("billing.reconciliation.schedule: {e}"));
                    None
                }
            },
            None => None,
        };
        let outbound_pipeline = match self.outbound_pipeline.as_deref().map(str::trim) {
            Some("") => {
                problems.push("billing.outbound_pipeline: is blank".into());
                None
            }
            other => other.map(str::to_owned),
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(BillingSettings {
            institution: self.institution.clone(),
            institution_name: self.institution_name.clone(),
            offset,
            policy: Arc::new(SimplePolicy {
                rate: rate.unwrap_or(Rate::NONE),
                cap_per_visit: cap.unwrap_or(Fen::ZERO),
            }),
            terms,
            schedules,
            lease: self.lease,
            resume_interval: self.resume_interval,
            insurer,
            reconciliation,
            invoices,
            outbound_pipeline,
        })
    }

    /// The `coverage` plugin `billing.coverage.plugin` names, through the engine's plugin host,
    /// in place of the built-in policy; nothing to do without one.
    pub fn resolve_coverage_plugin(
        &self,
        settings: &mut BillingSettings,
        extensions: &crate::extensions::Extensions,
    ) -> Result<(), String> {
        let Some(name) = self.coverage.plugin.as_deref().map(str::trim) else {
            return Ok(());
        };
        let host = extensions.domain_plugins().ok_or_else(|| {
            format!("billing.coverage.plugin: {name:?} needs the plugin host, which this engine was built without")
        })?;
        let budget = crate::extensions::PluginBudget {
            fuel: None,
            deadline: Duration::from_millis(200),
        };
        settings.policy = host
            .coverage(name, budget, self.coverage.config.clone())
            .map_err(|e| format!("billing.coverage.plugin: {e}"))?;
        Ok(())
    }

    /// `billing.outbound_pipeline` when it names none of `names`, with the closest name.
    pub fn unknown_outbound_pipeline<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<String> {
        let p = self.outbound_pipeline.as_deref().map(str::trim)?;
        if p.is_empty() || names.clone().any(|n| n == p) {
            return None;
        }
        let hint = crate::config::did_you_mean(p, names)
            .map(|s| format!("; did you mean {s:?}?"))
            .unwrap_or_default();
        Some(format!(
            "billing.outbound_pipeline: no pipeline named {p:?}{hint}"
        ))
    }
}
