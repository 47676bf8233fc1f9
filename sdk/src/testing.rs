//! Native unit tests of a plugin: the config and clock its host calls see, and what it logged.
//!
//! ```
//! use huizhen_sdk::{host, testing};
//! testing::with_config([("rate", "80")], || {
//!     assert_eq!(host::config("rate").as_deref(), Some("80"));
//!     host::info("hello");
//! });
//! assert_eq!(testing::logs(), vec!["INFO hello".to_owned()]);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host::Level;

#[derive(Debug, Default)]
pub(crate) struct Context {
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) now_ms: i64,
    pub(crate) logs: Vec<(Level, String)>,
}

thread_local! {
    pub(crate) static CONTEXT: RefCell<Context> = RefCell::new(Context::default());
}

/// Runs `f` with these `config` values (the rest of the context is kept).
pub fn with_config<K, V, R>(pairs: impl IntoIterator<Item = (K, V)>, f: impl FnOnce() -> R) -> R
where
    K: Into<String>,
    V: Into<String>,
{
    let config: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let old = CONTEXT.with(|c| std::mem::replace(&mut c.borrow_mut().config, config));
    let r = f();
    CONTEXT.with(|c| c.borrow_mut().config = old);
    r
}

/// What `host::now_ms()` answers from now on, on this thread.
pub fn set_now_ms(ms: i64) {
    CONTEXT.with(|c| c.borrow_mut().now_ms = ms);
}

/// What the plugin logged on this thread so far (`LEVEL message`), and forget it.
pub fn logs() -> Vec<String> {
    CONTEXT.with(|c| {
        c.borrow_mut()
            .logs
            .drain(..)
            .map(|(l, m)| format!("{} {m}", format!("{l:?}").to_uppercase()))
            .collect()
    })
}
