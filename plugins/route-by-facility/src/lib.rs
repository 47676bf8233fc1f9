//! `route-by-facility`: routes an HL7 v2 message to the pipeline its sending facility
//! (`MSH-4`, first component) is mapped to in the step's `config`; `default` for the others;
//! with neither, the message goes on (`pass`). A message that is not HL7 v2 goes on too.
//!
//! ```yaml
//! - plugin:
//!     name: route-by-facility
//!     config: { 县人民医院: adt-county-3, default: adt-other }
//! ```

use huizhen_sdk::host;
use huizhen_sdk::rule::{self, Decision, Guest, Message};

pub struct RouteByFacility;

impl Guest for RouteByFacility {
    fn decide(msg: Message) -> Result<Decision, String> {
        if msg.kind != "hl7v2" {
            return Ok(Decision::Pass);
        }
        let Some(hl7) = rule::hl7(&msg) else {
            return Err("no MSH segment: not an HL7 v2 message".into());
        };
        let facility = hl7.get("MSH-4.1").unwrap_or("").to_owned();
        match host::config(&facility).or_else(|| host::config("default")) {
            Some(target) => {
                host::debug(&format!("MSH-4 {facility:?} → {target}"));
                Ok(Decision::Route(target))
            }
            None => Ok(Decision::Pass),
        }
    }
}

huizhen_sdk::rule_plugin!(RouteByFacility);

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_sdk::testing;

    fn msg(kind: &str, body: &str) -> Message {
        Message {
            id: "m1".into(),
            pipeline: "p".into(),
            facility: "f".into(),
            kind: kind.into(),
            body: body.as_bytes().to_vec(),
            headers: vec![],
        }
    }

    #[test]
    fn routes_by_msh4() {
        testing::with_config([("县人民医院", "adt-county")], || {
            let d = RouteByFacility::decide(msg(
                "hl7v2",
                "MSH|^~\\&|HIS|县人民医院^1^L|HZ|P|20261124||ADT^A01|1|P|2.5\r",
            ))
            .unwrap();
            assert!(matches!(d, Decision::Route(ref t) if t == "adt-county"));
            let d = RouteByFacility::decide(msg("hl7v2", "MSH|^~\\&|HIS|别的医院|HZ|P\r")).unwrap();
            assert!(matches!(d, Decision::Pass));
            assert!(RouteByFacility::decide(msg("hl7v2", "PID|1")).is_err());
        });
        assert_eq!(testing::logs().len(), 1);
    }
}
