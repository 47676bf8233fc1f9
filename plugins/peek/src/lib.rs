//! A rule plugin that reaches for what WASI offers beside the host interface, for testing that
//! the host gives it only what its manifest grants: the body `print` writes a line to stdout and
//! one to stderr; anything else annotates the message with `wall-ms` (the WASI wall clock, in
//! milliseconds since 1970) and `random` (a hash keyed by std's `RandomState`, which seeds
//! itself from `wasi:random`).

// The generated bindings pass records field by field.
#![allow(clippy::too_many_arguments)]

use std::hash::BuildHasher as _;

wit_bindgen::generate!({
    world: "rule",
    path: "../../sdk/wit",
});

struct Peek;

impl Guest for Peek {
    fn decide(msg: Message) -> Result<Decision, String> {
        if msg.body == b"print" {
            println!("peek on stdout: {}", msg.id);
            eprintln!("peek on stderr: {}", msg.id);
            return Ok(Decision::Pass);
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(-1, |d| d.as_millis() as i64);
        let random = std::collections::hash_map::RandomState::new().hash_one(0u64);
        Ok(Decision::Annotate(vec![
            ("wall-ms".into(), wall.to_string()),
            ("random".into(), random.to_string()),
        ]))
    }
}

export!(Peek);
