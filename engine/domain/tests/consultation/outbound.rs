//! What a consultation announces (issue 15 items 6, 11): the signed opinion with the HIS's
//! identifiers on completion, and notices of acceptance, escalation, cancellation and failure
//! that carry no patient data.

use chrono::FixedOffset;
use huizhen_domain::consultation::outbound::{
    Clinician, OrderNumber, PatientIdentifier, PersonName, ServiceCode,
};
use huizhen_domain::consultation::{
    Announcement, Command, ConsultationRequest, FailReason, HisOrder, KnownPatient,
    OutboundOpinion, State, announcements, outbound,
};

use crate::support::*;

fn order() -> HisOrder {
    HisOrder {
        placer: OrderNumber {
            id: "HZSQ-0007".into(),
            namespace: Some("HIS".into()),
        },
        filler: None,
        patient_identifiers: vec![PatientIdentifier {
            id: "0001234567".into(),
            assigning_authority: Some("HXXRMYY".into()),
            type_code: Some("MR".into()),
        }],
        national_identifiers: vec![],
        ordering_provider: Some(Clinician {
            id: REQUESTING_DOCTOR.into(),
            name: "王建国".into(),
        }),
        service: Some(ServiceCode {
            code: "HZ-XNK".into(),
            text: Some("远程心内科会诊".into()),
            system: Some("L".into()),
        }),
    }
}

fn known() -> KnownPatient {
    KnownPatient {
        identifiers: vec![PatientIdentifier {
            id: "MRN-1".into(),
            assigning_authority: Some("F-REQ".into()),
            type_code: None,
        }],
        name: Some(PersonName {
            family: "张三丰".into(),
            given: None,
        }),
    }
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

/// The announcements of the events the last command appended.
fn announced(k: &Case, last: usize, patient: &KnownPatient) -> Vec<Announcement> {
    let events = &k.events[k.events.len() - last..];
    announcements(
        &k.c,
        events,
        &outbound::OutboundContext {
            patient,
            expert_name: Some("李振华"),
            offset: beijing(),
        },
    )
}

/// A consultation from an HIS order, walked to the signed report.
fn completed(request: ConsultationRequest) -> Case {
    let mut k = Case::with(request);
    k.gates();
    advance(&mut k, State::InSession);
    let signed = signed_opinion(ID, "E1", k.now);
    k.run(&expert("E1"), Command::SignOpinion { signed });
    k.run(
        &local_doctor(),
        Command::RecordLocalDecision {
            decision: decision(),
        },
    );
    k.run(&local_doctor(), Command::Complete);
    k
}

#[test]
fn completion_announces_the_signed_opinion_with_the_order_s_identifiers() {
    let k = completed(ConsultationRequest {
        his_order: Some(Box::new(order())),
        ..request()
    });
    assert!(outbound::announces(&k.events[k.events.len() - 1..]));
    let out = announced(&k, 1, &known());
    let [Announcement::Completed(o)] = out.as_slice() else {
        panic!("one completed announcement: {out:?}");
    };
    assert_eq!(out[0].topic(), "consultation.completed");
    let signed_version =
        k.c.timeline()
            .iter()
            .find(|t| t.event == "opinion_signed")
            .unwrap()
            .version;
    let recorded = k.c.opinion().unwrap();
    let want = OutboundOpinion {
        consultation_id: ID.into(),
        placer_order_number: Some(order().placer),
        filler_order_number: None,
        patient: huizhen_domain::consultation::outbound::OutboundPatient {
            identifiers: order().patient_identifiers,
            name: known().name.unwrap(),
        },
        expert: Clinician {
            id: "E1".into(),
            name: "李振华".into(),
        },
        local_doctor: order().ordering_provider,
        diagnoses: vec![huizhen_domain::consultation::outbound::OpinionDiagnosis {
            code: "I21.0".into(),
            text: "急性前壁心肌梗死".into(),
        }],
        treatment_plan: Some("急诊 PCI; 双联抗血小板".into()),
        advice: Some("转上级医院导管室".into()),
        signed_at: recorded
            .signed
            .signature
            .signed_at
            .with_timezone(&beijing())
            .format("%Y-%m-%dT%H:%M:%S+08:00")
            .to_string(),
        signer: Clinician {
            id: "E1".into(),
            name: recorded.verified_signer.clone(),
        },
        signature_ref: format!("{ID}/opinion/{signed_version}"),
        service: order().service,
    };
    assert_eq!(**o, want);
}

#[test]
fn without_an_order_the_identity_index_gives_the_patient_s_ids() {
    let k = completed(request());
    let out = announced(&k, 1, &known());
    let [Announcement::Completed(o)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(o.placer_order_number, None);
    assert_eq!(o.patient.identifiers, known().identifiers);
    assert_eq!(o.local_doctor, None, "no name for the requesting doctor");
    // Without a registry name the expert is named as the certificate names the signer.
    let out = announcements(
        &k.c,
        &k.events[k.events.len() - 1..],
        &outbound::OutboundContext {
            patient: &KnownPatient::default(),
            expert_name: None,
            offset: beijing(),
        },
    );
    let [Announcement::Completed(o)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(o.expert.name, "E1");
    assert!(o.patient.identifiers.is_empty() && o.patient.name.family.is_empty());
}

#[test]
fn notices_of_acceptance_escalation_cancellation_and_failure() {
    let mut k = Case::with(ConsultationRequest {
        his_order: Some(Box::new(order())),
        ..request()
    });
    advance(&mut k, State::PendingMatch);
    let none = announced(&k, 1, &known());
    assert!(none.is_empty(), "approval is not announced: {none:?}");
    k.run(
        &system(),
        Command::Escalate {
            to: "duty-coordinator".into(),
        },
    );
    let out = announced(&k, 1, &known());
    let [Announcement::Notice(n)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(out[0].topic(), "consultation.escalated");
    assert_eq!(n.escalated_to.as_deref(), Some("duty-coordinator"));
    assert_eq!(n.state, "pending-match");
    assert_eq!(n.placer_order_number, Some(order().placer));
    assert_eq!(n.failed_offers, Some(0));
    // No patient data: the body names ids, the facility, the department and the urgency only.
    let json = serde_json::to_value(n).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "actor",
            "at",
            "consultation_id",
            "department",
            "escalated_to",
            "event",
            "failed_offers",
            "placer_order_number",
            "requesting_facility",
            "state",
            "urgency",
            "version",
        ]
    );
    assert!(json["at"].as_str().unwrap().ends_with("+08:00"), "{json}");

    // The coordinator offers it; the offer is not announced, the acceptance is.
    let deadline = k.now + minutes(10);
    k.run(
        &coordinator(),
        Command::Offer {
            to: offeree("E1"),
            deadline,
        },
    );
    assert!(announced(&k, 1, &known()).is_empty());
    let expected_version = k.c.version();
    k.run(&expert("E1"), Command::Accept { expected_version });
    let out = announced(&k, 1, &known());
    let [Announcement::Notice(n)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(
        (out[0].topic(), n.expert.as_deref(), n.state.as_str()),
        ("consultation.accepted", Some("E1"), "scheduled")
    );
    k.run(
        &system(),
        Command::Fail {
            code: FailReason::NoShow,
            reason: "nobody came".into(),
        },
    );
    let out = announced(&k, 1, &known());
    let [Announcement::Notice(n)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(
        (out[0].topic(), n.failure, n.reason.as_deref()),
        (
            "consultation.failed",
            Some(FailReason::NoShow),
            Some("nobody came")
        )
    );

    let mut k = Case::new();
    k.run(
        &local_doctor(),
        Command::Cancel {
            reason: "患者转院".into(),
        },
    );
    let out = announced(&k, 1, &known());
    assert_eq!(out[0].topic(), "consultation.cancelled");
    assert!(matches!(&out[0], Announcement::Notice(n) if n.placer_order_number.is_none()));
}

#[test]
fn the_order_s_ids_are_checked_with_the_request() {
    let mut o = order();
    o.placer.id = " ".into();
    o.patient_identifiers[0].type_code = Some("M\nR".into());
    o.ordering_provider = Some(Clinician {
        id: "D1".into(),
        name: String::new(),
    });
    let r = ConsultationRequest {
        his_order: Some(Box::new(o)),
        ..request()
    };
    let e = r.validate().unwrap_err();
    assert_eq!(
        e.paths(),
        [
            "his_order.placer.id",
            "his_order.patient_identifiers[0].type_code",
            "his_order.ordering_provider.name",
        ]
    );
    // And it reads back from JSON with unknown fields refused.
    let mut json = serde_json::to_value(ConsultationRequest {
        his_order: Some(Box::new(order())),
        ..request()
    })
    .unwrap();
    let back: ConsultationRequest = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.his_order.as_deref(), Some(&order()));
    json["his_order"]["placer"]["idx"] = "x".into();
    assert!(serde_json::from_value::<ConsultationRequest>(json).is_err());
}
