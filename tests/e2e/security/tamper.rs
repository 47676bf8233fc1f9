//! Tamper detection of the audit trail: a changed, a deleted and a reordered row, named by
//! `verify_audit` and by `huizhen audit verify`.

use crate::support::{Backend, fresh_db, store};

/// Five events, then one kind of tampering; `verify_audit` and `huizhen audit verify` name it.
async fn tampered(sql: &str) -> (Vec<String>, std::process::Output) {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let s = store(&db).await;
    for i in 0..5 {
        s.audit(&crate::audit::event(i)).await.unwrap();
    }
    assert!(s.verify_audit().await.unwrap().problems.is_empty());
    // The test's own audit key and checkpoint file (the defaults under the working directory
    // are shared by every test that runs the binary there).
    let config = db.dir.path().join("huizhen.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nsecurity:\n  audit: {{ key_file: {}, checkpoint_file: {} }}\npipelines: []\n",
            db.dir.path().join("audit.key").display(),
            db.dir.path().join("audit.checkpoints").display()
        ),
    )
    .unwrap();
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .arg("-c")
            .arg(&config)
            .args(["--database-url", &db.url, "audit", "verify"])
            .output()
            .unwrap()
    };
    let cli_ok = verify();
    assert!(cli_ok.status.success(), "{cli_ok:?}");
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        // Through SQL the table is append-only.
        let refused = sqlx::raw_sql("UPDATE audit_events SET actor = 'x' WHERE seq = 2")
            .execute(&mut c)
            .await;
        assert!(refused.is_err(), "the trigger refuses changes");
        // Someone with the file removes the triggers first.
        sqlx::raw_sql("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let problems = s.verify_audit().await.unwrap().problems;
    (problems, verify())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_a_changed_a_deleted_and_a_reordered_row() {
    let (p, out) = tampered("UPDATE audit_events SET resource_id = 'm9' WHERE seq = 3").await;
    assert_eq!(
        p,
        vec!["audit row 3: its content does not match its hash (changed after it was written)"]
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit row 3: its content"));

    let (p, out) = tampered("DELETE FROM audit_events WHERE seq = 2").await;
    assert!(p[0].contains("audit rows 2..2 are missing"), "{p:?}");
    assert!(
        p.iter()
            .any(|x| x.contains("audit row 3: it does not follow"))
    );
    assert_eq!(out.status.code(), Some(1));

    let (p, _) = tampered("DELETE FROM audit_events WHERE seq = 5").await;
    assert_eq!(p, vec!["audit rows 5..5 are missing at the end (deleted)"]);

    // Swap rows 2 and 4 (their content moves, their positions stay).
    let (p, out) = tampered(
        "UPDATE audit_events SET seq = -2 WHERE seq = 2; UPDATE audit_events SET seq = 2 WHERE seq = 4; UPDATE audit_events SET seq = 4 WHERE seq = -2;",
    )
    .await;
    assert!(p.iter().any(|x| x.starts_with("audit row 2")), "{p:?}");
    assert!(p.iter().any(|x| x.starts_with("audit row 4")), "{p:?}");
    assert!(!out.status.success());
}
