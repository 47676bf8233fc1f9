//! huizhen-sql: SQL out of the engine, into databases that are not the engine's own. One
//! component so far, the `sql` sink ([`sink`]): parameterised statements with values from CEL
//! expressions, run in one transaction per message together with a ledger row that keeps a
//! redelivered message from being written twice.
//!
//! Architecture note: with `store/`, this is the one place that issues SQL; it never touches
//! the engine's own database.

pub mod sink;
