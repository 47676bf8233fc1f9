//! Runs of scheduled workflow jobs: one row per job and tick, inserted by whichever engine
//! process runs the tick first, so a tick runs once however many processes share the store.

use sqlx::Row;

use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

impl Store {
    /// Claims tick `tick` of `job`: `true` for the one caller that gets it, `false` for every
    /// other (the tick ran or is running elsewhere).
    pub async fn claim_job_tick(&self, job: &str, tick: &str) -> Result<bool> {
        let mut s =
            Sql::new("INSERT INTO workflow_job_runs (job, tick, started_at) VALUES (".into());
        s.bind(job);
        s.push(", ");
        s.bind(tick);
        s.push(", ");
        s.bind(crate::message::now_ms());
        s.push(") ON CONFLICT (job, tick) DO NOTHING");
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("claim job tick"))?;
        Ok(r.rows_affected() > 0)
    }

    /// Records how a claimed tick ended (`ok: <what>` or `failed: <why>`).
    pub async fn finish_job_tick(&self, job: &str, tick: &str, outcome: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE workflow_job_runs SET finished_at = ".into());
        s.bind(crate::message::now_ms());
        s.push(", outcome = ");
        s.bind(outcome.chars().take(500).collect::<String>());
        s.push(" WHERE job = ");
        s.bind(job);
        s.push(" AND tick = ");
        s.bind(tick);
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("finish job tick"))?;
        Ok(())
    }

    /// How tick `tick` of `job` ended: `None` when it never ran, `Some(None)` while running.
    pub async fn job_tick_outcome(&self, job: &str, tick: &str) -> Result<Option<Option<String>>> {
        let mut s = Sql::new("SELECT outcome FROM workflow_job_runs WHERE job = ".into());
        s.bind(job);
        s.push(" AND tick = ");
        s.bind(tick);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read job tick"))?;
        row.map(|r| r.try_get("outcome"))
            .transpose()
            .map_err(q("decode job tick"))
    }
}
