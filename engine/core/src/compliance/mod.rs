//! The China rules at run time (issue 20; the rules themselves are `huizhen_domain::compliance`
//! and the workflow's `workflow.compliance`): the processing-activity record generated from the
//! configuration ([`record`], CN-41).

pub mod record;

pub use record::{ProcessingRecord, record};
