//! How many 3-party rooms the SFU forwards at ~1 Mbit/s per publisher before forwarding loss
//! exceeds 1 % or the CPU saturates, and the delay it adds (issue 18's Performance section),
//! against raw UDP loopback forwarding of the same packets measured in the same run.
//!
//! ```sh
//! cargo bench -p huizhen-media --bench rooms                      # steps 1,2,5,10,20,30,40,50
//! BENCH_ROOMS=1,5,10 BENCH_SECONDS=5 cargo bench -p huizhen-media --bench rooms
//! ```
//!
//! A room is three publishers, each publishing one video stream (1200-byte synthetic VP8 RTP
//! every 10 ms, ~0.97 Mbit/s with headers) and Opus (80 bytes every 20 ms) to the SFU, and each
//! publication subscribed by the two other participants: 3 publication and 6 subscription peer
//! connections on the SFU, 9 client peer connections (all webrtc-crate, ICE/DTLS/SRTP over
//! loopback) in the same process. Subscribers send REMB (5 Mbit/s) as browsers do.
//!
//! 1. **Baseline**: the same packets over plain UDP sockets on loopback, one forwarding task per
//!    publisher copying each packet to two receiver sockets (no SRTP, no interceptors); a
//!    window of at most 5 s.
//! 2. **SFU**: rooms are added step by step; at each step, after a 3 s warm-up, a window of
//!    `BENCH_SECONDS` (default 10): video packets sent in the window and those of them received
//!    within 2 s of its end (loss = 1 − received / (2 × sent)), publisher-to-subscriber delay
//!    p50/p99 (send time in the payload), CPU over the window against 2 cores: of the whole
//!    process (SFU and client peers: /proc/self/stat) and of the SFU alone (its peer
//!    connections and forwarding run on a tokio runtime of their own whose threads are named
//!    `sfu`: /proc/self/task/*/stat). Stops after the first step whose loss exceeds 1 % or
//!    whose whole-process CPU exceeds 95 %, then prints the SFU's CPU per room at the last step
//!    within 1 % loss and the rooms at which the SFU alone would use 95 % of both cores.
//!
//! The baseline runs at every size first, before any SFU room exists (its CPU is its own).

#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use huizhen_media::sfu::{PcFactory, Publication};
use support::{Client, Received, Sub, remb_loop};
use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::Notify;

/// utime + stime of a `/proc/.../stat` line, and the command (thread) name.
fn stat_ticks(stat: &str) -> (String, u64) {
    // The name is in parentheses; after the closing one, field 3 onwards; utime and stime are
    // fields 14 and 15.
    let (head, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
    let name = head
        .split_once('(')
        .map(|(_, n)| n)
        .unwrap_or("")
        .to_owned();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (name, n(14) + n(15))
}

/// CPU ticks of the whole process, and of its threads named `sfu` (the SFU's runtime: its
/// peer connections and forwarding tasks). Threads that ended are counted in the process
/// total only.
fn cpu_ticks() -> (u64, u64) {
    let (_, all) = stat_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut sfu = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let (name, ticks) = stat_ticks(&stat);
            if name == SFU_THREADS {
                sfu += ticks;
            }
        }
    }
    (all, sfu)
}

/// The name of the SFU runtime's threads.
const SFU_THREADS: &str = "sfu";

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

struct Window {
    sent: u64,
    received: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// The whole process (SFU and clients), of 2 cores.
    cpu: f64,
    /// The SFU runtime's threads alone, of 2 cores.
    sfu_cpu: f64,
}

impl Window {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - self.received as f64 / (2 * self.sent) as f64
    }
}

/// Measures `secs` seconds: the video packets sent in the window, and those of them received
/// within 2 s of the window's end (later is lost for a call), with their delays.
async fn window(sent: &[Arc<AtomicU64>], receivers: &[Arc<Received>], secs: u64) -> Window {
    let total = |c: &[Arc<AtomicU64>]| c.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>();
    for r in receivers {
        r.samples.lock().unwrap().clear();
    }
    let (s0, c0, t0, from) = (total(sent), cpu_ticks(), Instant::now(), support::now_ns());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (s1, c1, wall, to) = (
        total(sent),
        cpu_ticks(),
        t0.elapsed().as_secs_f64(),
        support::now_ns(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lat: Vec<u32> = Vec::new();
    for r in receivers {
        let samples = std::mem::take(&mut *r.samples.lock().unwrap());
        lat.extend(
            samples
                .into_iter()
                .filter(|(at, _)| (from..to).contains(at))
                .map(|(_, d)| d),
        );
    }
    Window {
        sent: s1 - s0,
        received: lat.len() as u64,
        p50_ms: percentile(&mut lat, 0.5),
        p99_ms: percentile(&mut lat, 0.99),
        cpu: (c1.0 - c0.0) as f64 / 100.0 / wall / 2.0,
        sfu_cpu: c1.1.saturating_sub(c0.1) as f64 / 100.0 / wall / 2.0,
    }
}

/// One room through the SFU: three publishers, each subscribed by two clients.
struct Room {
    publishers: Vec<Client>,
    subs: Vec<Sub>,
    sfu: Vec<huizhen_media::sfu::Peer>,
    stops: Vec<Arc<Notify>>,
    sent: Vec<Arc<AtomicU64>>,
    rembs: Vec<Arc<AtomicU64>>,
}

async fn room(factory: &Arc<PcFactory>, sfu: &Handle) -> Room {
    let mut r = Room {
        publishers: Vec::new(),
        subs: Vec::new(),
        sfu: Vec::new(),
        stops: Vec::new(),
        sent: Vec::new(),
        rembs: Vec::new(),
    };
    let build = |publication: Option<Arc<Publication>>| {
        let f = factory.clone();
        support::on(
            Some(sfu),
            async move { f.build(publication).await.unwrap() },
        )
    };
    for i in 0..3 {
        let client = Client::with(None, false).await;
        let sending = client.add_simulcast(&[]).await;
        let offer = client.offer().await;
        let publication = Arc::new(Publication::new(
            "cam",
            &format!("p{i}"),
            "bench",
            "camera",
            &offer,
        ));
        let peer = build(Some(publication.clone())).await;
        let o = offer.clone();
        let (peer, answer) = support::on(Some(sfu), async move {
            let a = support::answer(&peer, &o).await;
            (peer, a)
        })
        .await;
        client.accept(&answer).await;
        let (stop, sent) = sending.start_counted(&client, &offer).await;
        support::wait("a publication's tracks", || async {
            publication.tracks.lock().await.len() == 2
        })
        .await;
        let tracks = publication.tracks.lock().await.clone();
        for _ in 0..2 {
            let peer = build(None).await;
            let sub = support::subscribe_peer(Some(sfu), peer, &tracks, false).await;
            r.rembs.push(remb_loop(&sub.received, 5_000_000));
            r.subs.push(sub);
        }
        r.stops.push(stop);
        r.sent.push(sent);
        r.sfu.push(peer);
        r.publishers.push(client);
    }
    r
}

/// The baseline: per publisher, a sender, a forwarder copying to two receivers.
async fn udp_room(stop: Arc<Notify>) -> (Vec<Arc<AtomicU64>>, Vec<Arc<Received>>) {
    let mut sent = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let fwd = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let fwd_addr = fwd.local_addr().unwrap();
        let mut outs = Vec::new();
        for _ in 0..2 {
            let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            outs.push(rx.local_addr().unwrap());
            let r = Arc::new(Received::default());
            receivers.push(r.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1600];
                while let Ok(n) = rx.recv(&mut buf).await {
                    if n == 1212 {
                        r.video_packets.fetch_add(1, Ordering::Relaxed);
                        let at = u64::from_be_bytes(buf[12 + 3..12 + 11].try_into().unwrap());
                        let d = support::now_ns().saturating_sub(at);
                        r.samples.lock().unwrap().push((at, (d / 1000) as u32));
                    }
                }
            });
        }
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1600];
            while let Ok(n) = fwd.recv(&mut buf).await {
                for o in &outs {
                    let _ = fwd.send_to(&buf[..n], o).await;
                }
            }
        });
        let count = Arc::new(AtomicU64::new(0));
        sent.push(count.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut t = 0u64;
            loop {
                tokio::select! {
                    _ = stop.notified() => break,
                    _ = tick.tick() => {}
                }
                let mut video = vec![0u8; 1212];
                let at = support::now_ns();
                video[12 + 3..12 + 11].copy_from_slice(&at.to_be_bytes());
                let _ = tx.send_to(&video, fwd_addr).await;
                count.fetch_add(1, Ordering::Relaxed);
                if t.is_multiple_of(2) {
                    let _ = tx.send_to(&[0u8; 92], fwd_addr).await;
                }
                t += 1;
            }
        });
    }
    (sent, receivers)
}

fn main() {
    let steps: Vec<usize> = std::env::var("BENCH_ROOMS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 5, 10, 20, 30, 40, 50]);
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // The clients (publishers, subscribers, the raw UDP baseline) on one runtime, the SFU's
    // peer connections and forwarding on another whose threads are named `sfu`: the same two
    // cores, but the SFU's CPU is measured apart.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peer")
        .enable_all()
        .build()
        .unwrap();
    let sfu_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SFU_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let sfu = sfu_rt.handle().clone();
    rt.block_on(async move {
        support::epoch();
        println!("| rooms | path | video pkts sent | received | loss | delay p50 | p99 | CPU, whole process (of 2 cores) | CPU, SFU threads (of 2 cores) | load average |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        // The baseline first, at every size, before any SFU room exists.
        for &n in &steps {
            let stop = Arc::new(Notify::new());
            let mut sent = Vec::new();
            let mut receivers = Vec::new();
            for _ in 0..n {
                let (s, r) = udp_room(stop.clone()).await;
                sent.extend(s);
                receivers.extend(r);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let w = window(&sent, &receivers, secs.min(5)).await;
            stop.notify_waiters();
            print_row(n, "raw UDP", &w);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let factory = Arc::new(PcFactory::new(support::loopback()));
        let mut rooms: Vec<Room> = Vec::new();
        let mut last: Option<(usize, f64)> = None;
        for n in steps {
            let setup = Instant::now();
            while rooms.len() < n {
                rooms.push(room(&factory, &sfu).await);
            }
            let setup = setup.elapsed();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let sent: Vec<Arc<AtomicU64>> = rooms.iter().flat_map(|r| r.sent.clone()).collect();
            let receivers: Vec<Arc<Received>> = rooms
                .iter()
                .flat_map(|r| r.subs.iter().map(|s| s.received.clone()))
                .collect();
            let w = window(&sent, &receivers, secs).await;
            print_row(n, "SFU", &w);
            println!("({n} rooms set up in {:.1} s)", setup.as_secs_f64());
            if w.loss() <= 0.01 {
                last = Some((n, w.sfu_cpu));
            }
            if w.loss() > 0.01 || w.cpu > 0.95 {
                println!(
                    "stopped at {n} rooms: loss {:.2} %, CPU {:.0} % (SFU threads {:.0} %)",
                    w.loss() * 100.0,
                    w.cpu * 100.0,
                    w.sfu_cpu * 100.0
                );
                break;
            }
        }
        if let Some((n, cpu)) = last.filter(|l| l.1 > 0.0) {
            println!(
                "SFU threads at {n} rooms (loss ≤ 1 %): {:.1} % of 2 cores, {:.2} % per room: \
                 the SFU alone would saturate 95 % of both cores at about {:.0} rooms",
                cpu * 100.0,
                cpu * 100.0 / n as f64,
                0.95 * n as f64 / cpu
            );
        }
        for r in &rooms {
            for s in &r.stops {
                s.notify_waiters();
            }
            for s in &r.subs {
                s.close().await;
            }
            for c in &r.publishers {
                c.close().await;
            }
            for p in &r.sfu {
                let _ = p.pc.close().await;
            }
        }
    });
    sfu_rt.shutdown_timeout(Duration::from_secs(2));
}

fn print_row(n: usize, path: &str, w: &Window) {
    println!(
        "| {n} | {path} | {} | {} | {:.2} % | {:.2} ms | {:.2} ms | {:.0} % | {:.0} % | {} |",
        w.sent,
        w.received,
        w.loss() * 100.0,
        w.p50_ms,
        w.p99_ms,
        w.cpu * 100.0,
        w.sfu_cpu * 100.0,
        loadavg()
    );
}
