//! `cron`: emits a message on a schedule (reconciliation runs, reminders, polling triggers).
//!
//! ```yaml
//! source:
//!   cron: { schedule: "0 */5 * * * *", body: '{"job": "reconcile"}', kind: json }
//! ```
//! The schedule has **six fields, seconds first**: `sec min hour day-of-month month day-of-week`
//! (an optional seventh is the year), evaluated in UTC. `0 */5 * * * *` is every five minutes
//! on the minute; a classic five-field crontab line such as `*/5 * * * *` is rejected with a
//! hint. Each tick's dedup key is `cron:<tick time>`, so a restart never emits a tick twice.
//! Ticks that fall while the engine is stopped are not emitted afterwards.

use std::str::FromStr;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Source, SourceConfig, SourceContext};
use crate::message::NewMessage;
use crate::runner::BuildContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSourceConfig {
    /// Six fields, seconds first (UTC).
    pub schedule: String,
    /// The body of each emitted message.
    #[serde(default = "default_body")]
    pub body: String,
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_body() -> String {
    "{}".into()
}

fn default_kind() -> String {
    "json".into()
}

pub(crate) fn parse_schedule(s: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(s).map_err(|e| {
        let fields = s.split_whitespace().count();
        let hint = if fields == 5 {
            format!(
                " (this looks like a five-field crontab line; Huizhen's schedules have six fields with seconds first, e.g. \"0 {s}\")"
            )
        } else {
            " (six fields, seconds first: sec min hour day-of-month month day-of-week, e.g. \"0 */5 * * * *\")".to_owned()
        };
        format!("invalid cron schedule {s:?}: {e}{hint}")
    })
}

#[typetag::deserialize(name = "cron")]
impl SourceConfig for CronSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        let schedule = parse_schedule(&self.schedule)?;
        Ok(Box::new(CronSource {
            config: self.clone(),
            schedule,
        }))
    }
}

struct CronSource {
    config: CronSourceConfig,
    schedule: cron::Schedule,
}

impl Source for CronSource {
    fn describe(&self) -> String {
        format!("cron {:?}", self.config.schedule)
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            loop {
                let Some(next) = self.schedule.upcoming(chrono::Utc).next() else {
                    return Ok(());
                };
                let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                let mut m = NewMessage::new(
                    ctx.pipeline.name(),
                    ctx.pipeline.facility(),
                    &self.config.kind,
                    self.config.body.clone().into_bytes(),
                );
                m.source = format!("cron {}", self.config.schedule);
                m.dedup_key = Some(format!("cron:{}", next.to_rfc3339()));
                m.headers.insert("scheduled-at".into(), next.to_rfc3339());
                // A journal outage loses nothing but this tick: retry it a few times.
                let mut tries = 0;
                while let Err(e) = ctx.pipeline.submit(m.clone()).await {
                    tries += 1;
                    tracing::warn!(pipeline = ctx.pipeline.name(), error = %e, "cron tick not journaled");
                    if tries >= 5 || ctx.shutdown.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_seconds_first() {
        let s = parse_schedule("0 */5 * * * *").unwrap();
        let after = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:02:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let next: Vec<_> = s.after(&after).take(2).map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            next,
            ["2026-01-01T10:05:00+00:00", "2026-01-01T10:10:00+00:00"]
        );
    }

    #[test]
    fn five_fields_get_a_hint() {
        let err = parse_schedule("*/5 * * * *").unwrap_err();
        assert!(err.contains("\"0 */5 * * * *\""), "{err}");
    }
}
