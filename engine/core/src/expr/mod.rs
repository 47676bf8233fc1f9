//! Expressions in pipeline YAML: CEL (the Common Expression Language, via the `cel` crate).
//!
//! An expression sees these variables:
//! - `body`: the body parsed as JSON when the message kind is `json` (or the text when it is
//!   UTF-8 text, or bytes otherwise);
//! - `headers`: a map of string to string;
//! - `message`: `{id, pipeline, facility, kind, source, attempts, received_at}`.
//!
//! Adapters add kind-specific variables and functions (e.g. `hl7('PID-3[2].1')` for `hl7v2`
//! messages) by registering a [`KindSupport`] with `inventory::submit!`.
//!
//! Expressions are compiled once when the pipeline is built; a syntax error, a call of a
//! function that no linked library or message kind provides, or a variable that is not
//! declared is a config error (see `check.rs`).

mod check;

use std::fmt;

use cel::{Context, Program, Value};

use crate::work::{StepError, Work};

/// Renders a body (with its headers) as JSON for the API.
pub type Describe =
    fn(&[u8], &std::collections::BTreeMap<String, String>) -> Result<serde_json::Value, String>;

/// What an adapter adds to expressions over messages of its kind.
pub struct KindSupport {
    /// The message kind, e.g. `hl7v2`.
    pub kind: &'static str,
    /// Adds variables and functions to the context (after the standard ones, so it may replace
    /// `body`). Parse once per message with [`Work::cached`].
    pub extend: fn(&mut Work, &mut Context<'_>) -> Result<(), StepError>,
    /// The functions `extend` adds (`hl7`, `hl7_null`): an expression calling a function no
    /// linked kind declares is refused when it is compiled.
    pub functions: &'static [&'static str],
    /// The parsed form shown by `GET /api/messages/{id}` under `parsed`.
    pub describe: Describe,
}

inventory::collect!(KindSupport);

/// A body decoded to text for the API, with the charset used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedText {
    pub text: String,
    /// The encoding used (`encoding_rs` name, e.g. `gb18030`, `UTF-8`).
    pub charset: String,
    /// Invalid bytes were replaced with U+FFFD.
    pub replaced: bool,
}

/// How the API shows bodies of a kind as text when they are not UTF-8 (an HL7 message in
/// GB18030): `GET /api/messages/{id}` gives `body_text` and `body_charset` beside the base64.
/// Adapters register one with `inventory::submit!`.
pub struct KindText {
    pub kind: &'static str,
    pub decode: DecodeText,
}

/// Decodes a body (with its headers) to text for the API.
pub type DecodeText =
    fn(&[u8], &std::collections::BTreeMap<String, String>) -> Result<DecodedText, String>;

inventory::collect!(KindText);

/// What the source of a kind gives a message it accepts (headers such as `hl7-type`, the dedup
/// key), for messages of that kind that enter a pipeline without their source: `huizhen
/// test`'s inputs. Adapters register one with `inventory::submit!`.
pub struct KindIntake {
    pub kind: &'static str,
    /// Completes the message from its body; an error says why the body is not of the kind.
    pub intake: fn(&mut crate::message::NewMessage) -> Result<(), String>,
}

inventory::collect!(KindIntake);

/// The registered intake of a message kind, if an adapter provides one.
pub fn kind_intake(kind: &str) -> Option<&'static KindIntake> {
    inventory::iter::<KindIntake>
        .into_iter()
        .find(|k| k.kind == kind)
}

/// The registered text view of a message kind, if an adapter provides one.
pub fn kind_text(kind: &str) -> Option<&'static KindText> {
    inventory::iter::<KindText>
        .into_iter()
        .find(|k| k.kind == kind)
}

/// The registered support for a message kind, if an adapter provides one.
pub fn kind_support(kind: &str) -> Option<&'static KindSupport> {
    inventory::iter::<KindSupport>
        .into_iter()
        .find(|k| k.kind == kind)
}

/// A compiled CEL expression with its source text.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: std::sync::Arc<Program>,
    uses: Uses,
}

/// Which of the standard variables an expression reads: the others are not built for it (the
/// headers map and the message's metadata converted to CEL values on every evaluation were
/// most of a simple threshold's cost).
#[derive(Debug, Clone, Copy)]
struct Uses {
    body: bool,
    headers: bool,
    message: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl Expr {
    /// Compiles `source`; the error text says what is wrong with it.
    pub fn compile(source: &str) -> Result<Expr, String> {
        // The CEL parser is not written to be panic-free on every input; a panic is a syntax error.
        let parsed = std::panic::catch_unwind(|| Program::compile(source));
        match parsed {
            Ok(Ok(program)) => {
                static DECLARED: std::sync::LazyLock<check::Declared> =
                    std::sync::LazyLock::new(check::Declared::linked);
                let problems = check::problems(program.expression(), &DECLARED);
                if !problems.is_empty() {
                    return Err(format!(
                        "invalid CEL expression {source:?}: {}",
                        problems.join("; ")
                    ));
                }
                let refs = program.references();
                let uses = Uses {
                    body: refs.has_variable("body"),
                    headers: refs.has_variable("headers"),
                    message: refs.has_variable("message"),
                };
                Ok(Expr {
                    source: source.to_owned(),
                    program: std::sync::Arc::new(program),
                    uses,
                })
            }
            Ok(Err(e)) => Err(format!(
                "invalid CEL expression {source:?}: {}",
                e.to_string().trim()
            )),
            Err(_) => Err(format!("invalid CEL expression {source:?}")),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a message.
    pub fn eval(&self, work: &mut Work) -> Result<Value, StepError> {
        // `Context::default()` builds the standard library's declarations anew (hundreds of
        // allocations, most of the cost of a simple filter); they never change, so they are
        // built once and shared.
        static STDLIB: std::sync::LazyLock<std::sync::Arc<cel::Env>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(cel::Env::stdlib()));
        let mut ctx = Context::with_env(STDLIB.clone());
        if self.uses.body {
            let body = if kind_support(&work.kind).is_some() {
                // The adapter decides what `body` is (its bytes may be in another charset).
                cel::Value::Null
            } else {
                work.body_value()?
            };
            ctx.add_variable_from_value("body", body);
        }
        if self.uses.headers {
            ctx.add_variable("headers", &work.headers)
                .map_err(|e| StepError::new(format!("headers: {e}")))?;
        }
        if self.uses.message {
            let meta = serde_json::json!({
                "id": work.id,
                "pipeline": work.pipeline,
                "facility": work.facility,
                "kind": work.kind,
                "source": work.source,
                "attempts": work.attempts,
                "received_at": work.received_at,
            });
            ctx.add_variable("message", meta)
                .map_err(|e| StepError::new(format!("message: {e}")))?;
        }
        if let Some(k) = kind_support(&work.kind) {
            (k.extend)(work, &mut ctx)?;
        }
        self.program
            .execute(&ctx)
            .map_err(|e| StepError::new(format!("expression {:?} failed: {e}", self.source)))
    }

    /// Evaluates to a boolean; anything else is an error naming the type it produced.
    pub fn eval_bool(&self, work: &mut Work) -> Result<bool, StepError> {
        match self.eval(work)? {
            Value::Bool(b) => Ok(b),
            other => Err(StepError::new(format!(
                "expression {:?} must be true or false, got {}",
                self.source,
                type_name(&other)
            ))),
        }
    }

    /// Evaluates to a string: strings as they are, numbers and booleans printed, null as "".
    pub fn eval_string(&self, work: &mut Work) -> Result<String, StepError> {
        let v = self.eval(work)?;
        value_to_string(&v).ok_or_else(|| {
            StepError::new(format!(
                "expression {:?} must give a string, number or boolean, got {}",
                self.source,
                type_name(&v)
            ))
        })
    }

    /// Evaluates to JSON.
    pub fn eval_json(&self, work: &mut Work) -> Result<serde_json::Value, StepError> {
        let v = self.eval(work)?;
        v.json().map_err(|e| {
            StepError::new(format!(
                "expression {:?} gave a value that is not JSON: {e}",
                self.source
            ))
        })
    }
}

pub fn value_to_string(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        _ => return None,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Function(..) => "a function",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) => "a number",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        _ => "a value of another type",
    }
}

impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Expr::compile(&s).map_err(serde::de::Error::custom)
    }
}
