//! What the key-rotation tests share: the data key of every sealed value of some columns, and
//! one pass of `Store::rekey_batch` over some tables.

use sqlx::Row;

/// The data key each sealed value of each (table, column) is sealed with (NULLs left out),
/// labelled `table.column`.
pub async fn sealed_keys(
    url: &str,
    columns: &[(&str, &str)],
) -> Vec<(String, Vec<Option<String>>)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut out = Vec::new();
    for (table, column) in columns {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {column} AS v FROM {table} WHERE {column} IS NOT NULL"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        let keys = rows
            .iter()
            .map(|r| huizhen_core::crypto::Cipher::key_of_text(&r.get::<String, _>("v")))
            .collect();
        out.push((format!("{table}.{column}"), keys));
    }
    pool.close().await;
    out
}

/// One pass of re-sealing over `tables` in batches of `batch`; the rows rewritten.
pub async fn rekey_pass(store: &huizhen_core::store::Store, tables: &[&str], batch: i64) -> u64 {
    let mut total = 0;
    for table in tables {
        let mut after = None::<String>;
        loop {
            let b = store
                .rekey_batch(table, after.as_deref(), batch)
                .await
                .unwrap();
            total += b.rewritten;
            match b.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    total
}
