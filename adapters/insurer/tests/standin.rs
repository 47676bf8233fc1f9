//! The client against the stand-in platform, driving the domain's saga directly: every request
//! has the CN-61 shape the platform checks; a timeout after the platform committed a 2207 is
//! reversed with the original msgid and infno and the books hold one settlement; a refused
//! pre-settlement backs out what was registered; a field map renames the wire fields.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use huizhen_core::billing::{Insurer, InsurerConfig, InsurerContext};
use huizhen_domain::billing::{
    Billable, CoverageItem, CoveragePolicy, Eligibility, FeeBill, FeeLine, Fen, ItemCodes, Kind,
    MsgIdCursor, Next, PatientCoverage, Phase, Settlement, SimplePolicy, Voucher, next_msgid,
};
use huizhen_domain::consultation::{Diagnosis, ServiceType};
use huizhen_domain::expert::Title;
use huizhen_insurer::testing::{Fault, StandIn};

const INST: &str = "H44010600001";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-15T02:30:05Z")
        .unwrap()
        .to_utc()
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

fn settlement() -> Settlement {
    let bill = FeeBill {
        billable: Billable {
            consultation_id: "C-1".into(),
            patient: 7,
            facility: INST.into(),
            province: Some("44".into()),
            service_type: ServiceType::InstitutionToInstitution,
            department: "0302".into(),
            diagnoses: vec![Diagnosis {
                code: "I20.0".parse().unwrap(),
                text: "不稳定型心绞痛".into(),
            }],
            expert: "E1".into(),
            expert_title: Title::Chief,
            expert_facility: Some("H11010100001".into()),
            minutes: 20,
            agreement: None,
            completed_at: t0(),
        },
        lines: vec![FeeLine {
            name: "远程会诊".into(),
            codes: ItemCodes {
                local: "HZ-YCHZ-01".into(),
                national: "003101000010000".into(),
                province: "310100001-1".into(),
                mapping_version: "2026.01".into(),
            },
            quantity: 1,
            unit_price: Fen(25_000),
            amount: Fen(25_000),
            covered: true,
        }],
        total: Fen(25_000),
    };
    let cov = PatientCoverage {
        insurer: "x".into(),
        plan: "y".into(),
        active: true,
        eligibility: Eligibility::Eligible,
        deductible: Fen::ZERO,
        annual_limit: None,
        year_to_date: Default::default(),
    };
    let estimate = SimplePolicy::default()
        .cover(&CoverageItem::of_bill(&bill), &cov)
        .unwrap();
    let kind = Kind::Insured {
        voucher: Voucher {
            cert_type: "02".into(),
            cert_no: "440106199001011234".into(),
            insuplc_admdvs: None,
            qr: None,
        },
    };
    Settlement::open("S-1", INST, kind, bill, estimate, t0())
}

fn client(url: &str, timeout: &str, fields: Option<&std::path::Path>) -> Arc<dyn Insurer> {
    let fields = fields.map_or(String::new(), |f| format!("fields: {}\n", f.display()));
    let yaml = format!(
        "nhsa:\n  url: {url}\n  timeout: {timeout}\n  mdtrtarea_admvs: \"440100\"\n  opter: HZ\n  opter_name: 计费\n  {fields}"
    );
    let cfg: Box<dyn InsurerConfig> = serde_saphyr_from(&yaml);
    cfg.build(&InsurerContext {
        institution: INST.into(),
        institution_name: "某某人民医院".into(),
        offset: beijing(),
        base_dir: None,
    })
    .unwrap()
}

fn serde_saphyr_from(yaml: &str) -> Box<dyn InsurerConfig> {
    huizhen_core::config::parse_yaml(std::path::Path::new("insurer.yaml"), yaml).unwrap()
}

/// Drives the saga to rest through `insurer`, confirming when asked.
async fn drive(s: &mut Settlement, insurer: &dyn Insurer, cursor: &mut Option<MsgIdCursor>) {
    for _ in 0..50 {
        match s.next() {
            Next::Send { .. } => {
                let (msgid, c) = next_msgid(INST, *cursor, t0(), beijing()).unwrap();
                *cursor = Some(c);
                let call = s.begin(msgid, t0()).unwrap();
                let request = insurer.request(s, &call, t0()).unwrap();
                let answer = insurer.send(&call, &request).await;
                s.complete(&call.msgid, answer.outcome, t0()).unwrap();
            }
            Next::WaitForPatient => {
                let a = s.pre_settlement.unwrap();
                s.confirm("patient", a, t0()).unwrap();
            }
            _ => return,
        }
    }
    panic!("no rest");
}

#[tokio::test]
async fn the_happy_path_has_the_shape_the_platform_checks() {
    let p = StandIn::start().await.unwrap();
    let insurer = client(&p.url, "5s", None);
    let mut s = settlement();
    drive(&mut s, insurer.as_ref(), &mut None).await;
    assert_eq!(p.problems(), Vec::<String>::new());
    assert_eq!(s.phase(), Phase::Settled);
    assert_eq!(p.infnos(), ["1101", "2201", "2203", "2204", "2206", "2207"]);
    assert_eq!(p.settlements_in_force(), 1);
    let booked = &p.settlements()[0];
    let settled = s.settled.as_ref().unwrap();
    assert_eq!(
        booked.amounts,
        [Fen(25_000), Fen(15_000), Fen::ZERO, Fen(10_000)]
    );
    assert_eq!(settled.amounts.total, booked.amounts[0]);
    assert_eq!(settled.setl_id.as_deref(), Some(booked.setl_id.as_str()));
    assert_eq!(s.patient_pays(), Fen(10_000));
}

/// CN-60: the 医保电子凭证 QR code is decoded through the provincial interface (`ec.query`) as
/// the saga's first step; 1101 and the rest carry the certificate it answered, never the QR
/// code, which the saga forgets. A QR code that does not decode backs out before anything is
/// in effect.
#[tokio::test]
async fn a_qr_voucher_is_decoded_first() {
    let p = StandIn::start().await.unwrap();
    let insurer = client(&p.url, "5s", None);
    let mut cursor = None;
    let mut s = settlement();
    s.kind = Kind::Insured {
        voucher: Voucher {
            cert_type: String::new(),
            cert_no: String::new(),
            insuplc_admdvs: None,
            qr: Some("HZQR-450103199001011234".into()),
        },
    };
    drive(&mut s, insurer.as_ref(), &mut cursor).await;
    assert_eq!(p.problems(), Vec::<String>::new());
    assert_eq!(s.phase(), Phase::Settled);
    assert_eq!(
        p.infnos(),
        ["ec.query", "1101", "2201", "2203", "2204", "2206", "2207"]
    );
    let Kind::Insured { voucher } = &s.kind else {
        panic!("{:?}", s.kind)
    };
    assert_eq!(
        (voucher.cert_type.as_str(), voucher.cert_no.as_str()),
        ("01", "EC450103199001011234")
    );
    assert_eq!(voucher.qr, None);
    // 1101 as built from the saga: the certificate, not the QR code.
    let request = insurer.request(&s, &s.calls[1].call, t0()).unwrap();
    assert!(request.contains(r#""mdtrt_cert_type":"01""#), "{request}");
    assert!(request.contains("EC450103199001011234"), "{request}");
    assert!(!request.contains("HZQR-"), "{request}");
    // A QR code the provincial interface does not decode: nothing in effect, backed out.
    let mut s = settlement();
    s.kind = Kind::Insured {
        voucher: Voucher {
            cert_type: String::new(),
            cert_no: String::new(),
            insuplc_admdvs: None,
            qr: Some("garbage".into()),
        },
    };
    drive(&mut s, insurer.as_ref(), &mut cursor).await;
    assert_eq!(s.phase(), Phase::Aborted);
    assert_eq!(p.infnos().last().map(String::as_str), Some("ec.query"));
}

#[tokio::test]
async fn a_timeout_after_the_commit_is_reversed_and_the_books_hold_one() {
    let p = StandIn::start().await.unwrap();
    let insurer = client(&p.url, "300ms", None);
    p.fault_next("2207", Fault::TimeoutAfterCommit(Duration::from_secs(2)));
    let mut s = settlement();
    drive(&mut s, insurer.as_ref(), &mut None).await;
    assert_eq!(p.problems(), Vec::<String>::new());
    assert_eq!(
        p.infnos(),
        [
            "1101", "2201", "2203", "2204", "2206", "2207", "2601", "2207"
        ]
    );
    let got = p.received();
    let first_2207 = &got[5];
    assert_eq!(got[6].omsgid.as_deref(), Some(first_2207.msgid.as_str()));
    assert_eq!(got[6].oinfno.as_deref(), Some("2207"));
    assert_ne!(got[7].msgid, first_2207.msgid);
    assert_eq!(s.phase(), Phase::Settled);
    assert_eq!(p.settlements().len(), 2, "one reversed, one in force");
    assert_eq!(p.settlements_in_force(), 1);
}

#[tokio::test]
async fn a_refused_pre_settlement_backs_out_and_cancelling_revokes() {
    let p = StandIn::start().await.unwrap();
    let insurer = client(&p.url, "5s", None);
    p.fault_next(
        "2206",
        Fault::Refuse {
            code: "-1".into(),
            message: "目录外项目".into(),
        },
    );
    let mut s = settlement();
    let mut cursor = None;
    drive(&mut s, insurer.as_ref(), &mut cursor).await;
    assert_eq!(s.phase(), Phase::Aborted);
    assert_eq!(
        (p.registrations_in_force(), p.fee_batches_in_force()),
        (0, 0)
    );

    let mut s = settlement();
    s.id = "S-2".into();
    drive(&mut s, insurer.as_ref(), &mut cursor).await;
    assert_eq!(s.phase(), Phase::Settled);
    s.cancel("refund", t0()).unwrap();
    drive(&mut s, insurer.as_ref(), &mut cursor).await;
    assert_eq!(s.phase(), Phase::Cancelled);
    assert_eq!(p.settlements_in_force(), 0);
    assert_eq!(p.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unreachable_platform_is_not_sent_and_a_field_map_renames() {
    // Nothing listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let insurer = client(&format!("http://{dead}/fsi/api"), "1s", None);
    let mut s = settlement();
    let (msgid, _) = next_msgid(INST, None, t0(), beijing()).unwrap();
    let call = s.begin(msgid, t0()).unwrap();
    let request = insurer.request(&s, &call, t0()).unwrap();
    let answer = insurer.send(&call, &request).await;
    assert!(
        matches!(
            answer.outcome,
            huizhen_domain::billing::Outcome::NotSent { .. }
        ),
        "{:?}",
        answer.outcome
    );

    let dir = std::env::temp_dir().join(format!("hz-fields-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let map = dir.join("gd.yaml");
    std::fs::write(
        &map,
        "version: 1\namounts: string\nrename:\n  mdtrt_cert_no: certNo\n",
    )
    .unwrap();
    let insurer = client("http://127.0.0.1:9/fsi/api", "1s", Some(&map));
    let request = insurer.request(&s, &call, t0()).unwrap();
    assert!(
        request.contains("\"certNo\":\"440106199001011234\""),
        "{request}"
    );
    assert!(!request.contains("mdtrt_cert_no"), "{request}");
    assert!(
        request.starts_with("{\"infno\":\"1101\",\"msgid\":\""),
        "{request}"
    );
    assert!(
        request.contains("\"inf_time\":\"2026-01-15 10:30:05\""),
        "{request}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
