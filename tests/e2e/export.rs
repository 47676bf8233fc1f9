//! `huizhen export --deidentify default` through the real binary: HL7 bodies journaled with
//! LF and CRLF terminators leave no patient data, every segment the default does not name is
//! gone, and the audit event is on the record before any line is printed (an export whose
//! stdout is closed fails cleanly, without a panic, and is still audited).

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::NewMessage;
use huizhen_core::store::audit::AuditFilter;

use crate::support::{Backend, TestDb, fresh_db, loaded};

const KEY: &str = "export-test-key-0123456789";

/// An admission with the segments that leaked before (NK1, PV1, IN1, GT1, MRG, OBX-5 text,
/// PID-2/4/18/20) and a Chinese birth date.
const ADT: &str = "MSH|^~\\&|HIS|县人民医院|HUIZHEN|省远程会诊中心|20261123093000||ADT^A01^ADT_A01|HIS000123|P|2.5\rEVN|A01|20261123093000\rPID|1|OLD-778|330523199001011238^^^县人民医院^MR|ALT-991|张^三丰||19900101|M|||浙江省湖州市安吉县递铺街道^^湖州^浙江^313300||0572-5551234||||AC-20261123|330523199001011238||DL-5566\rNK1|1|李^四|SPO^配偶||13900139000\rPV1|1|I|内科^301^2||||D001^李^医生\rIN1|1|NCMS|INS01|安吉县医保局||||||||||||张^三丰\rGT1|1||张^大山||递铺街道8号\rMRG|0009998887^^^HIS^MR||||||张^三峰\rOBX|1|TX|NOTE||患者张三丰自述胸痛|||||F\rOBX|2|NM|GLU^葡萄糖||7.8|mmol/L|3.9-6.1|H|||F\rZPI|1|医保|33052300001";

const SECRETS: &[&str] = &[
    "张",
    "三丰",
    "李^四",
    "大山",
    "330523199001011238",
    "OLD-778",
    "ALT-991",
    "AC-20261123",
    "DL-5566",
    "0009998887",
    "33052300001",
    "0572-5551234",
    "13900139000",
    "递铺",
    "湖州",
    "313300",
    "19900101",
    "2024年3月5日",
    "301^2",
    "HIS000123",
    "胸痛",
    "医保局",
];

async fn journal_fixtures() -> (Engine, TestDb) {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let adt = "version: 1\nname: adt\nfacility: hosp-a\nsource:\n  http: { path: /in/adt, kind: hl7v2 }\nsinks:\n  - journal: {}\n";
    let rec = "version: 1\nname: rec\nfacility: hosp-a\nsource:\n  http: { path: /in/rec, kind: json }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[adt, rec])).await.unwrap();
    let adt = engine.pipeline("adt").unwrap();
    // LF, CRLF and a full-width / Chinese birth date: the old export split on CR only and
    // sliced bytes, so these went out in clear or panicked.
    adt.submit(NewMessage::new(
        "adt",
        "",
        "hl7v2",
        ADT.replace('\r', "\n").into_bytes(),
    ))
    .await
    .unwrap();
    adt.submit(NewMessage::new(
        "adt",
        "",
        "hl7v2",
        ADT.replace('\r', "\r\n")
            .replace("HIS000123", "HIS000124")
            .into_bytes(),
    ))
    .await
    .unwrap();
    adt.submit(NewMessage::new(
        "adt",
        "",
        "hl7v2",
        ADT.replace("|19900101|", "|2024年3月5日|")
            .replace("HIS000123", "HIS000125")
            .into_bytes(),
    ))
    .await
    .unwrap();
    engine
        .pipeline("rec")
        .unwrap()
        .submit(NewMessage::new(
            "rec",
            "",
            "json",
            r#"{"record":"patient","names":[{"text":"张三丰"}],"sex":{"code":"M"},"birth_date":{"raw":"19900101"},"home_phones":[{"number":"13900139000"}]}"#
                .as_bytes()
                .to_vec(),
        ))
        .await
        .unwrap();
    (engine, db)
}

fn config(db: &TestDb) -> std::path::PathBuf {
    let dir = db.dir.path();
    let config = dir.join("export.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  encryption: {{ keys_file: \"{}\" }}\n  audit: {{ key_file: \"{d}/audit.key\", checkpoint_file: \"{d}/audit.checkpoints\" }}\npipelines: []\n",
            db.url,
            dir.join("keys").display(),
            d = dir.display()
        ),
    )
    .unwrap();
    config
}

fn export_command(db: &TestDb) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"));
    c.arg("-c")
        .arg(config(db))
        .args(["export", "--deidentify", "default"])
        .env("HUIZHEN_DEID_KEY", KEY);
    c
}

async fn export_events(engine: &Engine) -> usize {
    engine
        .store
        .audit_events(&AuditFilter {
            action: Some("message.export".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lf_crlf_and_chinese_dates_export_no_patient_data() {
    let (engine, db) = journal_fixtures().await;
    let out = export_command(&db).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 4, "{text}\n{stderr}");
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} exported:\n{text}");
    }
    let mut hl7 = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] != "hl7v2" {
            assert_eq!(v["body"]["sex"]["code"], "M", "{line}");
            continue;
        }
        hl7 += 1;
        let body = v["body"].as_str().unwrap();
        let names: Vec<&str> = body.split('\r').map(|s| &s[..3]).collect();
        assert_eq!(
            names,
            ["MSH", "EVN", "PID", "PV1", "MRG", "OBX", "OBX"],
            "{body}"
        );
        assert!(body.contains("|ADT^A01^ADT_A01|"), "{body}");
        assert!(
            body.contains("\rPID|1||h:"),
            "PID-2 gone, PID-3 hashed: {body}"
        );
        assert!(body.contains("|M"), "sex stays: {body}");
        assert!(body.contains("\rPV1|1|I|内科\r"), "the ward only: {body}");
        assert!(
            body.contains("|7.8|mmol/L|"),
            "numeric results stay: {body}"
        );
    }
    assert_eq!(hl7, 3);
    assert_eq!(export_events(&engine).await, 1);
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The audit event comes first: with stdout closed before anything is printed, the export
/// fails with an error (the old one panicked in `println!` and never wrote the event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_cannot_print_fails_cleanly_and_is_still_audited() {
    let (engine, db) = journal_fixtures().await;
    let mut child = export_command(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("writing the export to stdout"), "{stderr}");
    assert_eq!(export_events(&engine).await, 1, "{stderr}");
    engine.shutdown(Duration::from_secs(5)).await;
}
