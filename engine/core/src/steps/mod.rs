//! Steps: what a pipeline does to a message between its source and its sinks.
//!
//! A step is one file in this folder: a config struct (deserialized from the pipeline YAML) that
//! implements [`StepConfig`], registered by its `#[typetag::deserialize(name = "…")]` line, and
//! the step itself implementing [`Step`]. Steps in other crates register the same way.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::runner::BuildContext;
use crate::work::{Flow, StepError, Work};

pub mod consultation_create;
pub mod device_reading;
mod filter;
mod log;
mod map;
pub mod match_experts;
pub mod match_patient;
mod route;
mod set;
pub mod settle;

/// The YAML side of a step: `- <type>: {…}` in a pipeline's `steps:` list.
#[typetag::deserialize]
pub trait StepConfig: std::fmt::Debug + Send + Sync {
    /// The step's type as written in YAML (the typetag name), for logs and metrics.
    fn type_name(&self) -> &'static str;

    /// Builds the step. Must not do I/O: `huizhen validate` calls it too.
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String>;

    /// Pipelines this step hands messages to, checked by `validate`.
    fn routes_to(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A built step.
pub trait Step: Send + Sync {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>>;
}

/// Sets a dotted path (`a.b.c`) in a JSON object, creating objects on the way.
pub(crate) fn set_path(
    root: &mut serde_json::Value,
    path: &str,
    value: serde_json::Value,
) -> Result<(), String> {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(format!("empty segment in path {path:?}"));
        }
        if !cur.is_object() {
            if cur.is_null() {
                *cur = serde_json::Value::Object(Default::default());
            } else {
                return Err(format!(
                    "cannot set {path:?}: {:?} is not an object",
                    parts[..i].join(".")
                ));
            }
        }
        let obj = cur.as_object_mut().expect("checked above");
        if i + 1 == parts.len() {
            obj.insert((*part).to_owned(), value);
            return Ok(());
        }
        cur = obj
            .entry((*part).to_owned())
            .or_insert(serde_json::Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_path_creates_and_refuses() {
        let mut v = json!({"a": {"b": 1}, "s": "x"});
        set_path(&mut v, "a.c.d", json!(2)).unwrap();
        assert_eq!(v, json!({"a": {"b": 1, "c": {"d": 2}}, "s": "x"}));
        let err = set_path(&mut v, "s.t", json!(1)).unwrap_err();
        assert!(err.contains("\"s\" is not an object"), "{err}");
        assert!(set_path(&mut v, "a..b", json!(1)).is_err());
    }
}
