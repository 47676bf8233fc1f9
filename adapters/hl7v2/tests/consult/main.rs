//! HL7 for the consultation workflow, one binary: consultation orders in (`ORM^O01`,
//! `OML^O21` fixtures in `tests/fixtures/orders/` → `ConsultationOrder`), the signed opinion
//! out (`hl7_build`: `ORU^R01`, `MDM^T02` golden messages in `tests/golden/outbound_*.hl7`),
//! each checked against `hl7-parser` as an oracle, and the built `ORU` sent through the `mllp`
//! sink to an in-process receiver that answers with the crate's own ACK.
//!
//! `UPDATE_GOLDEN=1 cargo test -p huizhen-hl7 --test consult` rewrites the golden files.

mod charge;
mod mllp;
mod order;
mod outbound;
mod vitals;

use std::collections::BTreeMap;
use std::path::PathBuf;

use huizhen_core::message::{Message as Journaled, State};
use huizhen_core::runner::{BuildContext, Router};
use huizhen_core::steps::StepConfig;
use huizhen_core::work::{Flow, Work};
use huizhen_hl7::Message;

/// `tests/<dir>`.
pub fn test_dir(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir)
}

/// True when golden files are to be rewritten.
pub fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `got` with the golden file `name` (or rewrites it); the error says how to update.
pub fn golden(name: &str, got: &str) -> Result<(), String> {
    let path = test_dir("golden").join(name);
    if updating() {
        std::fs::write(&path, got).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let want = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    })?;
    if want == got {
        Ok(())
    } else {
        Err(format!(
            "{name} differs (UPDATE_GOLDEN=1 rewrites it); got:\n{got}"
        ))
    }
}

/// Parses text that must parse.
pub fn parse(text: &str) -> Message {
    match Message::parse(text) {
        Ok(m) => m,
        Err(e) => panic!("does not parse: {e}"),
    }
}

/// `get_str` for a path that must be valid.
pub fn get(msg: &Message, path: &str) -> Option<String> {
    match msg.get_str(path) {
        Ok(v) => v,
        Err(e) => panic!("bad path {path}: {e}"),
    }
}

/// A journaled message with this body, kind and headers.
pub fn journaled(body: Vec<u8>, kind: &str, headers: &[(&str, &str)]) -> Journaled {
    Journaled {
        id: "0190a3c4-0000-7000-8000-000000000001".into(),
        facility: "GXYCHZ".into(),
        pipeline: "opinion-out".into(),
        kind: kind.into(),
        body,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        source: "test".into(),
        // 2026-01-15T02:31:00Z = 10:31 in China.
        received_at: 1_768_444_260_000,
        trace_id: "t".into(),
        dedup_key: None,
        parent_id: None,
        state: State::Processing,
        attempts: 1,
        next_attempt_at: None,
        last_error: None,
        updated_at: 0,
    }
}

/// Builds a step from its YAML-shaped JSON config and runs it; a failure must be permanent.
pub fn run_step(config: serde_json::Value, work: &mut Work) -> Result<Flow, String> {
    let config: Box<dyn StepConfig> =
        serde_json::from_value(config).map_err(|e| format!("config: {e}"))?;
    let step = config.build(&BuildContext {
        pipeline: "opinion-out".into(),
        facility: "GXYCHZ".into(),
        router: Router::default(),
        extensions: Default::default(),
    })?;
    futures::executor::block_on(step.apply(work)).map_err(|e| {
        assert!(!e.retryable, "step errors are permanent: {}", e.message);
        e.message
    })
}
