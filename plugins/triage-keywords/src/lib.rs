//! `triage-keywords`: a free-text complaint in Chinese → symptoms, a suggested department and
//! follow-up questions (a `triage` plugin). Never a diagnosis or a prescription (STANDARDS
//! CN-11, CN-20): it helps the local doctor ask the right questions and route the case.

pub mod rules;

use huizhen_sdk::triage::{Guest, TriageResult};

pub struct TriageKeywords;

impl Guest for TriageKeywords {
    fn triage(complaint: String) -> Result<TriageResult, String> {
        if complaint.trim().is_empty() {
            return Err("the complaint is empty".into());
        }
        let symptoms = rules::symptoms(&complaint);
        let mut questions: Vec<String> = symptoms
            .iter()
            .flat_map(|s| rules::questions(s).iter().map(|q| (*q).to_owned()))
            .collect();
        if questions.is_empty() {
            questions.push(rules::GENERIC_QUESTION.to_owned());
        }
        Ok(TriageResult {
            department: rules::department(&symptoms).map(str::to_owned),
            symptoms: symptoms.iter().map(|s| (*s).to_owned()).collect(),
            questions,
        })
    }
}

huizhen_sdk::triage_plugin!(TriageKeywords);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fever_and_cough_go_to_respiratory() {
        let t = TriageKeywords::triage("发烧两天，咳嗽有痰".into()).unwrap();
        assert_eq!(t.symptoms, ["fever", "cough"]);
        assert_eq!(t.department.as_deref(), Some("呼吸内科"));
        assert_eq!(t.questions.len(), 2);
        assert!(TriageKeywords::triage("  ".into()).is_err());
    }
}
