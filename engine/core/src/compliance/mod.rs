//! The China rules at run time (issue 20; the rules themselves are `huizhen_domain::compliance`
//! and the workflow's `workflow.compliance`): the processing-activity record generated from the
//! configuration ([`record`], CN-41) and the retention purge ([`purge`], CN-30).

pub mod purge;
pub mod record;
pub mod regulator;

pub use purge::{PurgeReport, purge};
pub use record::{ProcessingRecord, record};
