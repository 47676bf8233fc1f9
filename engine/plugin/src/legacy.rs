//! The 0.1.0 forms of the worlds that changed in `huizhen:plugin@0.1.1`, so that components
//! built for 0.1.0 keep working unchanged.
//!
//! | world | 0.1.0 | 0.1.1 | how a 0.1.0 component is told apart and called |
//! |---|---|---|---|
//! | `scorer` | `score` | `score` + `score-many` | no `score-many` export: `score` once per candidate, in one instance |
//! | `match-weights` | `weights { fields, match-threshold, non-match-threshold }` | `weights { fields, auto-link-threshold, probable-threshold, possible-threshold }` | the record returned by `weights` has no `probable-threshold` field: read as [`WeightsV0`] and [`WeightsV0::upgrade`]d |
//!
//! The `host` and `types` interfaces did not change; a 0.1.0 component's `host@0.1.0` import
//! is satisfied by the engine's `host@0.1.1` (wasmtime links semver-compatible names).

use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, ComponentType, Instance, InstancePre, Lift, Lower};
use wasmtime::{Engine, Store};

use crate::CallState;
use crate::bindings::match_weights::Weights;
use crate::bindings::scorer::{Feature, Score};

/// The 0.1.0 `weights` record of `match-weights`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
pub struct WeightsV0 {
    /// Per field: agreement and disagreement weights.
    pub fields: Vec<(String, (f64, f64))>,
    /// At or above: the same patient.
    #[component(name = "match-threshold")]
    pub match_threshold: f64,
    /// Below: different patients; in between: a person reviews.
    #[component(name = "non-match-threshold")]
    pub non_match_threshold: f64,
}

impl WeightsV0 {
    /// The 0.1.1 form. 0.1.0 had two thresholds around a review band: "match" at or above the
    /// upper one, "non-match" below the lower one. The four grades read them as: the upper
    /// threshold is `probable` (a person confirms: a probabilistic score never auto-links by
    /// default, STANDARDS MATCH-05, so a 0.1.0 "match" does not become `certain`), the lower
    /// one is `possible`, and there is no auto-link threshold.
    pub fn upgrade(self) -> Weights {
        Weights {
            fields: self.fields,
            auto_link_threshold: None,
            probable_threshold: self.match_threshold,
            possible_threshold: self.non_match_threshold,
        }
    }
}

/// A scorer component without `score-many`: built for 0.1.0.
pub fn is_v0_scorer(component: &Component) -> bool {
    component.get_export_index(None, "score-many").is_none()
}

/// A `match-weights` component whose `weights` record lacks `probable-threshold`: 0.1.0.
pub fn is_v0_weights(component: &Component, engine: &Engine) -> bool {
    let ty = component.component_type();
    let Some(ComponentItem::ComponentFunc(f)) = ty.get_export(engine, "weights").map(|e| e.ty)
    else {
        return false;
    };
    let Some(Type::Record(r)) = f.results().next() else {
        return false;
    };
    !r.fields().any(|f| f.name == "probable-threshold")
}

/// Checks, before any call, that a 0.1.0 scorer exports `score` of the right type.
pub fn check_v0_scorer(pre: &InstancePre<CallState>) -> wasmtime::Result<()> {
    let ty = pre.component().component_type();
    match ty.get_export(pre.engine(), "score").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(_)) => Ok(()),
        _ => Err(wasmtime::Error::msg(
            "no `score` function exported (nor `score-many`)",
        )),
    }
}

/// Checks that a 0.1.0 `match-weights` component exports `weights`.
pub fn check_v0_weights(pre: &InstancePre<CallState>) -> wasmtime::Result<()> {
    let ty = pre.component().component_type();
    match ty.get_export(pre.engine(), "weights").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(_)) => Ok(()),
        _ => Err(wasmtime::Error::msg("no `weights` function exported")),
    }
}

/// Calls a 0.1.0 scorer's `score` in a live instance.
pub fn call_v0_score(
    instance: &Instance,
    store: &mut Store<CallState>,
    case: &[Feature],
    expert: &[Feature],
) -> wasmtime::Result<Result<Score, String>> {
    let f = instance.get_typed_func::<(&[Feature], &[Feature]), (Result<Score, String>,)>(
        &mut *store,
        "score",
    )?;
    let (r,) = f.call(&mut *store, (case, expert))?;
    Ok(r)
}

/// Instantiates a 0.1.0 `match-weights` component and calls its `weights`.
pub fn call_v0_weights(
    pre: &InstancePre<CallState>,
    store: &mut Store<CallState>,
) -> wasmtime::Result<WeightsV0> {
    let instance = pre.instantiate(&mut *store)?;
    let f = instance.get_typed_func::<(), (WeightsV0,)>(&mut *store, "weights")?;
    let (w,) = f.call(&mut *store, ())?;
    Ok(w)
}
