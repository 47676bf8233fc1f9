//! The keyword rules, in plain Rust.
//!
//! A complaint is cut into clauses at punctuation and at 但/但是/而/却; a keyword is negated
//! when a negation word (无, 不, 没, 没有, 未, 否认) comes right before it, or when its clause
//! starts with one (`无发热、咳嗽`: neither). Symptoms are listed in the order they first
//! appear, once each. This suggests a department and asks questions; it never diagnoses or
//! prescribes (STANDARDS CN-11, CN-20).

/// Symptom → its keywords.
pub const SYMPTOMS: &[(&str, &[&str])] = &[
    ("fever", &["发热", "发烧", "体温升高"]),
    ("cough", &["咳嗽", "干咳", "咳痰"]),
    ("chest pain", &["胸痛", "胸闷", "心前区疼痛"]),
    ("headache", &["头痛", "头晕", "头胀"]),
];

const NEGATIONS: &[&str] = &["否认", "没有", "无", "不", "没", "未"];

/// Follow-up questions per symptom.
pub fn questions(symptom: &str) -> &'static [&'static str] {
    match symptom {
        "fever" => &["发热最高多少度？持续几天了？"],
        "cough" => &["咳嗽多久了？有没有痰，痰是什么颜色？"],
        "chest pain" => &[
            "胸痛是什么性质（压榨样、刺痛）？持续多久？是否向左肩或后背放射？",
            "是否伴有大汗、呼吸困难？",
        ],
        "headache" => &["头痛在哪个部位？是否伴有恶心、呕吐或视物模糊？"],
        _ => &[],
    }
}

/// When nothing is recognised.
pub const GENERIC_QUESTION: &str = "请具体描述哪里不舒服、从什么时候开始、持续多长时间？";

/// The suggested department: chest pain first (it may be urgent), then fever or cough, then
/// headache.
pub fn department(symptoms: &[&str]) -> Option<&'static str> {
    let has = |s: &str| symptoms.contains(&s);
    if has("chest pain") {
        Some("心血管内科")
    } else if has("fever") || has("cough") {
        Some("呼吸内科")
    } else if has("headache") {
        Some("神经内科")
    } else {
        None
    }
}

/// The symptoms named (and not negated) in a complaint, in order of first appearance.
pub fn symptoms(complaint: &str) -> Vec<&'static str> {
    let mut found: Vec<(usize, &'static str)> = Vec::new();
    let mut offset = 0;
    for clause in clauses(complaint) {
        let start = offset + complaint[offset..].find(clause).unwrap_or(0);
        offset = start + clause.len();
        let body = clause.trim_start_matches(['也', '并', '且', ' ']);
        let clause_negated = NEGATIONS.iter().any(|n| body.starts_with(n));
        for (symptom, words) in SYMPTOMS {
            for w in *words {
                for (at, _) in clause.match_indices(w) {
                    let before = &clause[..at];
                    let negated = clause_negated || NEGATIONS.iter().any(|n| before.ends_with(n));
                    if !negated {
                        found.push((start + at, symptom));
                    }
                }
            }
        }
    }
    found.sort();
    let mut out: Vec<&'static str> = Vec::new();
    for (_, s) in found {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn clauses(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    let seps = [
        "，", ",", "。", ".", "；", ";", "！", "!", "？", "?", "\n", " ", "但是", "但", "而", "却",
    ];
    while !rest.is_empty() {
        let next = seps
            .iter()
            .filter_map(|s| rest.find(s).map(|i| (i, s.len())))
            .min();
        match next {
            Some((i, len)) => {
                if i > 0 {
                    out.push(&rest[..i]);
                }
                rest = &rest[i + len..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_negation_and_order() {
        assert_eq!(symptoms("发烧两天，咳嗽"), ["fever", "cough"]);
        assert_eq!(symptoms("咳嗽三天，无发热"), ["cough"]);
        assert_eq!(symptoms("无发热、咳嗽，有胸闷"), ["chest pain"]);
        assert_eq!(symptoms("不咳嗽但胸痛"), ["chest pain"]);
        assert_eq!(symptoms("头晕头胀，体温升高"), ["headache", "fever"]);
        assert_eq!(symptoms("否认胸痛"), Vec::<&str>::new());
        assert_eq!(symptoms("肚子疼"), Vec::<&str>::new());
    }
}
