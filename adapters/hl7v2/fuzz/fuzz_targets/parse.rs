//! Fuzz target: raw bytes → charset decode → parse → every accessor (see `../exercise.rs`).
//! Run with `cargo fuzz run parse` from `adapters/hl7v2/fuzz` (nightly and cargo-fuzz needed);
//! seeds live in `corpus/parse/`, and a crash reproducer added there is replayed by
//! `cargo test -p huizhen-hl7`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| exercise::exercise(data));
