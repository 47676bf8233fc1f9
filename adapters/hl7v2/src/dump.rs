//! Every value of a message with its path, as `huizhen hl7 parse` prints it and the API shows
//! it: `PID-5.1 张三`. Repetition, component and subcomponent parts of a path appear only when
//! the field has more than one of them (`PID-3[2].1`), and a segment's occurrence only from the
//! second one on (`OBX[2]-5`). Empty values are left out; the explicit null `""` is kept and
//! marked.

use std::collections::HashMap;

use crate::parse::{Element, Message};

/// One leaf value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leaf {
    pub path: String,
    pub value: String,
    /// The value is the explicit null `""` (delete), not just text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub null: bool,
}

/// Every non-empty value of the message, in order.
pub fn leaves(m: &Message) -> Vec<Leaf> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for seg in m.segments() {
        let name = seg.name().to_owned();
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        let seg_label = if *n == 1 {
            name.clone()
        } else {
            format!("{name}[{n}]")
        };
        for (i, field) in seg.fields().enumerate() {
            let number = i + 1;
            let base = format!("{seg_label}-{number}");
            if name == "MSH" && number <= 2 {
                out.push(Leaf {
                    path: base,
                    value: field.raw().to_owned(),
                    null: false,
                });
                continue;
            }
            let reps: Vec<Element<'_>> = field.repetitions().collect();
            for (r, rep) in reps.iter().enumerate() {
                let rep_label = if reps.len() > 1 {
                    format!("{base}[{}]", r + 1)
                } else {
                    base.clone()
                };
                let comps: Vec<Element<'_>> = rep.components().collect();
                for (c, comp) in comps.iter().enumerate() {
                    let comp_label = if comps.len() > 1 {
                        format!("{rep_label}.{}", c + 1)
                    } else {
                        rep_label.clone()
                    };
                    let subs: Vec<Element<'_>> = comp.subcomponents().collect();
                    for (s, sub) in subs.iter().enumerate() {
                        let label = if subs.len() > 1 {
                            format!("{comp_label}.{}", s + 1)
                        } else {
                            comp_label.clone()
                        };
                        if sub.is_null() {
                            out.push(Leaf {
                                path: label,
                                value: "\"\"".into(),
                                null: true,
                            });
                        } else if !sub.is_empty() {
                            out.push(Leaf {
                                path: label,
                                value: sub.text().into_owned(),
                                null: false,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_what_get_str_reads() {
        let text = "MSH|^~\\&|HIS|县医院|HZ|P|20260101||ADT^A08|C1|P|2.5\rPID|1||123^^^H1^MR~440101199001011234^^^CHN^NI||张^三||19900101|M|||||\"\"\rOBX|1|NM|GLU||5.6\rOBX|2|NM|K||4\\S\\1\r";
        let m = Message::parse(text).unwrap();
        let leaves = leaves(&m);
        let find = |p: &str| leaves.iter().find(|l| l.path == p).map(|l| l.value.clone());
        assert_eq!(find("MSH-1").as_deref(), Some("|"));
        assert_eq!(find("MSH-2").as_deref(), Some("^~\\&"));
        assert_eq!(find("MSH-4").as_deref(), Some("县医院"));
        assert_eq!(find("MSH-9.2").as_deref(), Some("A08"));
        assert_eq!(find("PID-3[2].1").as_deref(), Some("440101199001011234"));
        assert_eq!(find("PID-5.2").as_deref(), Some("三"));
        assert_eq!(find("OBX[2]-5").as_deref(), Some("4^1"));
        assert!(leaves.iter().any(|l| l.path == "PID-13" && l.null));
        for l in leaves
            .iter()
            .filter(|l| !l.null && !l.path.starts_with("MSH-1") && !l.path.starts_with("MSH-2"))
        {
            assert_eq!(
                m.get_str(&l.path).unwrap().as_deref(),
                Some(l.value.as_str()),
                "{}",
                l.path
            );
        }
    }
}
