//! The segments every outbound message starts with: `MSH` and `PID` (the charge's `DFT^P03`
//! and the readings' `ORU^R01` build them here; the opinion's `Parts` has its own view of the
//! same values).

use chrono::{DateTime, FixedOffset};

use super::BuildOptions;
use super::messages::dtm;
use super::opinion::OutboundPatient;
use super::writer::{Seg, components, esc};

/// `MSH` of `message_type` (`ORU^R01^ORU_R01`), v2.5.1, the body in UTF-8.
pub(super) fn msh(
    options: &BuildOptions,
    message_type: &str,
    control_id: &str,
    message_time: &DateTime<FixedOffset>,
) -> Seg {
    Seg::new("MSH")
        .set(3, esc(&options.sending_application))
        .set(4, esc(&options.sending_facility))
        .set(5, esc(&options.receiving_application))
        .set(6, esc(&options.receiving_facility))
        .set(7, dtm(message_time))
        .set(9, message_type)
        .set(10, esc(control_id))
        .set(11, esc(&options.processing_id))
        .set(12, "2.5.1")
        // The body is UTF-8; the mllp sink rewrites MSH-18 for the destination charset.
        .set(18, "UNICODE UTF-8")
}

/// `PID` with PID-3 (every identifier as CX `id^^^authority^type`) and PID-5 (XPN).
pub(super) fn pid(p: &OutboundPatient) -> Seg {
    let ids: Vec<String> = p
        .identifiers
        .iter()
        .map(|i| {
            components(&[
                esc(i.id.trim()),
                String::new(),
                String::new(),
                i.assigning_authority
                    .as_deref()
                    .map(esc)
                    .unwrap_or_default(),
                i.type_code.as_deref().map(esc).unwrap_or_default(),
            ])
        })
        .collect();
    Seg::new("PID").set(1, "1").set(3, ids.join("~")).set(
        5,
        components(&[
            esc(&p.name.family),
            p.name.given.as_deref().map(esc).unwrap_or_default(),
        ]),
    )
}
