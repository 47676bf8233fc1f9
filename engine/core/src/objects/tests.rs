use super::*;

fn keyring(dir: &Path) -> Arc<Keyring> {
    let cfg = crate::crypto::EncryptionConfig {
        keys_file: dir.join("keys"),
        ..Default::default()
    };
    Keyring::from_config(&cfg).unwrap().expect("encryption on")
}

struct Tmp(PathBuf);

impl Tmp {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp() -> Tmp {
    let d = std::env::temp_dir().join(format!("huizhen-objects-{}", crate::message::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn objects_round_trip_sealed_and_hashed_at_every_size() {
    let dir = tmp();
    let store = ObjectStore::open(&dir.path().join("objects"), Some(keyring(dir.path()))).unwrap();
    for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17] {
        let plain = data(n);
        let mut w = store.create().unwrap();
        // Written in uneven pieces.
        for piece in plain.chunks(333_333) {
            w.write_all(piece).unwrap();
        }
        let info = w.finish().unwrap();
        assert_eq!(info.bytes, n as u64);
        assert_eq!(info.sha256, hex::encode(Sha256::digest(&plain)), "{n}");
        assert!(info.key.is_some());
        let back = store.read_all(&info.id, Some(&info.sha256)).unwrap();
        assert_eq!(back, plain, "{n} bytes");
        // At rest nothing of the plaintext shows (a run of 64 bytes).
        let raw = std::fs::read(store.path(&info.id).unwrap()).unwrap();
        if n >= 64 {
            assert!(!raw.windows(64).any(|w| w == &plain[..64]), "{n}: in clear");
        }
    }
}

#[test]
fn a_header_in_the_first_chunk_is_patched_at_the_end() {
    let dir = tmp();
    let store = ObjectStore::open(&dir.path().join("objects"), Some(keyring(dir.path()))).unwrap();
    let mut plain = data(2 * CHUNK + 5);
    let mut w = store.create().unwrap();
    w.write_all(&plain).unwrap();
    assert_eq!(w.seek(SeekFrom::Start(24)).unwrap(), 24);
    w.write_all(&[9, 9, 9, 9]).unwrap();
    // Past the first chunk: refused, not silently lost.
    assert!(w.seek(SeekFrom::Start(CHUNK as u64 + 3)).is_err());
    w.seek(SeekFrom::End(0)).unwrap();
    w.write_all(b"tail").unwrap();
    let info = w.finish().unwrap();
    plain[24..28].copy_from_slice(&[9, 9, 9, 9]);
    plain.extend_from_slice(b"tail");
    assert_eq!(store.read_all(&info.id, Some(&info.sha256)).unwrap(), plain);
}

#[test]
fn tampered_cut_or_moved_objects_do_not_open() {
    let dir = tmp();
    let store = ObjectStore::open(&dir.path().join("objects"), Some(keyring(dir.path()))).unwrap();
    let plain = data(2 * CHUNK + 100);
    let mut w = store.create().unwrap();
    w.write_all(&plain).unwrap();
    let a = w.finish().unwrap();
    let path = store.path(&a.id).unwrap();
    let raw = std::fs::read(&path).unwrap();
    // Cut after the second chunk: the last one is missing.
    let cut = HEADER as usize + 2 * (4 + CHUNK + 34 + a.key.as_ref().unwrap().len());
    std::fs::write(&path, &raw[..cut.min(raw.len() - 10)]).unwrap();
    assert!(store.read_all(&a.id, None).is_err());
    // One byte changed.
    let mut bad = raw.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let e = store.read_all(&a.id, None).unwrap_err();
    assert!(e.to_string().contains(&a.id), "{e}");
    // Copied under another id.
    std::fs::write(&path, &raw).unwrap();
    let other = "copied-object";
    let to = store.path(other).unwrap();
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(&to, &raw).unwrap();
    assert!(store.read_all(other, None).is_err());
    assert_eq!(store.read_all(&a.id, Some(&a.sha256)).unwrap(), plain);
    // A wrong recorded hash is an error too.
    assert!(store.read_all(&a.id, Some(&"0".repeat(64))).is_err());
    // Ids that would leave the folder are refused.
    assert!(matches!(
        store.read("../etc"),
        Err(ObjectError::BadId { .. })
    ));
}

#[test]
fn without_encryption_objects_are_kept_in_clear_and_still_hashed() {
    let dir = tmp();
    let store = ObjectStore::open(&dir.path().join("objects"), None).unwrap();
    let plain = data(CHUNK + 10);
    let mut w = store.create().unwrap();
    w.write_all(&plain).unwrap();
    let info = w.finish().unwrap();
    assert_eq!(info.key, None);
    assert_eq!(store.read_all(&info.id, Some(&info.sha256)).unwrap(), plain);
    // An engine with keys refuses an object in clear.
    let sealed = ObjectStore::open(&dir.path().join("objects"), Some(keyring(dir.path()))).unwrap();
    assert!(sealed.read(&info.id).is_err());
}
