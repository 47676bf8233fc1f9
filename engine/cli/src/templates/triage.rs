//! A `triage` plugin: complaint → symptoms, a department, follow-up questions. Never a
//! diagnosis or a prescription.

use huizhen_sdk::triage::{Guest, TriageResult};

pub struct Plugin;

impl Guest for Plugin {
    fn triage(complaint: String) -> Result<TriageResult, String> {
        if complaint.trim().is_empty() {
            return Err("the complaint is empty".into());
        }
        let fever = ["发热", "发烧"].iter().any(|k| complaint.contains(k));
        Ok(TriageResult {
            symptoms: if fever { vec!["fever".into()] } else { vec![] },
            department: fever.then(|| "呼吸内科".into()),
            questions: vec![if fever { "发热最高多少度？持续几天了？" } else { "哪里不舒服？" }.into()],
        })
    }
}

huizhen_sdk::triage_plugin!(Plugin);
