//! The demo's billing walk (docs/billing.md, "The demo walk"), on both backends: the shipped
//! pipelines/demo.yaml and demo/huizhen.yaml (only the stand-ins' and the HIS's addresses moved
//! to free ports). An HL7 order walks to the completed report and its ORU; the counter settles
//! with the patient's identity card against the stand-in platform; the patient confirms; the
//! stand-in finance platform issues the invoice; the HIS gets the DFT^P03 and answers AA; the
//! day's reconciliation through the API balances against the platform's statement.

use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::billing::Billing;
use huizhen_core::clock::Clock;
use huizhen_core::security::Role;
use huizhen_insurer::testing::StandIn;
use huizhen_insurer::testing::finance::FinanceStandIn;
use serde_json::json;

use crate::consultations::token;
use crate::hl7_consultation::{DemoBilling, His, doctor, free_port, order, start_demo_with, walk};
use crate::support::{Backend, JsonApi, both_backends, wait_for};

both_backends!(the_demo_consultation_ends_settled_invoiced_and_posted_to_the_his);

/// The identity card number of the demo's patient (PID-3 `NI` of the fixtures).
const CERT_NO: &str = "330523199001011238";

async fn the_demo_consultation_ends_settled_invoiced_and_posted_to_the_his(b: Backend) {
    let platform = StandIn::start().await.unwrap();
    let finance = FinanceStandIn::start().await.unwrap();
    let statements = tempfile::tempdir().unwrap();
    let (intake, his_port) = (free_port(), free_port());
    let his = His::listen(his_port).await;
    let Some(wf) = start_demo_with(
        b,
        intake,
        his_port,
        Some(DemoBilling {
            insurer: &platform.url,
            finance: &finance.url,
            statements: statements.path(),
        }),
    )
    .await
    else {
        return;
    };
    let billing = wf.engine.extensions.get::<Billing>().unwrap();
    assert!(
        billing.settings().reconciliation.is_some(),
        "the demo reconciles on a schedule"
    );
    let id = order(&wf, intake).await;
    walk(&wf, &id).await;
    let got = his.clone();
    wait_for("the ORU at the HIS", Duration::from_secs(30), || {
        let got = got.clone();
        async move { got.messages().first().cloned() }
    })
    .await;

    // At the counter: the patient's identity card; pre-settled against the platform.
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/settlement"),
            &doctor(),
            json!({"voucher": {"cert_type": "02", "cert_no": CERT_NO}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["phase"], "awaiting-confirmation", "{v}");
    let sid = v["id"].as_str().unwrap().to_owned();
    assert_eq!(platform.infnos(), ["1101", "2201", "2203", "2204", "2206"]);
    // The patient confirms the amounts shown: settled, invoiced.
    let (s, v) = wf
        .post(
            &format!("/api/settlements/{sid}/confirm"),
            &doctor(),
            json!({"by": "patient", "amounts": v["pre_settlement"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "settled", "{v}");
    assert_eq!(platform.problems(), Vec::<String>::new());
    let (_, d) = wf.get(&format!("/api/settlements/{sid}"), &doctor()).await;
    let issued = finance.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        d["invoices"][0]["bill_number"],
        issued[0].bill_number.as_str(),
        "{d}"
    );
    assert_eq!(d["invoices"][0]["bill_code"], issued[0].bill_code.as_str());

    // The DFT^P03 at the HIS, after the ORU.
    let got = his.clone();
    let dft = wait_for("the DFT^P03 at the HIS", Duration::from_secs(30), || {
        let got = got.clone();
        async move {
            got.messages()
                .into_iter()
                .find(|m| m.contains("|DFT^P03^DFT_P03|"))
        }
    })
    .await;
    let ft1: Vec<&str> = dft
        .split('\r')
        .find(|s| s.starts_with("FT1|"))
        .unwrap()
        .split('|')
        .collect();
    assert_eq!(ft1[2], sid);
    assert_eq!(ft1[6], "CG");
    assert!(
        ft1[7].starts_with("003101000010000^远程会诊^99NHSA^HZ-YCHZ-01^"),
        "{dft}"
    );
    assert_eq!(ft1[11], "300.00&CNY", "主任医师's fee: {dft}");
    assert_eq!(ft1[23], format!("{id}^HUIZHEN"));
    assert!(dft.contains("\rIN1|1|"), "insured: {dft}");
    let pid = dft.split('\r').find(|s| s.starts_with("PID|")).unwrap();
    assert!(pid.contains("^^^县人民医院^MR"), "{pid}");

    // The day's reconciliation through the API balances against the platform's statement.
    let day = (wf.clock.now() + TimeDelta::hours(8)).date_naive();
    let ops = token(Role::Admin, "ops", "*");
    let recon = format!("/api/billing/reconciliation/{day}");
    let r = JsonApi::send(
        wf.api
            .request("POST", &recon, &ops, None)
            .body(platform.statement()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["report"]["discrepancies"], json!([]), "{}", r.body);
    assert_eq!(r.body["report"]["matched"], 1, "{}", r.body);
}
