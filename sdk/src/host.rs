//! What the engine offers a plugin: `log`, `now_ms` (the message's time: the same on every
//! replay) and `config` (the step's `config:` values). Each needs its capability in the
//! plugin's manifest (`[package.metadata.huizhen] capabilities = ["log", "clock", "config"]`);
//! a call without it fails the message with the capability named. The same grants govern what
//! std reaches through WASI: `println!`/`eprintln!` reach the engine's log only with `log`
//! (dropped without it), `SystemTime::now()` needs `clock` (and reads the message's time), and
//! random numbers are a fixed sequence unless the manifest asks for `random`.
//!
//! Natively (unit tests), these read and write the context of [`crate::testing`].

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(target_arch = "wasm32")]
mod imp {
    #[cfg(feature = "coverage")]
    use crate::coverage::huizhen::plugin::host as wit;
    #[cfg(feature = "match-weights")]
    use crate::match_weights::huizhen::plugin::host as wit;
    #[cfg(feature = "rule")]
    use crate::rule::huizhen::plugin::host as wit;
    #[cfg(feature = "scorer")]
    use crate::scorer::huizhen::plugin::host as wit;
    #[cfg(feature = "triage")]
    use crate::triage::huizhen::plugin::host as wit;

    use super::Level;

    pub fn log(level: Level, message: &str) {
        let l = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(l, message);
    }

    pub fn now_ms() -> i64 {
        wit::now_ms()
    }

    pub fn config(key: &str) -> Option<String> {
        wit::config(key)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use crate::testing::CONTEXT;

    pub fn log(level: Level, message: &str) {
        CONTEXT.with(|c| c.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn now_ms() -> i64 {
        CONTEXT.with(|c| c.borrow().now_ms)
    }

    pub fn config(key: &str) -> Option<String> {
        CONTEXT.with(|c| c.borrow().config.get(key).cloned())
    }
}

/// Writes to the engine's log, tagged with the plugin's name and version.
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}

/// The time of the message being handled, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    imp::now_ms()
}

/// A value of the step's `config:` block.
pub fn config(key: &str) -> Option<String> {
    imp::config(key)
}
