//! The `plugin` step's reused `rule` instances (`Plugin::decide_reusing`): an answer keeps the
//! instance for the next call of the same step, every kind of failure ends it, the next call
//! gets a fresh one, and what belongs to a call (its time, its step's config) is its own.

use super::*;

fn annotated(d: Decision) -> BTreeMap<String, String> {
    match d {
        Decision::Annotate(h) => h.into_iter().collect(),
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_reused_instance_serves_one_step_until_a_failure_ends_it() {
    let dir = temp("reuse");
    signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    signed(&dir, "peek.wasm", "peek", "1.0.0", World::Rule);
    let reg = Registry::open(&config(&dir)).unwrap();
    let m = reg.slot("misbehave").unwrap().current().unwrap();
    let call = CallOptions {
        limits: Limits {
            deadline: Duration::from_millis(300),
            memory: 64 << 20,
            fuel: None,
        },
        ..CallOptions::default()
    };
    let fine = |p: &huizhen_plugin::Plugin, call: &CallOptions| {
        let h = annotated(p.decide_reusing(&msg("text", b"fine"), call).unwrap());
        assert_eq!(h["misbehave"], "ok");
    };
    fine(&m, &call);
    fine(&m, &call);
    assert_eq!(
        m.idle().len(),
        1,
        "the second call reused the first one's instance"
    );
    // The plugin's own error is an answer: the instance stays.
    let e = m
        .decide_reusing(&msg("text", b"refuse"), &call)
        .unwrap_err();
    assert!(matches!(e, CallError::Refused { .. }), "{e}");
    assert_eq!(m.idle().len(), 1);
    // A panic, the memory cap and the deadline each end it; the next call gets a fresh one.
    for (body, what) in [
        (&b"panic"[..], "trap"),
        (b"alloc", "memory"),
        (b"loop", "deadline"),
    ] {
        let e = m.decide_reusing(&msg("text", body), &call).unwrap_err();
        let kind_ok = match what {
            "trap" => matches!(e, CallError::Trap { .. }),
            "memory" => matches!(e, CallError::Memory { .. }),
            _ => matches!(e, CallError::Deadline { .. }),
        };
        assert!(kind_ok, "{what}: {e}");
        assert_eq!(m.idle().len(), 0, "{what} ended the instance");
        fine(&m, &call);
        assert_eq!(m.idle().len(), 1);
    }
    // Another step (its own config map, even with the same values) gets its own instance …
    let other = CallOptions {
        config: Arc::new(BTreeMap::new()),
        ..call.clone()
    };
    fine(&m, &other);
    assert_eq!(m.idle().len(), 2);
    // … and the step config `every-message: loop` makes every message spin to the deadline.
    let spin = CallOptions {
        config: Arc::new(BTreeMap::from([(
            "every-message".to_owned(),
            "loop".to_owned(),
        )])),
        ..call.clone()
    };
    let e = m.decide_reusing(&msg("text", b"fine"), &spin).unwrap_err();
    assert!(matches!(e, CallError::Deadline { .. }), "{e}");
    assert_eq!(m.stats().calls(), 11);

    // Each call reads its own message's time on the reused instance.
    let p = reg.slot("peek").unwrap().current().unwrap();
    for now_ms in [1_790_000_000_123, 1_790_000_999_000] {
        let at = CallOptions {
            now_ms,
            ..call.clone()
        };
        let h = annotated(p.decide_reusing(&msg("text", b"peek"), &at).unwrap());
        assert_eq!(h["wall-ms"], now_ms.to_string());
        assert_eq!(p.idle().len(), 1);
    }
    let _ = std::fs::remove_dir_all(dir);
}
