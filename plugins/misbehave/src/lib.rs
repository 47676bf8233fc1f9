//! A badly behaved rule plugin, for testing that the host contains it: the body `loop` never
//! returns, `alloc` asks for 1 GiB, `panic` panics, `refuse` answers an error; anything else
//! passes with the header `misbehave: ok`, unless the step's config has `every-message: loop`
//! (needs the `config` grant): then every message spins to the deadline, whatever its body (the
//! slow-plugin test of a running engine).

// The generated bindings pass records field by field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "rule",
    path: "../../sdk/wit",
});

struct Misbehave;

/// Never returns: the host's deadline interrupts it.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Guest for Misbehave {
    fn decide(msg: Message) -> Result<Decision, String> {
        match msg.body.as_slice() {
            b"loop" => spin(),
            b"alloc" => {
                let v = vec![1u8; 1 << 30];
                Ok(Decision::Drop(format!("allocated {}", v.len())))
            }
            b"panic" => panic!("misbehave was asked to panic"),
            b"refuse" => Err("refused on request".into()),
            _ if huizhen::plugin::host::config("every-message").as_deref() == Some("loop") => {
                spin()
            }
            _ => Ok(Decision::Annotate(vec![("misbehave".into(), "ok".into())])),
        }
    }
}

export!(Misbehave);
