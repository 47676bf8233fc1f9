//! The compiled-function cache behind Cranelift's incremental compilation (see [`crate::engine`]).
//!
//! In memory only, for the life of the process: what it holds is machine code this process
//! compiled itself, never bytes read from disk (a cache on disk would be code that anyone able
//! to write that folder could have the engine run). Bounded: past [`BUDGET`] bytes it starts
//! afresh, so a long-running engine swapping many versions does not grow without end.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of keys and compiled functions kept at most.
const BUDGET: usize = 64 << 20;

/// See the module docs.
#[derive(Debug, Default)]
pub struct FunctionCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > BUDGET {
            return false;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.bytes + size > BUDGET {
            inner.map.clear();
            inner.bytes = 0;
        }
        if let Some(old) = inner.map.insert(key.to_vec(), value) {
            inner.bytes -= key.len() + old.len();
        }
        inner.bytes += size;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    #[test]
    fn keeps_what_it_was_given_and_starts_afresh_past_its_budget() {
        let c = FunctionCache::default();
        assert!(c.get(b"k").is_none());
        assert!(c.insert(b"k", vec![1, 2, 3]));
        assert_eq!(c.get(b"k").as_deref(), Some(&[1u8, 2, 3][..]));
        assert!(c.insert(b"k", vec![4]), "replaced");
        assert_eq!(c.inner.lock().unwrap().bytes, 2);
        assert!(
            !c.insert(b"big", vec![0; BUDGET]),
            "larger than the whole budget"
        );
        assert!(c.insert(b"half", vec![0; BUDGET / 2]));
        assert!(
            c.insert(b"other", vec![0; BUDGET / 2]),
            "past the budget: starts afresh"
        );
        assert!(c.get(b"k").is_none() && c.get(b"half").is_none());
        assert!(c.get(b"other").is_some());
    }
}
