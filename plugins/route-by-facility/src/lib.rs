//! `route-by-facility`: routes an HL7 v2 message to the pipeline its sending facility
//! (`MSH-4`, first component) is mapped to in the step's `config`; `default` for the others;
//! with neither, the message goes on (`pass`). A message that is not HL7 v2 goes on too.
//!
//! ```yaml
//! - plugin:
//!     path: plugins/dist/route_by_facility.wasm
//!     config: { 县人民医院: adt-county-3, default: adt-other }
//! ```

// The generated bindings pass records field by field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "rule",
    path: "../../sdk/wit",
});

use huizhen::plugin::host::{Level, config, log};

struct RouteByFacility;

/// `MSH-4`'s first component, from the text of an HL7 v2 message.
fn sending_facility(text: &str) -> Option<String> {
    let msh = text.split(['\r', '\n']).find(|s| s.starts_with("MSH"))?;
    let sep = msh[3..].chars().next()?;
    let encoding: Vec<char> = msh[3 + sep.len_utf8()..]
        .chars()
        .take_while(|c| *c != sep)
        .collect();
    let component = encoding.first().copied().unwrap_or('^');
    // MSH-1 is the separator itself: MSH-4 is the third piece after "MSH".
    let field = msh.split(sep).nth(3)?;
    Some(field.split(component).next().unwrap_or("").to_owned())
}

impl Guest for RouteByFacility {
    fn decide(msg: Message) -> Result<Decision, String> {
        if msg.kind != "hl7v2" {
            return Ok(Decision::Pass);
        }
        let text = String::from_utf8_lossy(&msg.body);
        let Some(facility) = sending_facility(&text) else {
            return Err("no MSH segment: not an HL7 v2 message".into());
        };
        match config(&facility).or_else(|| config("default")) {
            Some(target) => {
                log(Level::Debug, &format!("MSH-4 {facility:?} → {target}"));
                Ok(Decision::Route(target))
            }
            None => Ok(Decision::Pass),
        }
    }
}

export!(RouteByFacility);
