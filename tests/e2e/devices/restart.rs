//! The persistent session: readings published while the engine is stopped arrive once it runs
//! again, exactly once; and a `kill -9` while readings stream in (between a journal commit and
//! its PUBACK, among other places) loses none and duplicates no effect.

use std::collections::BTreeSet;
use std::time::Duration;

use huizhen_core::message::State;

use super::{Engine, bp, broker_ready, publish, unique};
use crate::support::{Backend, fresh_db, journaled, wait_for};

/// `n` distinct readings of `device`, a minute apart from `base_minute`.
fn readings(device: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let at = format!(
                "2026-04-0{}T{:02}:{:02}:00+08:00",
                1 + i / 1440,
                (i / 60) % 24,
                i % 60
            );
            bp(
                device,
                &at,
                110 + (i % 40) as u32,
                70 + (i % 20) as u32,
                60 + (i % 30) as u32,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_sent_while_stopped_arrive_once_after_restart() {
    if !broker_ready() {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let topic = unique("hz-sess");
    let mut e = Engine::new(&db, &topic, &unique("hz-sess"));
    let person = e.patient_with_device("MR-2001", "BP-2001", "2026-01-01T00:00:00+08:00");
    e.start().await;
    let t = format!("{topic}/gw/vitals");
    super::prime(&e, &t, &readings("BP-2001", 0, 1)[0], &person, 2).await;
    e.stop();
    // The engine is down: the broker keeps these in the session.
    for r in readings("BP-2001", 1, 5) {
        publish(&t, &r);
    }
    e.start().await;
    wait_for(
        "the readings sent while stopped",
        Duration::from_secs(60),
        || async { (e.observations(&person).await.len() == 12).then_some(()) },
    )
    .await;
    // Started again: nothing is delivered a second time.
    e.stop();
    e.start().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = super::open_store(&db).await;
    let all = journaled(&s, "devices").await;
    assert_eq!(all.len(), 6, "each reading journaled once");
    assert!(all.iter().all(|m| m.state == State::Done));
    assert_eq!(e.observations(&person).await.len(), 12);
    e.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_reading_and_duplicates_no_effect() {
    if !broker_ready() {
        return;
    }
    const N: usize = 300;
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let topic = unique("hz-kill");
    let mut e = Engine::new(&db, &topic, &unique("hz-kill"));
    let person = e.patient_with_device("MR-3001", "BP-3001", "2026-01-01T00:00:00+08:00");
    e.start().await;
    let t = format!("{topic}/gw/vitals");
    // The first reading makes sure the subscription exists before the stream.
    super::prime(&e, &t, &readings("BP-3001", 0, 1)[0], &person, 2).await;
    let s = super::open_store(&db).await;
    // One publisher process for the stream (-l: one message per line of stdin).
    let mut lines = readings("BP-3001", 1, N - 1).join("\n");
    lines.push('\n');
    let path = e.config.with_file_name("stream.txt");
    std::fs::write(&path, lines).unwrap();
    let publisher = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mosquitto_pub -h {} -p {} -q 1 -t {t} -l < {}",
            super::mqtt_host(),
            super::mqtt_port(),
            path.display()
        ))
        .spawn()
        .unwrap();
    // Kill the engine once part of the stream is journaled.
    wait_for(
        "some of the stream journaled",
        Duration::from_secs(60),
        || async { (journaled(&s, "devices").await.len() > N / 5).then_some(()) },
    )
    .await;
    e.kill();
    let out = publisher.wait_with_output().unwrap();
    assert!(out.status.success());
    e.start().await;
    let done = wait_for("every reading done", Duration::from_secs(120), || async {
        let all = journaled(&s, "devices").await;
        (all.len() >= N && all.iter().all(|m| m.state == State::Done)).then_some(all)
    })
    .await;
    assert_eq!(done.len(), N, "no reading journaled twice");
    let obs = e.observations(&person).await;
    let ids: BTreeSet<String> = obs
        .iter()
        .map(|o| o["identifier"][0]["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(obs.len(), 2 * N, "two Observations per reading, none twice");
    assert_eq!(ids.len(), 2 * N);
    e.stop();
}
