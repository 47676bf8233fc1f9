//! `dicom`: a DICOM SCP (storage and query) as a pipeline source.
//!
//! ```yaml
//! source:
//!   dicom:
//!     listen: 0.0.0.0:11112
//!     ae_title: HUIZHEN             # the called AE title modalities send to
//!     accept:                       # who may associate, per facility
//!       - facility: county-1        # their studies belong to it (default: the pipeline's)
//!         calling: [CT01, MR01]     # calling AE titles; "*" = any (demo only)
//!         charset: GB18030          # when an object has no (0008,0005) (flagged, DCM-04)
//!         find: [county-1]          # facilities whose studies C-FIND answers ("*" = all)
//!     allow: [10.12.0.0/16]         # peer addresses (the shared listener plumbing)
//!     max_associations: 32
//!     max_pdu_bytes: 262144
//!     storage: data/dicom           # the object store
//!     study_complete_after: 60s     # no new instance for this long → study complete
//! ```
//!
//! Services: Verification (C-ECHO), every standard storage SOP class (C-STORE, transfer
//! syntaxes as received: DCM-02), and C-FIND, C-GET and C-MOVE over the study index (Patient
//! Root and Study Root; C-MOVE only to the registered `remote_aes`, see [`crate::qr`]). Each stored instance is written to the object store, filed in the study index and
//! journaled as a `json` message (its attributes, not its pixels: `event: instance`) before the
//! C-STORE-RSP says success; a study with no new instance for `study_complete_after` becomes a
//! `study_complete` message on the same pipeline. The listener (allow-list, TLS, association
//! permits, idle and PDU deadlines) is `huizhen_core::listener`, shared with MLLP; over
//! `max_associations` an association is rejected "local limit exceeded" (transient).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::listener::{Accepted, ListenerSpec, TcpServer, WhenFull};
use huizhen_core::runner::BuildContext;
use huizhen_core::sources::{Running, Source, SourceConfig, SourceContext};
use huizhen_core::store::Store;
use huizhen_core::workflow::Workflow;
use huizhen_core::workflow::studies::Prefetchers;
use serde::Deserialize;

use crate::charset::Charset;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomSourceConfig {
    /// Address to listen on, e.g. `127.0.0.1:11112` (104 is DICOM's registered port).
    pub listen: String,
    /// The AE title this SCP answers to (the called AE title).
    #[serde(default = "default_ae_title")]
    pub ae_title: String,
    /// Who may associate: calling AE titles per facility (at least one entry; `"*"` in
    /// `calling` admits any calling AE title).
    pub accept: Vec<AcceptConfig>,
    /// Peers allowed to connect: IP addresses or CIDR blocks. Empty allows every peer (warned
    /// about when `listen` is not a loopback address).
    #[serde(default)]
    pub allow: Vec<String>,
    /// TLS (1.2+, the DICOM TLS profile's port is usually 2762).
    #[serde(default)]
    pub tls: Option<huizhen_core::tls::TlsConfig>,
    /// Associations served at once; one more is rejected (transient, local limit exceeded).
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// The largest PDU this SCP receives (announced in the association), 4 KiB to 16 MiB.
    #[serde(default = "default_max_pdu")]
    pub max_pdu_bytes: u32,
    /// An association idle this long between PDUs is aborted.
    #[serde(default = "default_idle", with = "duration")]
    pub idle_timeout: Duration,
    /// A PDU must be complete this long after its first byte (not reset by each byte).
    #[serde(default = "default_pdu_timeout", with = "duration")]
    pub pdu_timeout: Duration,
    /// The object store's folder.
    #[serde(default = "default_storage")]
    pub storage: PathBuf,
    /// A study no instance came for this long is complete (an event on the pipeline).
    #[serde(default = "default_complete", with = "duration")]
    pub study_complete_after: Duration,
    /// Store abstract syntaxes that are not standard storage SOP classes too (private
    /// classes). Default: only the standard's storage SOP classes.
    #[serde(default)]
    pub any_sop_class: bool,
    /// C-FIND answers at most this many matches; more refuse the query (A700) asking to narrow
    /// it.
    #[serde(default = "default_max_find")]
    pub max_find_results: usize,
    /// Known remote AEs: C-MOVE destinations (see [`crate::qr::remote`]).
    #[serde(default)]
    pub remote_aes: Vec<crate::qr::remote::RemoteAe>,
}

/// One `accept` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    /// Calling AE titles; `"*"` admits any.
    pub calling: Vec<String>,
    /// Called AE titles this entry is for (default: `ae_title`).
    #[serde(default)]
    pub called: Vec<String>,
    /// The facility their studies belong to (default: the pipeline's).
    #[serde(default)]
    pub facility: Option<String>,
    /// The character set of objects without Specific Character Set (0008,0005); they are
    /// flagged (`charset-assumed`). A defined term: `GB18030` (default), `GBK`, `ISO_IR 192`,
    /// `ISO_IR 100`, `ISO_IR 6` (ASCII only: other bytes are replaced and flagged).
    #[serde(default = "default_charset")]
    pub charset: String,
    /// Facilities whose studies C-FIND answers for these callers (default: `facility`); `"*"`
    /// for all.
    #[serde(default)]
    pub find: Option<Vec<String>>,
    /// The registered AEs (`remote_aes`) these callers may C-MOVE to (default: any of them).
    #[serde(default)]
    pub move_to: Option<Vec<String>>,
}

fn default_ae_title() -> String {
    "HUIZHEN".into()
}
fn default_max_associations() -> usize {
    32
}
fn default_max_pdu() -> u32 {
    256 * 1024
}
fn default_idle() -> Duration {
    Duration::from_secs(120)
}
fn default_pdu_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_storage() -> PathBuf {
    PathBuf::from("data/dicom")
}
fn default_complete() -> Duration {
    Duration::from_secs(60)
}
fn default_max_find() -> usize {
    1000
}
fn default_charset() -> String {
    "GB18030".into()
}

/// An AE title: 1 to 16 characters of the default repertoire, no backslash or control
/// characters (PS3.5 6.2 AE).
pub fn check_ae_title(what: &str, t: &str) -> Result<(), String> {
    let ok = !t.trim().is_empty()
        && t.len() <= 16
        && t.chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: {t:?} is not an AE title (1 to 16 ASCII characters, no backslash)"
        ))
    }
}

/// A checked `accept` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    pub calling: Vec<String>,
    pub called: Vec<String>,
    pub facility: String,
    pub charset: Charset,
    pub find: Option<Vec<String>>,
    pub move_to: Option<Vec<String>>,
}

impl Rule {
    fn admits(&self, calling: &str, called: &str) -> bool {
        self.called.iter().any(|c| c == called)
            && self.calling.iter().any(|c| c == "*" || c == calling)
    }
}

/// The rules of a source: the first entry admitting (calling, called) applies.
#[derive(Debug, Clone)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    pub fn find(&self, calling: &str, called: &str) -> Option<&Rule> {
        self.0.iter().find(|r| r.admits(calling, called))
    }

    /// Every called AE title of the source.
    pub fn called(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.0 {
            for c in &r.called {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }
}

impl DicomSourceConfig {
    /// The checked registry of remote AEs.
    pub fn registry(&self) -> Result<crate::qr::remote::Registry, String> {
        crate::qr::remote::Registry::new(self.remote_aes.clone())
    }

    fn listener(&self) -> ListenerSpec<'_> {
        ListenerSpec {
            kind: "dicom",
            listen: &self.listen,
            allow: &self.allow,
            tls: self.tls.as_ref(),
            max_connections: self.max_associations,
            timeouts: [
                ("pdu_timeout", self.pdu_timeout),
                ("idle_timeout", self.idle_timeout),
            ],
        }
    }

    /// Checks everything but the listener; the rules with defaults filled in.
    pub fn rules(&self, pipeline_facility: &str) -> Result<Rules, String> {
        check_ae_title("ae_title", &self.ae_title)?;
        if self.accept.is_empty() {
            return Err(
                "accept: name the calling AE titles that may associate, per facility (calling: [\"*\"] admits any)"
                    .into(),
            );
        }
        let mut rules = Vec::new();
        for (i, a) in self.accept.iter().enumerate() {
            if a.calling.is_empty() {
                return Err(format!("accept[{i}].calling: empty (\"*\" admits any)"));
            }
            for c in &a.calling {
                if c != "*" {
                    check_ae_title(&format!("accept[{i}].calling"), c)?;
                }
            }
            for c in &a.called {
                check_ae_title(&format!("accept[{i}].called"), c)?;
            }
            let charset = Charset::default_named(a.charset.trim())
                .map_err(|e| format!("accept[{i}].charset: {e}"))?;
            let facility = a
                .facility
                .clone()
                .unwrap_or_else(|| pipeline_facility.to_owned());
            let find = match &a.find {
                None => Some(vec![facility.clone()]),
                Some(f) if f.iter().any(|x| x == "*") => None,
                Some(f) => Some(f.clone()),
            };
            rules.push(Rule {
                calling: a.calling.iter().map(|c| c.trim().to_owned()).collect(),
                called: if a.called.is_empty() {
                    vec![self.ae_title.trim().to_owned()]
                } else {
                    a.called.iter().map(|c| c.trim().to_owned()).collect()
                },
                facility,
                charset,
                find,
                move_to: a.move_to.clone(),
            });
        }
        let remote = self.registry()?;
        for (i, a) in self.accept.iter().enumerate() {
            for t in a.move_to.iter().flatten() {
                if remote.by_title(t).is_none() {
                    return Err(format!(
                        "accept[{i}].move_to: {t:?} is not in remote_aes (C-MOVE goes only to registered AEs)"
                    ));
                }
            }
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.max_pdu_bytes) {
            return Err(format!(
                "max_pdu_bytes: {} is outside 4096 to 16777216",
                self.max_pdu_bytes
            ));
        }
        if self.study_complete_after < Duration::from_secs(1) {
            return Err("study_complete_after must be at least 1s".into());
        }
        if self.max_find_results == 0 {
            return Err("max_find_results must be at least 1".into());
        }
        Ok(Rules(rules))
    }
}

#[typetag::deserialize(name = "dicom")]
impl SourceConfig for DicomSourceConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        let server = self.listener().build()?;
        let rules = self.rules(&ctx.facility)?;
        // STOW-RS stores into this source's object store, index and pipeline (src/web/).
        let remote = Arc::new(self.registry()?);
        crate::web::register(
            &ctx.extensions,
            &ctx.pipeline,
            &self.storage,
            &rules,
            &self.ae_title,
            remote.clone(),
        );
        // The priors of the facilities whose PACS is marked `prefetch` are pulled here.
        let prefetchers = ctx
            .extensions
            .get_or_try_init::<Prefetchers, std::convert::Infallible>(|| Ok(Prefetchers::default()))
            .unwrap_or_else(|e| match e {});
        for ae in remote.0.iter().filter(|a| a.prefetch) {
            prefetchers.register(&ae.facility, &ctx.pipeline);
        }
        Ok(Box::new(DicomSource {
            config: Arc::new(self.clone()),
            rules: Arc::new(rules),
            remote,
            server,
            store: ctx.extensions.get::<Store>(),
            workflow: ctx.extensions.get::<Workflow>(),
        }))
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = self.listener().warnings();
        let any = self
            .accept
            .iter()
            .any(|a| a.calling.iter().any(|c| c == "*"));
        let exposed = self
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if any && exposed {
            w.push(format!(
                "dicom: listens on {} and accepts any calling AE title (\"*\"): name the modalities and PACS in accept[].calling",
                self.listen
            ));
        }
        w
    }
}

struct DicomSource {
    config: Arc<DicomSourceConfig>,
    rules: Arc<Rules>,
    remote: Arc<crate::qr::remote::Registry>,
    server: TcpServer,
    /// Attaches completed studies to their consultations (none outside an engine).
    workflow: Option<Arc<Workflow>>,
    store: Option<Arc<Store>>,
}

impl Source for DicomSource {
    fn describe(&self) -> String {
        format!("{} AE {}", self.server.describe(), self.config.ae_title)
    }

    fn listens_on(&self) -> Option<String> {
        Some(self.server.listen().to_owned())
    }

    /// Prepares the storage and binds the port first: either failing stops the engine's start
    /// (or a reload) with the reason.
    fn start(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<Running, String>> {
        Box::pin(async move {
            let store = self
                .store
                .clone()
                .ok_or("the dicom source needs the engine's store (it indexes studies)")?;
            let sync = store.durability() == huizhen_core::store::Durability::PowerLoss;
            let objects = crate::objects::Objects::new(&self.config.storage, sync);
            // Partial files idle longer than a PDU may take were left by a stopped process.
            let stale = (self.config.idle_timeout + self.config.pdu_timeout) * 2;
            objects.prepare(stale).await.map_err(|e| {
                format!(
                    "storage: cannot prepare {}: {e}",
                    self.config.storage.display()
                )
            })?;
            let scp = Arc::new(crate::scp::Scp {
                config: self.config.clone(),
                rules: self.rules.clone(),
                pipeline: ctx.pipeline.clone(),
                store: store.clone(),
                objects,
                remote: self.remote.clone(),
            });
            let bound = self.server.clone().bind().await?;
            let limits = crate::assoc::Limits {
                idle: self.config.idle_timeout,
                pdu: self.config.pdu_timeout,
                max_pdu: self.config.max_pdu_bytes,
            };
            let running: Running = Box::pin(async move {
                let sweep = tokio::spawn(crate::complete::sweep(
                    store,
                    self.workflow.clone(),
                    ctx.pipeline.clone(),
                    self.config.study_complete_after,
                    ctx.shutdown.clone(),
                ));
                let result = bound
                    .run(
                        ctx.pipeline.name(),
                        ctx.shutdown,
                        WhenFull::Refuse(move |a: Accepted| crate::scp::refuse_busy(a, limits)),
                        move |a: Accepted, shutdown| {
                            let scp = scp.clone();
                            let open = scp.pipeline.connection(&scp.config.listen);
                            async move {
                                let _open = open;
                                crate::scp::serve(scp, a, limits, shutdown).await
                            }
                        },
                    )
                    .await;
                sweep.abort();
                result
            });
            Ok(running)
        })
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Running {
        Box::pin(async move { self.start(ctx).await?.await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> DicomSourceConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn rules_fill_defaults_and_name_bad_entries() {
        let c = config(
            "listen: 127.0.0.1:11112\naccept:\n  - calling: [CT01]\n  - calling: ['*']\n    facility: other\n    called: [ARCHIVE]\n    find: ['*']\n",
        );
        let r = c.rules("county-1").unwrap();
        assert_eq!(r.0[0].facility, "county-1");
        assert_eq!(r.0[0].called, ["HUIZHEN"]);
        assert_eq!(r.0[0].find, Some(vec!["county-1".to_owned()]));
        assert!(r.0[0].charset.assumed);
        assert_eq!(r.0[1].find, None);
        assert_eq!(r.find("CT01", "HUIZHEN").unwrap().facility, "county-1");
        assert!(r.find("MR01", "HUIZHEN").is_none());
        assert_eq!(r.find("MR01", "ARCHIVE").unwrap().facility, "other");
        assert_eq!(r.called(), ["HUIZHEN", "ARCHIVE"]);

        let bad = |y: &str| {
            config(&format!("listen: 127.0.0.1:1\n{y}"))
                .rules("f")
                .unwrap_err()
        };
        assert!(bad("accept: []").starts_with("accept:"));
        assert!(bad("accept: [{calling: [THIS_TITLE_IS_TOO_LONG]}]").contains("accept[0].calling"));
        assert!(bad("accept: [{calling: [A], charset: KOI8}]").contains("accept[0].charset"));
        assert!(bad("ae_title: ''\naccept: [{calling: [A]}]").starts_with("ae_title"));
        assert!(bad("max_pdu_bytes: 10\naccept: [{calling: [A]}]").starts_with("max_pdu_bytes"));
    }

    #[test]
    fn an_exposed_listener_admitting_any_caller_is_warned_about() {
        let c = config("listen: 0.0.0.0:104\nallow: [10.0.0.0/8]\naccept: [{calling: ['*']}]\n");
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("any calling AE title"));
        let c = config("listen: 127.0.0.1:104\naccept: [{calling: ['*']}]\n");
        assert!(c.warnings().is_empty());
    }
}
