//! The WASI (`wasi:*@0.2`) a plugin gets, interface by interface, by what its manifest grants.
//!
//! A guest built for `wasm32-wasip2` imports part of WASI through Rust's std (the CLI streams,
//! the environment, exit; the clocks when it reads the time; `wasi:random/insecure-seed` when
//! it makes a `HashMap`). The host links only these, per interface:
//!
//! | interface | linked | what the plugin sees |
//! |---|---|---|
//! | `wasi:io/{error,poll,streams}` | always | the plumbing of the streams below |
//! | `wasi:cli/{stdout,stderr}` | always | with `log`: lines go to the engine log as the plugin's log; without: dropped and counted |
//! | `wasi:cli/{stdin,environment,exit,terminal-*}` | always | no input, no variables, no arguments, no terminal |
//! | `wasi:clocks/{wall-clock,monotonic-clock}` | with `clock` | the wall clock reads the message's received time (as `host.now-ms`); the monotonic clock runs |
//! | `wasi:random/{random,insecure,insecure-seed}` | always | with `random`: real random numbers; without: a fixed sequence and a fixed seed |
//! | anything else (`wasi:filesystem`, `wasi:sockets`, …) | never | — |
//!
//! A component that imports an interface it is not given is refused when it is loaded, naming
//! the interface and the grant (`plugin x@1.0.0 imports wasi:clocks/wall-clock@0.2.6 but its
//! manifest does not grant `clock``), not when a message first reaches it. Random numbers are
//! given (fixed) without a grant because every `HashMap` of an ordinary Rust guest seeds itself
//! from them; a fixed seed breaks nothing but the guest's hash-flooding defence, and lets a
//! plugin observe nothing of the host.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli};
use wasmtime_wasi::clocks::WasiClocks;
use wasmtime_wasi::p2::bindings::sync as wasi;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{Deterministic, HostWallClock, WasiCtx};

use crate::{CallState, Capability};

/// Most bytes of one stream (stdout or stderr) kept per call; the rest is counted and dropped.
pub const OUTPUT_LIMIT: usize = 16 * 1024;
/// Most lines of one stream logged per call; the rest is counted and dropped.
pub const OUTPUT_LINES: usize = 64;

/// What a plugin gets when it imports a WASI interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// Linked for every plugin.
    Always,
    /// Linked when the manifest grants the capability.
    With(Capability),
    /// Not linked.
    Never,
}

/// The offer for an interface, named without its version (`wasi:clocks/wall-clock`).
fn offer(interface: &str) -> Offer {
    match interface {
        "wasi:io/error" | "wasi:io/poll" | "wasi:io/streams" => Offer::Always,
        "wasi:cli/stdin"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr"
        | "wasi:cli/environment"
        | "wasi:cli/exit"
        | "wasi:cli/terminal-input"
        | "wasi:cli/terminal-output"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr" => Offer::Always,
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            Offer::Always
        }
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => Offer::With(Capability::Clock),
        _ => Offer::Never,
    }
}

/// Refuses a component that imports a WASI interface its grants do not give it, naming every
/// such import (`label` is `name@version`).
pub fn check_imports(
    component: &Component,
    caps: &[Capability],
    label: &str,
) -> Result<(), String> {
    let engine = crate::engine();
    let mut refused = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        if !name.starts_with("wasi:") {
            continue;
        }
        let interface = name.split('@').next().unwrap_or(name);
        match offer(interface) {
            Offer::Always => {}
            Offer::With(cap) if caps.contains(&cap) => {}
            Offer::With(cap) => refused.push(format!(
                "imports {name} but its manifest does not grant `{}`",
                cap.as_str()
            )),
            Offer::Never => refused.push(format!(
                "imports {name}, which the host does not give plugins (no capability grants files, sockets or other WASI interfaces)"
            )),
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("plugin {label} {}", refused.join("; ")))
    }
}

/// `HasData` for the `wasi:io` interfaces: they reach the store's resource table.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links the WASI interfaces a plugin with these grants is given (the table of the module).
pub fn add_to_linker(linker: &mut Linker<CallState>, caps: &[Capability]) -> wasmtime::Result<()> {
    let l = linker;
    wasi::io::error::add_to_linker::<_, Io>(l, |s| &mut s.table)?;
    wasi::io::poll::add_to_linker::<_, Io>(l, |s| &mut s.table)?;
    wasi::io::streams::add_to_linker::<_, Io>(l, |s| &mut s.table)?;
    use wasmtime_wasi::cli::WasiCliView as _;
    wasi::cli::stdin::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::stdout::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::stderr::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::environment::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::exit::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::terminal_input::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::terminal_output::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, |s| s.cli())?;
    wasi::random::random::add_to_linker::<_, WasiRandom>(l, |s| s.wasi.random())?;
    wasi::random::insecure::add_to_linker::<_, WasiRandom>(l, |s| s.wasi.random())?;
    wasi::random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |s| s.wasi.random())?;
    if caps.contains(&Capability::Clock) {
        use wasmtime_wasi::clocks::WasiClocksView as _;
        wasi::clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, |s| s.clocks())?;
        wasi::clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, |s| s.clocks())?;
    }
    Ok(())
}

/// The bytes every "random" number of a plugin without `random` is drawn from, in a cycle.
const FIXED_RANDOM: [u8; 16] = *b"huizhen:no-rand!";
/// `wasi:random/insecure-seed` of a plugin without `random`.
const FIXED_SEED: u128 = u128::from_le_bytes(FIXED_RANDOM);

/// The WASI context of one store: no preopened directories, no sockets, no environment, no
/// arguments; the streams, clock and random numbers as the grants say. The wall clock reads
/// `now_ms`, which the host sets before each call.
pub fn context(
    caps: &[Capability],
    now_ms: &Arc<AtomicI64>,
    stdout: &Printed,
    stderr: &Printed,
) -> WasiCtx {
    let mut b = WasiCtx::builder();
    b.stdout(stdout.clone()).stderr(stderr.clone());
    // Without `clock` the clock interfaces are not linked at all; with it the wall clock reads
    // the message's received time, as `host.now-ms` does, so a replay sees the same time.
    b.wall_clock(MessageClock(now_ms.clone()));
    if !caps.contains(&Capability::Random) {
        b.secure_random(Deterministic::new(FIXED_RANDOM.to_vec()));
        b.insecure_random(Deterministic::new(FIXED_RANDOM.to_vec()));
        b.insecure_random_seed(FIXED_SEED);
    }
    b.build()
}

/// `wasi:clocks/wall-clock` of a call: the message's received time, fixed for the call.
struct MessageClock(Arc<AtomicI64>);

impl HostWallClock for MessageClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed).max(0) as u64)
    }
}

/// What a guest printed on one stream: the first [`OUTPUT_LIMIT`] bytes of the current call,
/// and how many bytes past them were dropped. Writes never fail (a guest's `println!` would
/// panic on an error), and nothing reaches the log until the host reads it after the call.
#[derive(Debug, Clone, Default)]
pub struct Printed(Arc<PrintedInner>);

#[derive(Debug, Default)]
struct PrintedInner {
    /// Something was written since the last `take` (most calls print nothing: their `take`
    /// does not lock).
    wrote: AtomicBool,
    buf: Mutex<PrintedBuf>,
}

#[derive(Debug, Default)]
struct PrintedBuf {
    kept: Vec<u8>,
    over: u64,
}

impl Printed {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.0.buf.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_LIMIT.saturating_sub(b.kept.len());
        let keep = bytes.len().min(room);
        b.kept.extend_from_slice(&bytes[..keep]);
        b.over += (bytes.len() - keep) as u64;
        self.0.wrote.store(true, Ordering::Release);
    }

    /// What was printed since the last `take` (the bytes kept, and the count of bytes dropped
    /// over the limit); the next call starts empty.
    pub fn take(&self) -> (Vec<u8>, u64) {
        if !self.0.wrote.swap(false, Ordering::Acquire) {
            return (Vec::new(), 0);
        }
        let mut b = self.0.buf.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut b.kept), std::mem::take(&mut b.over))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Printed {
    async fn ready(&mut self) {}
}

impl OutputStream for Printed {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(OUTPUT_LIMIT)
    }
}

impl tokio::io::AsyncWrite for Printed {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Printed {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Printed {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Splits what one stream printed during a call into the lines to log (at most
/// [`OUTPUT_LINES`], blank lines skipped) and the count of bytes left out.
pub fn lines(kept: &[u8]) -> (Vec<String>, u64) {
    let text = String::from_utf8_lossy(kept);
    let mut out = Vec::new();
    let mut left_out = 0u64;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if out.len() < OUTPUT_LINES {
            out.push(line.to_owned());
        } else {
            left_out += line.len() as u64 + 1;
        }
    }
    (out, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_per_call_and_counted() {
        let p = Printed::default();
        p.push(&vec![b'x'; OUTPUT_LIMIT - 1]);
        p.push(b"abc");
        let (kept, over) = p.take();
        assert_eq!(kept.len(), OUTPUT_LIMIT);
        assert_eq!(over, 2);
        assert_eq!(p.take(), (Vec::new(), 0), "the next call starts empty");
        let many: String = (0..OUTPUT_LINES + 2).map(|i| format!("{i}\n\n")).collect();
        let (lines, left_out) = lines(many.as_bytes());
        assert_eq!(lines.len(), OUTPUT_LINES);
        assert_eq!(left_out, 6, "two lines of 2 digits and their newlines");
    }

    #[test]
    fn only_io_cli_and_random_are_offered_without_grants() {
        assert_eq!(offer("wasi:cli/stdout"), Offer::Always);
        assert_eq!(offer("wasi:random/insecure-seed"), Offer::Always);
        assert_eq!(
            offer("wasi:clocks/wall-clock"),
            Offer::With(Capability::Clock)
        );
        assert_eq!(offer("wasi:filesystem/preopens"), Offer::Never);
        assert_eq!(offer("wasi:sockets/tcp"), Offer::Never);
    }
}
