//! The acceptor's side of association negotiation (PS3.8 9.3.2–9.3.4): which presentation
//! contexts this SCP accepts, with which transfer syntax, and when it rejects the association.

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, Pdu, PresentationContextResult,
    PresentationContextResultReason, RequestorRoles, UserVariableItem,
};

use super::{peer_max, user_variables};
use crate::uids;

/// What an accepted presentation context is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Verification,
    /// C-FIND, patient root (`true`) or study root.
    Find {
        patient_root: bool,
    },
    /// C-MOVE, patient root (`true`) or study root.
    Move {
        patient_root: bool,
    },
    /// C-GET, patient root (`true`) or study root.
    Get {
        patient_root: bool,
    },
    Storage,
    /// On the requestor's side: whatever it proposed.
    Other,
}

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    pub service: Service,
    /// A storage context on which the requestor takes the SCP role (SCP/SCU role selection,
    /// PS3.7 D.3.3.4): C-STORE sub-operations of a C-GET go to it.
    pub requestor_scp: bool,
}

/// What the acceptor accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// AE titles this SCP answers to.
    pub called: Vec<String>,
    /// Whether the calling AE title may associate (and is known).
    pub calling_ok: bool,
    /// Abstract syntaxes that are not standard storage SOP classes are stored too.
    pub any_sop_class: bool,
    pub max_pdu: u32,
}

/// The acceptor's answer to an A-ASSOCIATE-RQ: the A-ASSOCIATE-AC with the accepted contexts,
/// or the A-ASSOCIATE-RJ and why (for the log).
pub fn negotiate(
    rq: &AssociationRQ,
    policy: &Policy,
) -> Result<(AssociationAC, Vec<Accepted>, u32), (AssociationRJ, String)> {
    let reject = |reason, why: String| {
        Err((
            AssociationRJ {
                result: AssociationRJResult::Permanent,
                source: AssociationRJSource::ServiceUser(reason),
            },
            why,
        ))
    };
    if rq.application_context_name.trim_end_matches('\0') != uids::APPLICATION_CONTEXT {
        return reject(
            AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
            format!(
                "application context {:?} is not DICOM's",
                rq.application_context_name
            ),
        );
    }
    let called = rq.called_ae_title.trim();
    if !policy.called.iter().any(|c| c == called) {
        return reject(
            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            format!(
                "called AE title {called:?} is not this SCP's ({})",
                policy.called.join(", ")
            ),
        );
    }
    if !policy.calling_ok {
        return reject(
            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            format!(
                "calling AE title {:?} is not in the allow-list",
                rq.calling_ae_title.trim()
            ),
        );
    }
    // SCP/SCU role selection proposed by the requestor, per abstract syntax.
    let roles: Vec<(&str, RequestorRoles)> = rq
        .user_variables
        .iter()
        .filter_map(|v| match v {
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, r) => {
                Some((uid.trim_end_matches('\0'), *r))
            }
            _ => None,
        })
        .collect();
    let mut role_replies: Vec<UserVariableItem> = Vec::new();
    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut accepted = Vec::new();
    for pc in &rq.presentation_contexts {
        let abs = pc.abstract_syntax.trim_end_matches('\0');
        let service = match abs {
            uids::VERIFICATION => Some(Service::Verification),
            uids::STUDY_ROOT_FIND => Some(Service::Find {
                patient_root: false,
            }),
            uids::PATIENT_ROOT_FIND => Some(Service::Find { patient_root: true }),
            uids::STUDY_ROOT_MOVE => Some(Service::Move {
                patient_root: false,
            }),
            uids::PATIENT_ROOT_MOVE => Some(Service::Move { patient_root: true }),
            uids::STUDY_ROOT_GET => Some(Service::Get {
                patient_root: false,
            }),
            uids::PATIENT_ROOT_GET => Some(Service::Get { patient_root: true }),
            a if uids::is_storage_sop_class(a) => Some(Service::Storage),
            a if policy.any_sop_class && uids::is_valid(a) => Some(Service::Storage),
            _ => None,
        };
        let proposed = pc
            .transfer_syntaxes
            .iter()
            .map(|t| t.trim_end_matches('\0'));
        let (reason, ts) = match service {
            None => (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                None,
            ),
            Some(s) => {
                // The sender's preference among what is accepted as received.
                let ok = |t: &str| match s {
                    Service::Storage => {
                        uids::STORAGE_TRANSFER_SYNTAXES.iter().any(|(u, _)| *u == t)
                    }
                    _ => uids::PLAIN_TRANSFER_SYNTAXES.contains(&t),
                };
                match proposed.clone().find(|t| ok(t)) {
                    Some(t) => (PresentationContextResultReason::Acceptance, Some(t)),
                    None => (
                        PresentationContextResultReason::TransferSyntaxesNotSupported,
                        None,
                    ),
                }
            }
        };
        let ts = ts.unwrap_or(uids::IMPLICIT_VR_LE).to_owned();
        if reason == PresentationContextResultReason::Acceptance
            && let Some(service) = service
        {
            let role = roles.iter().find(|(u, _)| *u == abs).map(|(_, r)| *r);
            let requestor_scp = service == Service::Storage && role.is_some_and(|r| r.scp);
            // Accepted as proposed: the requestor may be SCU, SCP or both for storage (C-GET
            // sends its instances to a requestor that is SCP).
            if let Some(r) = role
                && service == Service::Storage
                && !role_replies.iter().any(
                    |v| matches!(v, UserVariableItem::ScuScpRoleSelectionSubItem(u, _) if u == abs),
                )
            {
                role_replies.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                    abs.to_owned(),
                    r,
                ));
            }
            accepted.push(Accepted {
                id: pc.id,
                abstract_syntax: abs.to_owned(),
                transfer_syntax: ts.clone(),
                service,
                requestor_scp,
            });
        }
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            transfer_syntax: ts,
        });
    }
    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: uids::APPLICATION_CONTEXT.to_owned(),
        presentation_contexts: results,
        user_variables: {
            let mut v = user_variables(policy.max_pdu);
            v.extend(role_replies);
            v
        },
    };
    Ok((ac, accepted, peer_max(&rq.user_variables)))
}

/// The A-ASSOCIATE-RJ for an association over `max_associations` (transient: retry later).
pub fn busy() -> Pdu {
    Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    })
}

#[cfg(test)]
mod tests {
    use dicom_ul::pdu::PresentationContextProposed;

    use super::*;

    fn rq(calling: &str, called: &str, pcs: &[(&str, &[&str])]) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: pcs
                .iter()
                .enumerate()
                .map(|(i, (a, ts))| PresentationContextProposed {
                    id: (2 * i + 1) as u8,
                    abstract_syntax: (*a).into(),
                    transfer_syntaxes: ts.iter().map(|t| (*t).to_owned()).collect(),
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        }
    }

    fn policy() -> Policy {
        Policy {
            called: vec!["HUIZHEN".into()],
            calling_ok: true,
            any_sop_class: false,
            max_pdu: 65536,
        }
    }

    #[test]
    fn contexts_are_accepted_as_proposed_or_refused_with_a_reason() {
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        let jls = "1.2.840.10008.1.2.4.80";
        let r = rq(
            "CT01",
            "HUIZHEN",
            &[
                (uids::VERIFICATION, &[uids::IMPLICIT_VR_LE]),
                (ct, &[jls, uids::EXPLICIT_VR_LE]),
                (ct, &["1.2.3.4.5.6"]),
                ("1.2.840.10008.5.1.4.31", &[uids::IMPLICIT_VR_LE]),
                (
                    uids::STUDY_ROOT_FIND,
                    &["1.2.840.10008.1.2.4.50", uids::EXPLICIT_VR_LE],
                ),
            ],
        );
        let (ac, accepted, peer) = negotiate(&r, &policy()).unwrap();
        assert_eq!(peer, 16384);
        let reasons: Vec<_> = ac
            .presentation_contexts
            .iter()
            .map(|p| p.reason.clone())
            .collect();
        use PresentationContextResultReason::*;
        assert_eq!(
            reasons,
            [
                Acceptance,
                Acceptance,
                TransferSyntaxesNotSupported,
                AbstractSyntaxNotSupported,
                Acceptance
            ]
        );
        assert_eq!(
            accepted[1].transfer_syntax, jls,
            "as the sender proposed it"
        );
        assert_eq!(accepted[1].service, Service::Storage);
        assert_eq!(accepted[2].transfer_syntax, uids::EXPLICIT_VR_LE);
        assert_eq!(
            accepted[2].service,
            Service::Find {
                patient_root: false
            }
        );
        // A private SOP class only with any_sop_class.
        let private = rq(
            "CT01",
            "HUIZHEN",
            &[("1.3.6.1.4.1.9590.100.1.2", &[uids::EXPLICIT_VR_LE])],
        );
        assert!(negotiate(&private, &policy()).unwrap().1.is_empty());
        let any = Policy {
            any_sop_class: true,
            ..policy()
        };
        assert_eq!(negotiate(&private, &any).unwrap().1.len(), 1);
    }

    #[test]
    fn unknown_called_or_calling_titles_are_rejected_permanently() {
        let (rj, why) = negotiate(&rq("CT01", "OTHER", &[]), &policy()).unwrap_err();
        assert_eq!(rj.result, AssociationRJResult::Permanent);
        assert_eq!(
            rj.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        );
        assert!(why.contains("OTHER"), "{why}");
        let p = Policy {
            calling_ok: false,
            ..policy()
        };
        let (rj, why) = negotiate(&rq("EVIL", "HUIZHEN", &[]), &p).unwrap_err();
        assert_eq!(
            rj.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        );
        assert!(why.contains("EVIL"), "{why}");
    }
}
