//! Write Huizhen plugins in Rust: the bindings of each world of `huizhen:plugin@0.1.2`
//! (`wit/plugin.wit`), one entry macro per world, the host calls, an HL7 v2 reader and a native
//! test harness.
//!
//! A plugin crate enables exactly one world feature and calls that world's macro once:
//!
//! ```ignore
//! use huizhen_sdk::scorer::{Contribution, Feature, Guest, Score};
//!
//! struct MyScorer;
//! impl Guest for MyScorer {
//!     fn score(case: Vec<Feature>, expert: Vec<Feature>) -> Result<Score, String> {
//!         let years = huizhen_sdk::scorer::number(&expert, "years").unwrap_or(0.0);
//!         Ok(Score { total: years, contributions: vec![Contribution { feature: "years".into(), points: years }] })
//!     }
//!     // Since contract 0.1.1: every candidate of a case in one call.
//!     fn score_many(case: Vec<Feature>, candidates: Vec<Vec<Feature>>) -> Result<Vec<Score>, String> {
//!         huizhen_sdk::scorer::score_each(&case, candidates, Self::score)
//!     }
//! }
//! huizhen_sdk::scorer_plugin!(MyScorer);
//! ```
//!
//! Built for `wasm32-wasip2` (`huizhen plugin build`), the macro exports the world and stamps
//! the SDK's version into the component (custom section `huizhen-sdk`, shown by
//! `GET /api/plugins`). Built natively, the same code runs in unit tests: the host calls read
//! the context set by [`testing`] (feature `testing`).

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(all(
    target_arch = "wasm32",
    any(
        all(
            feature = "rule",
            any(
                feature = "scorer",
                feature = "coverage",
                feature = "match-weights",
                feature = "triage"
            )
        ),
        all(
            feature = "scorer",
            any(feature = "coverage", feature = "match-weights", feature = "triage")
        ),
        all(
            feature = "coverage",
            any(feature = "match-weights", feature = "triage")
        ),
        all(feature = "match-weights", feature = "triage"),
    )
))]
compile_error!(
    "huizhen-sdk: enable exactly one world feature per plugin (a component targets one world). In a workspace of several plugins, build them one at a time: `huizhen plugin build` does, or `cargo build -p NAME`."
);

#[cfg(all(
    target_arch = "wasm32",
    not(any(
        feature = "rule",
        feature = "scorer",
        feature = "coverage",
        feature = "match-weights",
        feature = "triage"
    ))
))]
compile_error!(
    "huizhen-sdk: enable one world feature: rule, scorer, coverage, match-weights or triage"
);

pub mod hl7;
pub mod host;
#[cfg(any(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

/// This SDK's version, stamped into every component built with it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

#[doc(hidden)]
pub const SDK_VERSION_LEN: usize = SDK_VERSION.len();

#[doc(hidden)]
pub const SDK_VERSION_BYTES: [u8; SDK_VERSION_LEN] = {
    let b = SDK_VERSION.as_bytes();
    let mut out = [0u8; SDK_VERSION_LEN];
    let mut i = 0;
    while i < SDK_VERSION_LEN {
        out[i] = b[i];
        i += 1;
    }
    out
};

/// Stamps the SDK version into the component (used by the entry macros).
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_sdk_version {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "huizhen-sdk")]
        #[used]
        static __HUIZHEN_SDK_VERSION: [u8; $crate::SDK_VERSION_LEN] = $crate::SDK_VERSION_BYTES;
    };
}

/// `rule`: decide on a message (pass, drop, route, transform, annotate).
#[cfg(feature = "rule")]
pub mod rule {
    wit_bindgen::generate!({
        world: "rule",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_rule",
        default_bindings_module: "huizhen_sdk::rule",
    });

    /// The body as text (lossy UTF-8: the engine hands over bodies decoded from their charset).
    pub fn text(msg: &Message) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&msg.body)
    }

    /// A header's value.
    pub fn header<'m>(msg: &'m Message, name: &str) -> Option<&'m str> {
        msg.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as HL7 v2, when the message is one (the body must be UTF-8; see
    /// [`text`] for a lossy reading).
    pub fn hl7(msg: &Message) -> Option<crate::hl7::Hl7<'_>> {
        crate::hl7::Hl7::parse(std::str::from_utf8(&msg.body).ok()?)
    }
}

/// Exports a `rule` plugin: `huizhen_sdk::rule_plugin!(MyRule);` (`MyRule: rule::Guest`).
#[cfg(feature = "rule")]
#[macro_export]
macro_rules! rule_plugin {
    ($t:ident) => {
        $crate::rule::__export_rule!($t with_types_in $crate::rule);
        $crate::__stamp_sdk_version!();
    };
}

/// `scorer`: score an expert for a case, with per-feature contributions.
#[cfg(feature = "scorer")]
pub mod scorer {
    wit_bindgen::generate!({
        world: "scorer",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_scorer",
        default_bindings_module: "huizhen_sdk::scorer",
    });

    /// A feature's numeric value.
    pub fn number(features: &[Feature], name: &str) -> Option<f64> {
        features.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// A feature's text.
    pub fn text<'f>(features: &'f [Feature], name: &str) -> Option<&'f str> {
        features
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.text.as_deref())
    }

    /// `score-many` from a `score`: each candidate in order, stopping at the first error
    /// (named with the candidate's position). A plugin with a faster batched rule writes its
    /// own.
    pub fn score_each(
        case: &[Feature],
        candidates: Vec<Vec<Feature>>,
        score: impl Fn(Vec<Feature>, Vec<Feature>) -> Result<Score, String>,
    ) -> Result<Vec<Score>, String> {
        candidates
            .into_iter()
            .enumerate()
            .map(|(i, c)| score(case.to_vec(), c).map_err(|e| format!("candidate {i}: {e}")))
            .collect()
    }

    /// A feature with a number (for tests and callers).
    pub fn num(name: &str, value: f64) -> Feature {
        Feature {
            name: name.into(),
            value,
            text: None,
        }
    }

    /// A feature with a text.
    pub fn txt(name: &str, text: &str) -> Feature {
        Feature {
            name: name.into(),
            value: 0.0,
            text: Some(text.into()),
        }
    }
}

/// Exports a `scorer` plugin: `huizhen_sdk::scorer_plugin!(MyScorer);`.
#[cfg(feature = "scorer")]
#[macro_export]
macro_rules! scorer_plugin {
    ($t:ident) => {
        $crate::scorer::__export_scorer!($t with_types_in $crate::scorer);
        $crate::__stamp_sdk_version!();
    };
}

/// `coverage`: covered and self-pay amounts of fee items, in integer fen; since contract 0.1.2
/// with the patient's eligibility, the plan's deductible and annual limit and the year's usage
/// (`testing::insured`, `testing::check_coverage` for native tests).
#[cfg(feature = "coverage")]
pub mod coverage {
    // The generated export shim takes the 0.1.2 `patient-coverage` record flattened.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({
        world: "coverage",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_coverage",
        default_bindings_module: "huizhen_sdk::coverage",
    });
}

/// Exports a `coverage` plugin: `huizhen_sdk::coverage_plugin!(MyPolicy);`.
#[cfg(feature = "coverage")]
#[macro_export]
macro_rules! coverage_plugin {
    ($t:ident) => {
        $crate::coverage::__export_coverage!($t with_types_in $crate::coverage);
        $crate::__stamp_sdk_version!();
    };
}

/// `match-weights`: patient-identity comparison weights and thresholds.
#[cfg(feature = "match-weights")]
pub mod match_weights {
    wit_bindgen::generate!({
        world: "match-weights",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_match_weights",
        default_bindings_module: "huizhen_sdk::match_weights",
    });
}

/// Exports a `match-weights` plugin: `huizhen_sdk::match_weights_plugin!(MyWeights);`.
#[cfg(feature = "match-weights")]
#[macro_export]
macro_rules! match_weights_plugin {
    ($t:ident) => {
        $crate::match_weights::__export_match_weights!($t with_types_in $crate::match_weights);
        $crate::__stamp_sdk_version!();
    };
}

/// `triage`: complaint → symptoms, a department, follow-up questions (never a diagnosis).
#[cfg(feature = "triage")]
pub mod triage {
    wit_bindgen::generate!({
        world: "triage",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_triage",
        default_bindings_module: "huizhen_sdk::triage",
    });
}

/// Exports a `triage` plugin: `huizhen_sdk::triage_plugin!(MyTriage);`.
#[cfg(feature = "triage")]
#[macro_export]
macro_rules! triage_plugin {
    ($t:ident) => {
        $crate::triage::__export_triage!($t with_types_in $crate::triage);
        $crate::__stamp_sdk_version!();
    };
}
