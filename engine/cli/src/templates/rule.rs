//! A `rule` plugin: decides what happens to each message of a pipeline's `plugin` step.

use huizhen_sdk::host;
use huizhen_sdk::rule::{self, Decision, Guest, Message};

pub struct Plugin;

impl Guest for Plugin {
    fn decide(msg: Message) -> Result<Decision, String> {
        // Route ADT messages of the facility named in the step's config; let the rest pass.
        if let Some(hl7) = rule::hl7(&msg)
            && hl7.get("MSH-9.1") == Some("ADT")
            && let Some(target) = host::config("adt_pipeline")
        {
            host::debug(&format!("ADT {} → {target}", msg.id));
            return Ok(Decision::Route(target));
        }
        Ok(Decision::Pass)
    }
}

huizhen_sdk::rule_plugin!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_sdk::testing;

    #[test]
    fn routes_adt() {
        let msg = Message {
            id: "m1".into(),
            pipeline: "intake".into(),
            facility: "f".into(),
            kind: "hl7v2".into(),
            body: b"MSH|^~\\&|HIS|H|HZ|P|20261124||ADT^A01|1|P|2.5\r".to_vec(),
            headers: vec![],
        };
        let d = testing::with_config([("adt_pipeline", "adt")], || Plugin::decide(msg)).unwrap();
        assert!(matches!(d, Decision::Route(ref p) if p == "adt"));
    }
}
