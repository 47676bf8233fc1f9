//! Device → patient bindings (issue 25, migration 0022): which patient record a device
//! measured for, and when. The domain decides which binding a reading goes to
//! (`huizhen_domain::vitals::binding`); this file only stores and reads them, and [`cache`]
//! keeps them in memory for the `device_reading` step.

mod cache;
pub use cache::{DeviceCache, DeviceLookup, Stamp};

use chrono::{DateTime, Utc};
use huizhen_domain::vitals::binding::{DeviceBinding, check_new};
use sqlx::{Connection, Row};

use crate::message::{new_id, now_ms};
use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// A stored binding with its id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BindingRow {
    pub id: String,
    #[serde(flatten)]
    pub binding: DeviceBinding,
    pub created_by: String,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Inconsistent(format!("device binding time {ms} out of range")))
}

fn row(r: &sqlx::any::AnyRow) -> Result<BindingRow> {
    let get = |c: &str| -> Result<String> { r.try_get(c).map_err(q("decode device binding")) };
    let to: Option<i64> = r.try_get("valid_to").map_err(q("decode device binding"))?;
    Ok(BindingRow {
        id: get("id")?,
        binding: DeviceBinding {
            device: get("device")?,
            facility: get("facility")?,
            local_id: get("local_id")?,
            valid_from: time(
                r.try_get("valid_from")
                    .map_err(q("decode device binding"))?,
            )?,
            valid_to: to.map(time).transpose()?,
        },
        created_by: get("created_by")?,
    })
}

/// Advances the binding change counter (migration 0026) inside `tx`, first: concurrent
/// changes of bindings wait for each other here, and every in-memory copy drops its bindings.
async fn changed(tx: &mut sqlx::AnyConnection) -> Result<()> {
    sqlx::query("UPDATE device_sync SET seq = seq + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .map_err(q("advance the device binding counter"))?;
    Ok(())
}

const COLUMNS: &str = "SELECT id, facility, device, local_id, valid_from, valid_to, created_by FROM device_bindings WHERE facility = ";

impl Store {
    /// Every binding of `device` in `facility`, oldest first.
    pub async fn device_bindings(&self, facility: &str, device: &str) -> Result<Vec<BindingRow>> {
        let mut s = Sql::new(COLUMNS.into());
        s.bind(facility);
        s.push(" AND device = ");
        s.bind(device);
        s.push(" ORDER BY valid_from");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read device bindings"))?;
        rows.iter().map(row).collect()
    }

    /// Every binding of `facility` (all facilities when `None`), by device then time.
    pub async fn device_bindings_all(&self, facility: Option<&str>) -> Result<Vec<BindingRow>> {
        let mut s = Sql::new(
            "SELECT id, facility, device, local_id, valid_from, valid_to, created_by FROM device_bindings"
                .into(),
        );
        if let Some(f) = facility {
            s.push(" WHERE facility = ");
            s.bind(f);
        }
        s.push(" ORDER BY facility, device, valid_from");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read device bindings"))?;
        rows.iter().map(row).collect()
    }

    /// Adds a binding; refused (`Ok(Err(why))`) when its period is empty or overlaps another
    /// binding of the device. The check, the insert and the audit row (`audit`, when given)
    /// are one transaction.
    pub async fn device_bind(
        &self,
        b: &DeviceBinding,
        by: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<std::result::Result<String, String>> {
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin device binding"))?;
        changed(&mut tx).await?;
        let mut s = Sql::new(COLUMNS.into());
        s.bind(b.facility.as_str());
        s.push(" AND device = ");
        s.bind(b.device.as_str());
        let existing = s
            .query()
            .fetch_all(&mut *tx)
            .await
            .map_err(q("read device bindings"))?
            .iter()
            .map(|r| row(r).map(|r| r.binding))
            .collect::<Result<Vec<_>>>()?;
        if let Err(why) = check_new(&existing, b) {
            return Ok(Err(why));
        }
        let id = new_id();
        let mut s = Sql::new(
            "INSERT INTO device_bindings (id, facility, device, local_id, valid_from, valid_to, created_at, created_by) VALUES ("
                .into(),
        );
        s.bind(id.as_str());
        for v in [&b.facility, &b.device, &b.local_id] {
            s.push(", ");
            s.bind(v.as_str());
        }
        s.push(", ");
        s.bind(ms(b.valid_from));
        s.push(", ");
        s.bind(b.valid_to.map(ms));
        s.push(", ");
        s.bind(now_ms());
        s.push(", ");
        s.bind(by);
        s.push(")");
        s.query()
            .execute(&mut *tx)
            .await
            .map_err(q("insert device binding"))?;
        if let Some(e) = audit {
            let mut e = e.clone();
            e.detail = format!("{}; binding {id}", e.detail);
            audit::append(&mut tx, &e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit device binding"))?;
        Ok(Ok(id))
    }

    /// Ends the open binding of `device` at `at` (the device was handed back), with the audit
    /// row (`audit`, when given) in the same transaction. Returns whether there was one open
    /// at that time (nothing is written when there was not).
    pub async fn device_unbind(
        &self,
        facility: &str,
        device: &str,
        at: DateTime<Utc>,
        audit: Option<&AuditEvent>,
    ) -> Result<bool> {
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin device unbinding"))?;
        changed(&mut tx).await?;
        let mut s = Sql::new("UPDATE device_bindings SET valid_to = ".into());
        s.bind(ms(at));
        s.push(" WHERE facility = ");
        s.bind(facility);
        s.push(" AND device = ");
        s.bind(device);
        s.push(" AND valid_to IS NULL AND valid_from < ");
        s.bind(ms(at));
        let n = s
            .query()
            .execute(&mut *tx)
            .await
            .map_err(q("end device binding"))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        if let Some(e) = audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit device unbinding"))?;
        Ok(true)
    }
}
