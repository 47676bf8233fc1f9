//! Key rotation covers the FHIR store (CN-31): `huizhen keys rotate` re-seals every version of
//! every stored resource with the new data key; afterwards a key ring without the old key
//! reads them, search terms (blind indexes) still find them, and `fhir_versions` refuses any
//! other change than a re-sealing.

use huizhen_core::crypto::{Cipher, EncryptionConfig, Keyring};
use huizhen_core::store::fhir::{Criterion, FhirQuery};
use serde_json::json;
use sqlx::Row;

use super::{lab_bundle, send, start};
use crate::consultations::SECRET;
use crate::support::{Backend, both_backends};

both_backends!(key_rotation_re_seals_the_fhir_store);

async fn sealed_keys(url: &str) -> Vec<Option<String>> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query("SELECT body FROM fhir_versions")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| Cipher::key_of_text(&r.get::<String, _>("body")))
        .collect()
}

async fn key_rotation_re_seals_the_fhir_store(b: Backend) {
    let Some(wf) = start(b).await else { return };
    send(
        &wf,
        &lab_bundle(
            "MRN-R1",
            "ACC-R1",
            "2024-03-05",
            &[("718-7", "Hb", 1.0), ("6690-2", "WBC", 2.0)],
        ),
    )
    .await;
    // A second version of the report.
    let store = wf.engine.store.clone();
    let page = store
        .fhir_search(&FhirQuery {
            resource_type: "DiagnosticReport".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut report: serde_json::Value = serde_json::from_str(&page.rows[0].body).unwrap();
    let rid = page.rows[0].id.clone();
    report["status"] = json!("amended");
    send(&wf, &json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": report, "request": {"method": "PUT", "url": format!("DiagnosticReport/{rid}")}}]})).await;
    let (db, _ca) = wf.stop().await;

    let before = sealed_keys(&db.url).await;
    assert_eq!(before.len(), 5, "four resources, one of them twice");
    assert!(
        before.iter().all(|k| k.as_deref() == Some("k1")),
        "{before:?}"
    );
    {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        for sql in [
            "UPDATE fhir_versions SET message_id = 'other'",
            "UPDATE fhir_versions SET body = '{}'",
            "DELETE FROM fhir_versions",
        ] {
            let refused = sqlx::query(sql).execute(&pool).await;
            assert!(refused.is_err(), "{sql} was allowed");
            assert!(
                refused.unwrap_err().to_string().contains("append-only"),
                "{sql}"
            );
        }
        pool.close().await;
    }

    let dir = db.dir.path();
    let config = dir.join("rotate.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\n  audit: {{ key_file: \"{}\", checkpoint_file: \"{}\" }}\npipelines: []\n",
            db.url,
            dir.join("keys").display(),
            dir.join("audit.key").display(),
            dir.join("audit.checkpoints").display(),
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&config)
        .args(["keys", "rotate", "--batch", "2"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pass 1, fhir_versions:"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let active = stdout
        .split("active data key: ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no active key in {stdout}"))
        .to_owned();
    assert_ne!(active, "k1");
    let after = sealed_keys(&db.url).await;
    assert!(
        after.iter().all(|k| k.as_deref() == Some(active.as_str())),
        "{after:?}"
    );

    // The old key can go: a ring with the index key and the new one reads every version, and
    // the search terms (keyed with the index key, which does not rotate) still match.
    let keys = std::fs::read_to_string(dir.join("keys")).unwrap();
    let only_new: String = keys
        .lines()
        .filter(|l| l.starts_with("index ") || l.starts_with(&format!("{active} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    let retired = dir.join("keys-new-only");
    std::fs::write(&retired, only_new).unwrap();
    let ring = Keyring::from_config(&EncryptionConfig {
        keys_file: retired,
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    let fresh = crate::support::store(&db).await.with_keyring(Some(ring));
    let v1 = fresh
        .fhir_vread("DiagnosticReport", &rid, 1)
        .await
        .unwrap()
        .unwrap();
    assert!(v1.body.contains("\"final\""), "{}", v1.body);
    let v2 = fresh
        .fhir_read("DiagnosticReport", &rid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.version, 2);
    let found = fresh
        .fhir_search(&FhirQuery {
            resource_type: "Patient".into(),
            criteria: vec![Criterion::Terms {
                param: "name".into(),
                any_of: vec!["张伟".into()],
            }],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.total, 1);
    assert!(found.rows[0].body.contains("MRN-R1"));
}
