//! The static check of a parsed expression: every function it calls is one the engine provides
//! and every variable it reads is declared. The CEL parser accepts any name (`body.items.exist(…)`
//! for `exists`, `hl8('PID-3')`, `bdy.type`); without this check such an expression fails only
//! when it is evaluated, after the sender has been acknowledged.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};

use crate::config::did_you_mean;

/// Functions of the CEL standard library as this engine builds it (`cel::Env::stdlib()` with the
/// `chrono` feature), called without a receiver: `size(x)`, `int('3')`, `timestamp(…)`.
const GLOBAL: &[&str] = &[
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "size",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// Functions with a qualified name: `optional.of(x)`.
const QUALIFIED: &[&str] = &["optional.none", "optional.of", "optional.ofNonZeroValue"];

/// Functions called on a receiver: `s.startsWith('A')`, `t.getFullYear()`, `o.orValue(1)`.
const MEMBER: &[&str] = &[
    "contains",
    "endsWith",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
    "hasValue",
    "matches",
    "or",
    "orValue",
    "size",
    "startsWith",
    "value",
];

/// Macros: the parser turns a well-formed use into a comprehension or a presence test, so a
/// call by one of these names left in the tree has the wrong arguments.
const MACROS: &[(&str, &str)] = &[
    ("has", "has(a.b): one field selection"),
    ("all", "list.all(x, predicate)"),
    ("exists", "list.exists(x, predicate)"),
    ("exists_one", "list.exists_one(x, predicate)"),
    (
        "map",
        "list.map(x, expression) or list.map(x, predicate, expression)",
    ),
    ("filter", "list.filter(x, predicate)"),
];

/// The variables every expression may read (see the module documentation of [`super`]).
pub(super) const VARIABLES: &[&str] = &["body", "headers", "message"];

/// Type names an expression may use as values: `type(x) == string`.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "optional_type",
    "string",
    "type",
    "uint",
];

/// The names an expression may use beyond the standard library: the functions message kinds
/// add (`hl7`, `hl7_null`, from every [`super::KindSupport`] linked into this binary).
pub(super) struct Declared {
    pub functions: BTreeSet<&'static str>,
}

impl Declared {
    pub fn linked() -> Declared {
        Declared {
            functions: inventory::iter::<super::KindSupport>
                .into_iter()
                .flat_map(|k| k.functions.iter().copied())
                .collect(),
        }
    }
}

/// Every problem found in `expr`, in the order they appear, each a sentence.
pub(super) fn problems(expr: &IdedExpr, declared: &Declared) -> Vec<String> {
    let mut out = Vec::new();
    let mut scope = Vec::new();
    walk(expr, declared, &mut scope, &mut out);
    out.dedup();
    out
}

fn walk<'a>(e: &'a IdedExpr, d: &Declared, scope: &mut Vec<&'a str>, out: &mut Vec<String>) {
    match &e.expr {
        Ast::Unspecified | Ast::Literal(_) => {}
        Ast::Ident(name) => {
            if !scope.contains(&name.as_str())
                && !VARIABLES.contains(&name.as_str())
                && !TYPE_NAMES.contains(&name.as_str())
            {
                let candidates = VARIABLES.iter().copied().chain(scope.iter().copied());
                let hint = match did_you_mean(name, candidates) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => String::new(),
                };
                out.push(format!(
                    "undeclared variable {name:?}: an expression reads body, headers and message{}{hint}",
                    bound_names(scope)
                ));
            }
        }
        Ast::Select(s) => walk(&s.operand, d, scope, out),
        Ast::List(l) => l.elements.iter().for_each(|x| walk(x, d, scope, out)),
        Ast::Map(m) => walk_entries(&m.entries, d, scope, out),
        Ast::Struct(s) => walk_entries(&s.entries, d, scope, out),
        Ast::Comprehension(c) => {
            walk(&c.iter_range, d, scope, out);
            walk(&c.accu_init, d, scope, out);
            let depth = scope.len();
            scope.push(c.iter_var.as_str());
            if let Some(v) = &c.iter_var2 {
                scope.push(v.as_str());
            }
            scope.push(c.accu_var.as_str());
            walk(&c.loop_cond, d, scope, out);
            walk(&c.loop_step, d, scope, out);
            walk(&c.result, d, scope, out);
            scope.truncate(depth);
        }
        Ast::Call(call) => {
            let name = call.func_name.as_str();
            // Operators (`_==_`, `@in`, `!_`, `_[_]`) are not names one can misspell.
            let operator = !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                || name.starts_with('_');
            let mut target_is_namespace = false;
            if !operator {
                let known = match &call.target {
                    None => {
                        GLOBAL.contains(&name)
                            || QUALIFIED.contains(&name)
                            || d.functions.contains(name)
                    }
                    Some(t) => {
                        if let Ast::Ident(prefix) = &t.expr
                            && !scope.contains(&prefix.as_str())
                            && QUALIFIED.contains(&format!("{prefix}.{name}").as_str())
                        {
                            target_is_namespace = true;
                            true
                        } else {
                            MEMBER.contains(&name) || d.functions.contains(name)
                        }
                    }
                };
                if !known {
                    out.push(unknown_function(name, call.target.is_some(), d));
                    // Its arguments may be a macro's variables (`.exist(i, i > 1)`): one
                    // problem per broken call.
                    if let Some(t) = &call.target {
                        walk(t, d, scope, out);
                    }
                    return;
                }
            }
            if let Some(t) = &call.target
                && !target_is_namespace
            {
                walk(t, d, scope, out);
            }
            call.args.iter().for_each(|a| walk(a, d, scope, out));
        }
    }
}

fn walk_entries<'a>(
    entries: &'a [cel::common::ast::IdedEntryExpr],
    d: &Declared,
    scope: &mut Vec<&'a str>,
    out: &mut Vec<String>,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(me) => {
                walk(&me.key, d, scope, out);
                walk(&me.value, d, scope, out);
            }
            EntryExpr::StructField(f) => walk(&f.value, d, scope, out),
        }
    }
}

fn bound_names(scope: &[&str]) -> String {
    let named: Vec<&str> = scope
        .iter()
        .copied()
        .filter(|v| !v.starts_with('@') && !v.starts_with("__"))
        .collect();
    match named.as_slice() {
        [] => String::new(),
        list => format!(
            " (and here {})",
            list.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn unknown_function(name: &str, member: bool, d: &Declared) -> String {
    if let Some((_, usage)) = MACROS.iter().find(|(m, _)| *m == name) {
        return format!("{name}() has the wrong arguments: write {usage}");
    }
    let mut candidates: Vec<&str> = Vec::new();
    if member {
        candidates.extend(MEMBER);
        candidates.extend(MACROS.iter().map(|(m, _)| *m).filter(|m| *m != "has"));
    } else {
        candidates.extend(GLOBAL);
        candidates.extend(QUALIFIED);
        candidates.push("has");
    }
    candidates.extend(d.functions.iter().copied());
    let hint = match did_you_mean(name, candidates) {
        Some(s) => format!("; did you mean {s:?}?"),
        None if member => {
            "; functions on a value are the CEL standard library's (contains, startsWith, endsWith, matches, size, exists, all, map, filter…)".to_owned()
        }
        None => {
            let mut kinds: Vec<&str> = d.functions.iter().copied().collect();
            kinds.sort_unstable();
            if kinds.is_empty() {
                String::new()
            } else {
                format!("; the message kinds add {}", kinds.join(", "))
            }
        }
    };
    let shown = if member {
        format!(".{name}()")
    } else {
        format!("{name}()")
    };
    format!("unknown function {shown}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, functions: &[&'static str]) -> Vec<String> {
        let program = cel::Program::compile(src).expect("parses");
        let d = Declared {
            functions: functions.iter().copied().collect(),
        };
        problems(program.expression(), &d)
    }

    #[test]
    fn standard_functions_macros_and_variables_pass() {
        for ok in [
            "body.type == 'referral'",
            "size(body.items) > 0 && body.items.exists(i, i.code == 'K')",
            "body.items.all(i, i.v < 10) || body.items.filter(i, i.v > 1).size() == 2",
            "body.items.map(i, i.v * 2)[0] == 2",
            "has(body.patient) ? body.patient.id : headers['x-id']",
            "message.kind in ['json', 'hl7v2']",
            "string(int('3')) + 'x'",
            "type(body) == map && body.name.startsWith('A') && !body.name.endsWith('Z')",
            "timestamp(message.received_at).getFullYear() > 2000",
            "optional.of(1).orValue(2) == 1",
            "{'a': body.x}['a'] != null",
        ] {
            assert_eq!(check(ok, &[]), Vec::<String>::new(), "{ok}");
        }
        assert!(check("hl7('PID-3') == 'x'", &["hl7"]).is_empty());
    }

    #[test]
    fn a_misspelt_function_is_named_with_the_nearest() {
        assert_eq!(
            check("body.items.exist(i, i > 1)", &[]),
            ["unknown function .exist(); did you mean \"exists\"?"]
        );
        assert_eq!(
            check("hl8('PID-3') == 'x'", &["hl7", "hl7_null"]),
            ["unknown function hl8(); did you mean \"hl7\"?"]
        );
        assert_eq!(
            check("hl7('PID-3') == 'x'", &[]),
            ["unknown function hl7()"]
        );
        assert_eq!(
            check("body.m.exists(k, v, v > 1)", &[]),
            ["exists() has the wrong arguments: write list.exists(x, predicate)"]
        );
        assert_eq!(
            check("body.name.startswith('A')", &[]),
            ["unknown function .startswith(); did you mean \"startsWith\"?"]
        );
    }

    #[test]
    fn an_undeclared_variable_is_named() {
        assert_eq!(
            check("bdy.type == 'x'", &[]),
            [
                "undeclared variable \"bdy\": an expression reads body, headers and message; did you mean \"body\"?"
            ]
        );
        let e = check("body.items.exists(i, j > 1)", &[]);
        assert_eq!(
            e,
            [
                "undeclared variable \"j\": an expression reads body, headers and message (and here \"i\")"
            ]
        );
        // A comprehension's variable is not visible outside it.
        assert_eq!(check("body.items.exists(i, i > 1) && i == 2", &[]).len(), 1);
    }
}
