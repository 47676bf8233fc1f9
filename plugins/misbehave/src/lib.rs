//! A badly behaved rule plugin, for testing that the host contains it: the body `loop` never
//! returns, `alloc` asks for 1 GiB, `panic` panics, `refuse` answers an error; anything else
//! passes with the header `misbehave: ok`.

// The generated bindings pass records field by field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "rule",
    path: "../../sdk/wit",
});

struct Misbehave;

impl Guest for Misbehave {
    fn decide(msg: Message) -> Result<Decision, String> {
        match msg.body.as_slice() {
            b"loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"alloc" => {
                let v = vec![1u8; 1 << 30];
                Ok(Decision::Drop(format!("allocated {}", v.len())))
            }
            b"panic" => panic!("misbehave was asked to panic"),
            b"refuse" => Err("refused on request".into()),
            _ => Ok(Decision::Annotate(vec![("misbehave".into(), "ok".into())])),
        }
    }
}

export!(Misbehave);
