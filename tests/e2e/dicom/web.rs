//! DICOMweb (DCM-03) through the engine's real router and security: STOW-RS with a chunked
//! body then WADO-RS returns the same bytes; transcoding to Explicit VR Little Endian and 406
//! for compressed pixel data (DCM-02); QIDO-RS matching, paging and includefield; metadata,
//! frames and rendered; an expert reaches only the studies of their consultation's patient
//! (403 otherwise: web_access.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use huizhen_core::clock::FakeClock;
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use huizhen_signing::testca::TestCa;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::files::{Spec, dataset_bytes, write, write_j2k};
use super::free_port;
use crate::consultations::{REQ, Wf, doctor, start_on, t0};
use crate::support::{Backend, fresh_db};

/// An engine with a `dicom` pipeline of the requesting facility and the real API.
pub(crate) async fn engine() -> Option<Wf> {
    engine_with("").await
}

/// The same with `steps` (YAML lines of the pipeline's `steps:` list; `{dir}` is the test's
/// folder).
pub(crate) async fn engine_with(steps: &str) -> Option<Wf> {
    engine_of("", steps).await
}

/// The same with `source` (YAML lines of the `dicom:` source, indented by 4) too.
pub(crate) async fn engine_of(source: &str, steps: &str) -> Option<Wf> {
    engine_at(free_port(), source, steps).await
}

/// The same with the SCP on `port`.
pub(crate) async fn engine_at(port: u16, source: &str, steps: &str) -> Option<Wf> {
    let db = fresh_db(Backend::Sqlite).await?;
    let storage = db.dir.path().join("dicom");
    let steps = steps.replace("{dir}", &db.dir.path().display().to_string());
    let steps = if steps.is_empty() {
        String::new()
    } else {
        format!("steps:\n{steps}")
    };
    let yaml = format!(
        "version: 1\nname: imaging\nfacility: {REQ}\nsource:\n  dicom:\n    listen: \"127.0.0.1:{}\"\n    storage: \"{}\"\n    accept:\n      - calling: [\"*\"]\n{source}{steps}sinks:\n  - journal: {{}}\n",
        port,
        storage.display()
    );
    let ca = Arc::new(TestCa::generate("Huizhen DICOMweb E2E CA").unwrap());
    Some(start_on(db, ca, Arc::new(FakeClock::new(t0())), &[&yaml]).await)
}

/// A person of the patient index with record (REQ, `mrn`).
pub(crate) async fn person(wf: &Wf, mrn: &str, name: &str) -> i64 {
    let (_, p) = wf
        .engine
        .store
        .identity_upsert(
            &normalize(&Demographics {
                facility: REQ.into(),
                local_id: mrn.into(),
                identifiers: vec![],
                names: vec![PersonName::text(name)],
                birth_date: Some("1964-05-02".into()),
                sex: None,
                phones: vec![],
                addresses: vec![],
            }),
            None,
        )
        .await
        .unwrap();
    p
}

/// A raw HTTP/1.1 exchange (so the body can go chunked, in `chunk`-byte pieces): status,
/// headers (lower-case names), body.
pub(crate) async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&[u8], usize)>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    if let Some((b, chunk)) = body {
        for c in b.chunks(chunk) {
            s.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                .await
                .unwrap();
            s.write_all(c).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
        }
        s.write_all(b"0\r\n\r\n").await.unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let hs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if hs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let nl = body[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i;
            let n = usize::from_str_radix(std::str::from_utf8(&body[i..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&body[nl + 2..nl + 2 + n]);
            i = nl + 2 + n + 2;
        }
        body = out;
    }
    (status, hs, body)
}

/// A GET with a bearer: status and JSON body (null when the body is not JSON).
pub(crate) async fn get_json(base: &str, path: &str, bearer: &str) -> (u16, Value) {
    let (st, _, out) = http(
        base,
        "GET",
        path,
        &[("Authorization", format!("Bearer {bearer}"))],
        None,
    )
    .await;
    (st, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

pub(crate) fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// A STOW-RS body of `files`; its Content-Type.
pub(crate) fn stow_body(files: &[Vec<u8>]) -> (Vec<u8>, String) {
    let b = "stow-test-boundary-8d7f";
    let mut body = Vec::new();
    for f in files {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (
        body,
        format!("multipart/related; type=\"application/dicom\"; boundary={b}"),
    )
}

/// The parts of a multipart/related answer: (content type, bytes).
pub(crate) fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let (boundary, _) = huizhen_dicom::web::multipart::parse_content_type(content_type).unwrap();
    let mut r = huizhen_dicom::web::multipart::Reader::new(&boundary);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for e in r.push(body).unwrap() {
        match e {
            huizhen_dicom::web::multipart::Event::Part(h) => out.push((
                h.iter()
                    .find(|(k, _)| k == "content-type")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                Vec::new(),
            )),
            huizhen_dicom::web::multipart::Event::Data(d) => {
                out.last_mut().unwrap().1.extend_from_slice(&d)
            }
            huizhen_dicom::web::multipart::Event::End => {}
        }
    }
    assert!(r.done(), "no closing delimiter");
    out
}

/// Rewrites a file in another uncompressed transfer syntax (the values unchanged).
pub(crate) fn as_syntax(from: &Path, to: &Path, ts: &str) -> PathBuf {
    let mut obj = dicom_object::open_file(from).unwrap();
    obj.update_meta(|m| {
        m.transfer_syntax = ts.to_owned();
        m.update_information_group_length();
    });
    obj.write_to_file(to).unwrap();
    to.to_path_buf()
}

pub(crate) fn uid(v: &Value, tag: &str) -> String {
    v[tag]["Value"][0].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_then_wado_returns_the_same_bytes_and_transcodes_only_when_exact() {
    let Some(wf) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let study = "1.2.826.0.1.3680043.9.7001.1";
    let series = "1.2.826.0.1.3680043.9.7001.1.1";
    let mut spec = Spec::new(study, series, 1);
    spec.patient_id = "MRN-WEB-1".into();
    spec.size = 64;
    let explicit = dir.path().join("e.dcm");
    write(&explicit, &spec);
    let implicit = as_syntax(&explicit, &dir.path().join("i.dcm"), "1.2.840.10008.1.2");
    let mut spec2 = Spec::new(study, series, 2);
    spec2.patient_id = "MRN-WEB-1".into();
    let j2k = dir.path().join("j.dcm");
    write_j2k(&j2k, &spec2);
    let originals = [
        std::fs::read(&implicit).unwrap(),
        std::fs::read(&j2k).unwrap(),
    ];
    let garbage = b"this is not DICOM at all".to_vec();
    let (body, ct) = stow_body(&[originals[0].clone(), originals[1].clone(), garbage]);
    let d = doctor();
    let auth = ("Authorization", format!("Bearer {d}"));
    // Chunked, in pieces smaller than a file meta group and than the delimiter.
    let (st, hs, out) = http(
        &wf.base,
        "POST",
        "/dicomweb/studies",
        &[
            auth.clone(),
            ("Content-Type", ct.clone()),
            ("Accept", "application/dicom+json".into()),
        ],
        Some((&body, 37)),
    )
    .await;
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    assert_eq!(st, 202, "{v}");
    assert_eq!(header(&hs, "content-type"), "application/dicom+json");
    let ok = v["00081199"]["Value"].as_array().unwrap();
    assert_eq!(ok.len(), 2, "{v}");
    assert!(
        uid(&v, "00081190").ends_with(&format!("/dicomweb/studies/{study}")),
        "{v}"
    );
    let failed = v["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000, "{v}");
    // The stored instance comes back byte for byte (transfer-syntax=*: as stored).
    let sop1 = format!("{series}.1");
    let inst = format!("/dicomweb/studies/{study}/series/{series}/instances/{sop1}");
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &inst,
        &[
            auth.clone(),
            (
                "Accept",
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*".into(),
            ),
        ],
        None,
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&out));
    let p = parts(header(&hs, "content-type"), &out);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].0,
        "application/dicom; transfer-syntax=1.2.840.10008.1.2"
    );
    assert!(
        p[0].1 == originals[0],
        "WADO-RS returned other bytes than STOW-RS sent"
    );
    // The whole study, as stored: both instances, byte for byte.
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &format!("/dicomweb/studies/{study}"),
        &[
            auth.clone(),
            (
                "Accept",
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*".into(),
            ),
        ],
        None,
    )
    .await;
    assert_eq!(st, 200);
    let mut got: Vec<Vec<u8>> = parts(header(&hs, "content-type"), &out)
        .into_iter()
        .map(|p| p.1)
        .collect();
    got.sort();
    let mut want = originals.to_vec();
    want.sort();
    assert!(got == want, "the study came back different");
    // Explicit VR Little Endian asked: the implicit one is transcoded (same data set as the
    // explicit original), the JPEG 2000 one cannot be → 406 for the study, 200 for the one.
    let explicit_le = (
        "Accept",
        "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1"
            .to_owned(),
    );
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &inst,
        &[auth.clone(), explicit_le.clone()],
        None,
    )
    .await;
    assert_eq!(st, 200);
    let p = parts(header(&hs, "content-type"), &out);
    assert_eq!(
        p[0].0,
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    );
    let back = dir.path().join("back.dcm");
    std::fs::write(&back, &p[0].1).unwrap();
    assert_eq!(
        dataset_bytes(&back),
        dataset_bytes(&explicit),
        "transcoded data set differs"
    );
    let (st, _, out) = http(
        &wf.base,
        "GET",
        &format!("/dicomweb/studies/{study}"),
        &[auth.clone(), explicit_le],
        None,
    )
    .await;
    assert_eq!(st, 406, "{}", String::from_utf8_lossy(&out));
    // Frames: the uncompressed frame is the pixel data; the J2K frame is its codestream.
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &format!("{inst}/frames/1"),
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let p = parts(header(&hs, "content-type"), &out);
    assert_eq!(p[0].1.len(), 64 * 64 * 2);
    let sop2 = format!("{series}.2");
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series}/instances/{sop2}/frames/1"),
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let p = parts(header(&hs, "content-type"), &out);
    assert!(p[0].0.starts_with("image/jp2"), "{}", p[0].0);
    assert_eq!(&p[0].1[..4], &[0xFF, 0x4F, 0xFF, 0x51]);
    let (st, _, _) = http(
        &wf.base,
        "GET",
        &format!("{inst}/frames/2"),
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(st, 404);
    // Rendered: a PNG of the frame's size.
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &format!("{inst}/rendered"),
        &[auth.clone(), ("Accept", "image/png".into())],
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(header(&hs, "content-type"), "image/png");
    assert_eq!(&out[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(out[16..20].try_into().unwrap()), 64);
    let (st, _, _) = http(
        &wf.base,
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series}/instances/{sop2}/rendered"),
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(st, 406);
    // Metadata: DICOM JSON, the name as PN, no pixel data.
    let (st, hs, out) = http(
        &wf.base,
        "GET",
        &format!("{inst}/metadata"),
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(header(&hs, "content-type"), "application/dicom+json");
    let m: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(m[0]["00100010"]["Value"][0]["Alphabetic"], "Li^Si", "{m}");
    assert_eq!(m[0]["00280010"]["Value"][0], 64);
    assert!(m[0].get("7FE00010").is_none());
    // STOW into the wrong study's URL: refused per instance (A900 = 43264), 409 when none.
    let (body, ct) = stow_body(&[originals[0].clone()]);
    let (st, _, out) = http(
        &wf.base,
        "POST",
        "/dicomweb/studies/1.2.3.4",
        &[auth.clone(), ("Content-Type", ct)],
        Some((&body, 4096)),
    )
    .await;
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    // Not multipart: 415, answered after the body was read (4 MiB here: the client writes it
    // all before it reads, and a server that closed at once would reset it mid-write).
    let big = originals[0].repeat((4 << 20) / originals[0].len() + 1);
    let (st, _, out) = http(
        &wf.base,
        "POST",
        "/dicomweb/studies",
        &[auth.clone(), ("Content-Type", "application/dicom".into())],
        Some((&big, 4096)),
    )
    .await;
    assert_eq!(st, 415, "{}", String::from_utf8_lossy(&out));
    // The journal has the instance events of the pipeline.
    let msgs = crate::support::journaled(&wf.engine.store, "imaging").await;
    assert_eq!(msgs.len(), 2, "one message per stored instance");
    let _ = wf.stop().await;
}
