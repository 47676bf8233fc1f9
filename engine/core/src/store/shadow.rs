//! Plugin shadow mode: the facilities for which a step's shadow plugin version was promoted to
//! decide. Migration 0028.

use sqlx::Row;

use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

impl Store {
    /// The facilities whose messages `plugin`'s shadow decides in `pipeline`.
    pub async fn shadow_promotions(&self, pipeline: &str, plugin: &str) -> Result<Vec<String>> {
        let mut s = Sql::new("SELECT facility FROM shadow_promotions WHERE pipeline = ".into());
        s.bind(pipeline);
        s.push(" AND plugin = ");
        s.bind(plugin);
        s.push(" ORDER BY facility");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read shadow promotions"))?;
        rows.iter()
            .map(|r| r.try_get("facility"))
            .collect::<std::result::Result<_, _>>()
            .map_err(q("decode shadow promotions"))
    }

    /// Promotes (`true`) or rolls back (`false`) `plugin`'s shadow for `facility` in
    /// `pipeline`. Returns whether anything changed.
    pub async fn set_shadow_promotion(
        &self,
        pipeline: &str,
        plugin: &str,
        facility: &str,
        promoted: bool,
        actor: &str,
    ) -> Result<bool> {
        let s = if promoted {
            let mut s = Sql::new(
                "INSERT INTO shadow_promotions (pipeline, plugin, facility, promoted_at, actor) VALUES ("
                    .into(),
            );
            s.bind(pipeline);
            s.push(", ");
            s.bind(plugin);
            s.push(", ");
            s.bind(facility);
            s.push(", ");
            s.bind(crate::message::now_ms());
            s.push(", ");
            s.bind(actor);
            s.push(") ON CONFLICT (pipeline, plugin, facility) DO NOTHING");
            s
        } else {
            let mut s = Sql::new("DELETE FROM shadow_promotions WHERE pipeline = ".into());
            s.bind(pipeline);
            s.push(" AND plugin = ");
            s.bind(plugin);
            s.push(" AND facility = ");
            s.bind(facility);
            s
        };
        let done = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("write shadow promotion"))?;
        Ok(done.rows_affected() > 0)
    }
}
