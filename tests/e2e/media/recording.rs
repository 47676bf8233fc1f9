//! Recording the call (RTC-30, CN-05, CN-30): refused without every participant's recording
//! consent (and for a patient's token whatever the consents), produced with them — one file
//! per track in the codec forwarded, in the object store sealed at rest, listed on the
//! consultation with its SHA-256 and retention class, downloaded decrypted and parsed here as
//! IVF and Ogg (every page's CRC checked); start, stop, refusals and downloads audited.

use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::clock::Clock;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::peer::{Participant, Signal};
use super::{consultation, signal_url, start, tokens, wait_audit};
use crate::consultations::{Wf, doctor, expert};
use crate::support::Backend;

async fn consent(wf: &Wf, id: &str, bearer: &str, role: &str, participant: &str) {
    let at = wf.clock.now() - TimeDelta::minutes(1);
    wf.ok(
        id,
        "record_recording_consent",
        bearer,
        json!({"consent": {"role": role, "participant": participant, "document": format!("DocumentReference/rec-{participant}"), "signed_at": at}}),
    )
    .await;
}

/// The frames of an IVF file (after checking its header): (frame count in the header, frame
/// sizes, whether the first frame is a VP8 key frame).
fn parse_ivf(b: &[u8]) -> (u32, Vec<usize>, bool) {
    assert!(b.len() >= 32, "an IVF header");
    assert_eq!(&b[..4], b"DKIF");
    assert_eq!(u16::from_le_bytes([b[6], b[7]]), 32, "IVF header size");
    let four_cc = &b[8..12];
    assert!(
        four_cc == b"VP80" || four_cc == b"VP90" || four_cc == b"AV01",
        "an IVF FourCC: {four_cc:?}"
    );
    let count = u32::from_le_bytes(b[24..28].try_into().unwrap());
    let mut at = 32;
    let mut frames = Vec::new();
    let mut key = false;
    while at < b.len() {
        assert!(at + 12 <= b.len(), "a whole frame header at {at}");
        let size = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let pts = u64::from_le_bytes(b[at + 4..at + 12].try_into().unwrap());
        assert_eq!(pts, frames.len() as u64, "frame timestamps count up");
        assert!(at + 12 + size <= b.len(), "a whole frame at {at}");
        if frames.is_empty() {
            key = b[at + 12] & 1 == 0;
        }
        frames.push(size);
        at += 12 + size;
    }
    (count, frames, key)
}

fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The pages of an Ogg file, each checked (capture pattern, version, CRC, page sequence): the
/// packets of each page concatenated.
fn parse_ogg(b: &[u8]) -> Vec<Vec<u8>> {
    let mut at = 0;
    let mut pages = Vec::new();
    let mut serial = None;
    while at < b.len() {
        assert_eq!(&b[at..at + 4], b"OggS", "a page at {at}");
        assert_eq!(b[at + 4], 0, "Ogg version");
        let s = u32::from_le_bytes(b[at + 14..at + 18].try_into().unwrap());
        assert_eq!(*serial.get_or_insert(s), s, "one stream");
        let seq = u32::from_le_bytes(b[at + 18..at + 22].try_into().unwrap());
        let flags = b[at + 5];
        if flags & 0x04 != 0 {
            // The crate's writer closes the stream by writing its last packet again on an
            // end-of-stream page under the same sequence number.
            assert_eq!(seq as usize + 1, pages.len(), "the end-of-stream page");
        } else {
            assert_eq!(seq as usize, pages.len(), "page sequence");
        }
        let crc = u32::from_le_bytes(b[at + 22..at + 26].try_into().unwrap());
        let nseg = b[at + 26] as usize;
        let lacing = &b[at + 27..at + 27 + nseg];
        let body: usize = lacing.iter().map(|l| *l as usize).sum();
        let end = at + 27 + nseg + body;
        assert!(end <= b.len(), "a whole page at {at}");
        let mut page = b[at..end].to_vec();
        page[22..26].fill(0);
        assert_eq!(ogg_crc(&page), crc, "the CRC of page {seq}");
        pages.push(b[at + 27 + nseg..end].to_vec());
        at = end;
        if flags & 0x04 != 0 {
            assert_eq!(at, b.len(), "nothing after the end of the stream");
        }
    }
    pages
}

async fn download(wf: &Wf, href: &str, bearer: &str) -> (u16, Vec<u8>, String) {
    let r = wf
        .api
        .request("GET", href, bearer, None)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let sha = r
        .headers()
        .get("x-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, r.bytes().await.unwrap().to_vec(), sha)
}

/// The NAL unit types of an H.264 Annex B byte stream (after checking it starts with a start
/// code).
fn parse_annex_b(b: &[u8]) -> Vec<u8> {
    assert!(
        b.starts_with(&[0, 0, 0, 1]) || b.starts_with(&[0, 0, 1]),
        "an Annex B start code"
    );
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < b.len() {
        if b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 {
            types.push(b[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

/// What a downloaded track holds: video frames (IVF), audio pages after the two headers
/// (Ogg), or NAL units (H.264), with its parsed Ogg pages when it is Ogg.
pub(super) struct Track {
    pub(super) units: usize,
    pub(super) ogg_pages: Vec<Vec<u8>>,
}

/// Downloads a listed track (`r`, from the recordings list or the call view), checks that its
/// bytes are the recorded size and hash to the recorded SHA-256, and that it decodes as its
/// container says: an IVF header whose frame count is the frames' and a first key frame; Ogg
/// pages with good CRCs starting with the Opus headers; an Annex B stream with a key frame.
pub(super) async fn check_track(wf: &Wf, r: &serde_json::Value, bearer: &str) -> Track {
    let (s, body, sha) = download(wf, r["href"].as_str().unwrap(), bearer).await;
    assert_eq!(s, 200, "{r}");
    let hash = hex::encode(Sha256::digest(&body));
    assert_eq!(hash, r["sha256"].as_str().unwrap(), "{r}");
    assert_eq!(sha, hash);
    assert_eq!(body.len() as u64, r["bytes"].as_u64().unwrap());
    match r["container"].as_str().unwrap() {
        "ivf" => {
            let (header_count, frames, key) = parse_ivf(&body);
            assert_eq!(
                header_count as usize,
                frames.len(),
                "the header's frame count"
            );
            assert!(key, "the file starts with a key frame");
            Track {
                units: frames.len(),
                ogg_pages: vec![],
            }
        }
        "ogg" => {
            let pages = parse_ogg(&body);
            assert!(pages[0].starts_with(b"OpusHead"), "the ID header");
            assert!(pages[1].starts_with(b"OpusTags"), "the comment header");
            Track {
                units: pages.len() - 2,
                ogg_pages: pages,
            }
        }
        "h264" => {
            let nals = parse_annex_b(&body);
            assert!(
                nals.iter().any(|t| *t == 5 || *t == 7),
                "an IDR or SPS: {nals:?}"
            );
            Track {
                units: nals.len(),
                ogg_pages: vec![],
            }
        }
        other => panic!("container {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_needs_everyones_consent_and_produces_sealed_per_track_files() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, e, patient) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    let url = signal_url(&wf);
    let mut people = Vec::new();
    for role in ["local-physician", "patient", "expert"] {
        let (s, joined) = Signal::join(&url, &room, &tokens[role]).await;
        assert_eq!(joined["admission"], "admitted", "{role}: {joined}");
        people.push(Participant::new(s));
    }
    // The local physician publishes camera and microphone, the others their cameras.
    people[0].publish_with_audio().await;
    people[1].publish().await;
    people[2].publish().await;
    for p in people.iter_mut() {
        for _ in 0..2 {
            p.accept_subscription().await;
        }
    }
    // Nobody consented to recording: refused, with who is missing.
    people[2]
        .signal
        .send(json!({"type": "record", "active": true}))
        .await;
    let refused = people[2].signal.next_of("error").await;
    assert_eq!(refused["code"], "no-recording-consent", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("RTC-30"),
        "{refused}"
    );
    // Two of the three consent: still refused, naming the patient.
    consent(&wf, &id, &expert(&e), "expert", &e).await;
    consent(&wf, &id, &doctor(), "local-physician", "D1").await;
    people[2]
        .signal
        .send(json!({"type": "record", "active": true}))
        .await;
    let refused = people[2].signal.next_of("error").await;
    assert_eq!(refused["code"], "no-recording-consent", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains(&format!("patient {patient}")),
        "{refused}"
    );
    consent(&wf, &id, &doctor(), "patient", &patient.to_string()).await;
    // A patient's token never starts a recording, consents or not (RTC-04).
    people[1]
        .signal
        .send(json!({"type": "record", "active": true}))
        .await;
    let refused = people[1].signal.next_of("error").await;
    assert_eq!(refused["code"], "not-permitted", "{refused}");
    // Nothing was recorded so far.
    let (s, v) = wf
        .api
        .get(&format!("/api/consultations/{id}/recordings"), &doctor())
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["recordings"], json!([]));
    // Everyone consented: the expert starts it, everyone sees the indicator.
    people[2]
        .signal
        .send(json!({"type": "record", "active": true}))
        .await;
    for p in people.iter_mut() {
        let m = p.signal.next_of("recording").await;
        assert_eq!(m, json!({"type": "recording", "active": true}));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    people[0]
        .signal
        .send(json!({"type": "record", "active": false}))
        .await;
    for p in people.iter_mut() {
        let m = p.signal.next_of("recording").await;
        assert_eq!(m, json!({"type": "recording", "active": false}));
    }
    // Listed on the consultation: three video tracks (IVF/VP8) and one audio (Ogg/Opus).
    let (s, v) = wf
        .api
        .get(&format!("/api/consultations/{id}/recordings"), &doctor())
        .await;
    assert_eq!(s, 200, "{v}");
    let list = v["recordings"].as_array().unwrap().clone();
    let count = |c: &str| list.iter().filter(|r| r["container"] == c).count();
    assert_eq!((count("ivf"), count("ogg")), (3, 1), "{v}");
    let mut roles: Vec<&str> = list.iter().map(|r| r["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(
        roles,
        ["expert", "local-physician", "local-physician", "patient"]
    );
    let objects = wf.db.dir.path().join("objects");
    for r in &list {
        assert_eq!(r["retention_class"], "process-record-audio-video", "{r}");
        assert_eq!(r["started_by"], e.as_str(), "{r}");
        let started =
            chrono::DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap()).unwrap();
        let until =
            chrono::DateTime::parse_from_rfc3339(r["retain_until"].as_str().unwrap()).unwrap();
        assert!(until - started >= TimeDelta::days(3 * 365), "{r}");
        // The hash recorded is the file's, and it decodes.
        let track = check_track(&wf, r, &doctor()).await;
        match r["container"].as_str().unwrap() {
            "ivf" => {
                assert!(track.units >= 10, "two seconds of frames: {}", track.units);
                assert_eq!(r["codec"], "video/VP8");
            }
            "ogg" => {
                assert!(track.units >= 10, "audio pages: {}", track.units);
                assert!(
                    track.ogg_pages[2..]
                        .iter()
                        .any(|p| p.first() == Some(&0xf8)),
                    "the Opus frames"
                );
                assert_eq!(r["codec"], "audio/opus");
            }
            other => panic!("container {other}"),
        }
        // At rest it is sealed: the file in the object store shows none of it.
        let id = r["id"].as_str().unwrap();
        let object = std::fs::read_dir(&objects)
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .find(|p| {
                let raw = std::fs::read(p).unwrap();
                raw.len() as u64 >= r["bytes"].as_u64().unwrap() && raw.starts_with(b"HZOB1\n\x01")
            });
        assert!(object.is_some(), "{id}: a sealed object");
        for f in std::fs::read_dir(&objects)
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        {
            let raw = std::fs::read(f.unwrap().path()).unwrap();
            assert!(
                !raw.windows(4).any(|w| w == b"DKIF" || w == b"OggS"),
                "in clear at rest"
            );
        }
    }
    // A patient's API token does not read recordings.
    let patient_token = crate::consultations::token(
        huizhen_core::security::Role::Patient,
        &patient.to_string(),
        crate::consultations::REQ,
    );
    let (s, _) = wf
        .api
        .get(
            &format!("/api/consultations/{id}/recordings"),
            &patient_token,
        )
        .await;
    assert_eq!(s, 403);
    // Start (with the consents it relied on), the refusals, stop and each download audited.
    let rows = wait_audit(&wf, &id, "the stop audited", |rows| {
        rows.iter()
            .any(|r| r.event.action == "recording.stop")
            .then(|| rows.to_vec())
    })
    .await;
    let of = |action: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r.event.action == action && r.event.outcome == outcome)
            .map(|r| r.event.detail.clone())
            .collect::<Vec<String>>()
    };
    assert_eq!(
        of("recording.start", "denied").len(),
        3,
        "{:?}",
        of("recording.start", "denied")
    );
    let started = of("recording.start", "success");
    assert_eq!(started.len(), 1);
    assert!(
        started[0].contains(&format!("patient {patient}")),
        "{started:?}"
    );
    let stopped = of("recording.stop", "success");
    assert_eq!(stopped.len(), 1);
    assert!(stopped[0].contains("4 tracks"), "{stopped:?}");
    assert_eq!(of("recording.download", "success").len(), 4);
    for p in people {
        p.close().await;
    }
    wf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_joining_without_recording_consent_stops_the_recording() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, e, _) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    let url = signal_url(&wf);
    consent(&wf, &id, &expert(&e), "expert", &e).await;
    consent(&wf, &id, &doctor(), "local-physician", "D1").await;
    let (s, _) = Signal::join(&url, &room, &tokens["local-physician"]).await;
    let mut doctor_side = Participant::new(s);
    let (s, _) = Signal::join(&url, &room, &tokens["expert"]).await;
    let mut expert_side = Participant::new(s);
    doctor_side.publish().await;
    expert_side.accept_subscription().await;
    expert_side
        .signal
        .send(json!({"type": "record", "active": true}))
        .await;
    for side in [&mut doctor_side, &mut expert_side] {
        assert_eq!(side.signal.next_of("recording").await["active"], true);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The patient has not consented to recording: their joining stops it.
    let (mut patient_side, joined) = Signal::join(&url, &room, &tokens["patient"]).await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(
        doctor_side.signal.next_of("recording").await["active"],
        false
    );
    assert_eq!(
        expert_side.signal.next_of("recording").await["active"],
        false
    );
    let _ = &mut patient_side;
    // The stop is audited right after everyone is told.
    let stop = wait_audit(&wf, &id, "the stop audited", |rows| {
        rows.iter()
            .find(|r| r.event.action == "recording.stop")
            .cloned()
    })
    .await;
    assert!(
        stop.event.detail.contains("no recording consent"),
        "{}",
        stop.event.detail
    );
    // What was recorded until then is kept and listed.
    let (s, v) = wf
        .api
        .get(&format!("/api/consultations/{id}/recordings"), &doctor())
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["recordings"].as_array().unwrap().len(), 1, "{v}");
    doctor_side.close().await;
    expert_side.close().await;
    wf.stop().await;
}
