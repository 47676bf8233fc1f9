//! huizhen-file: files out of the engine. One component so far, the `file` sink ([`sink`]):
//! one file per message in a folder, written to a temporary name, synced and renamed, never
//! written twice for the same message.

pub mod sink;
