//! The engine's object store: large binary objects (the call's recordings, and whatever else
//! needs one) as files under `objects.dir`, encrypted at rest with the engine's data keys
//! ([`crate::crypto`]) and hashed SHA-256 as they are written. Generic: it knows ids and bytes,
//! not what they mean; the rows that say what an object is live with their owner (recordings:
//! `store/recordings.rs`). DICOM keeps its own layout (adapters/dicom/src/objects.rs).
//!
//! **Layout.** `dir/<first two characters of the id>/<id>`, written as `<id>.part` and renamed
//! when finished, so a crash leaves no half object under a final name.
//!
//! **Format.** `HZOB1\n`, one flag byte (1: sealed, 0: in clear because encryption is off),
//! then records: a big-endian `u32` length and the record. Each record is one chunk of at most
//! [`CHUNK`] plaintext bytes; with encryption on it is sealed on its own
//! ([`crate::crypto::Cipher::seal`]) bound to (object id, `chunk/<n>`), the last one to
//! (object id, `chunk/<n>/last`): a chunk moved, dropped, swapped with another object's or cut
//! off at the end does not open. Objects are written as a stream; only the first chunk stays in
//! memory until [`ObjectWriter::finish`], so a writer may seek back into it and patch a header
//! (the IVF writer's frame count), and every later chunk goes to disk as it fills.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crypto::{Binding, Cipher, Keyring};

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 1 << 20;

const MAGIC: &[u8] = b"HZOB1\n";
const HEADER: u64 = MAGIC.len() as u64 + 1;

/// `objects:` in the root config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    /// Where objects are kept (default `data/objects`); relative to the working directory.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        ObjectsConfig { dir: default_dir() }
    }
}

fn default_dir() -> PathBuf {
    "data/objects".into()
}

/// What went wrong with an object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {id}: {source}")]
    Io { id: String, source: io::Error },
    #[error("object {id:?}: not an object id")]
    BadId { id: String },
    #[error("object {id}: not found")]
    NotFound { id: String },
    #[error("object {id}, chunk {chunk}: {why}")]
    Corrupt { id: String, chunk: u64, why: String },
}

/// A finished object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    pub id: String,
    /// SHA-256 of the plaintext, lower-case hex.
    pub sha256: String,
    /// Plaintext bytes.
    pub bytes: u64,
    /// The data key it was sealed with (`None`: encryption is off).
    pub key: Option<String>,
}

/// The object store of an engine.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    dir: PathBuf,
    keyring: Option<Arc<Keyring>>,
}

fn valid_id(id: &str) -> bool {
    id.len() >= 3
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ObjectStore {
    /// The store under `dir` (created, private), sealing with `keyring` when encryption is on.
    pub fn open(dir: &Path, keyring: Option<Arc<Keyring>>) -> io::Result<ObjectStore> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(ObjectStore {
            dir: dir.to_owned(),
            keyring,
        })
    }

    /// Where `id` lives.
    pub fn path(&self, id: &str) -> Result<PathBuf, ObjectError> {
        if !valid_id(id) {
            return Err(ObjectError::BadId { id: id.into() });
        }
        Ok(self.dir.join(&id[..2]).join(id))
    }

    /// A new object with a fresh id.
    pub fn create(&self) -> Result<ObjectWriter, ObjectError> {
        self.create_with_id(&crate::message::new_id())
    }

    /// A new object named `id` (letters, digits, `-`, `_`).
    pub fn create_with_id(&self, id: &str) -> Result<ObjectWriter, ObjectError> {
        let path = self.path(id)?;
        let io = |source| ObjectError::Io {
            id: id.into(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let part = path.with_extension("part");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(io)?;
        let cipher = self.keyring.as_ref().map(|k| k.cipher());
        file.write_all(MAGIC).map_err(io)?;
        file.write_all(&[u8::from(cipher.is_some())]).map_err(io)?;
        Ok(ObjectWriter {
            id: id.into(),
            path,
            part,
            file: Some(file),
            cipher,
            first: Vec::new(),
            current: Vec::new(),
            chunks: 0,
            patch: None,
            bytes: 0,
            finished: false,
        })
    }

    /// Reads `id` back, chunk by chunk, decrypted.
    pub fn read(&self, id: &str) -> Result<ObjectReader, ObjectError> {
        let path = self.path(id)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ObjectError::NotFound { id: id.into() });
            }
            Err(source) => {
                return Err(ObjectError::Io {
                    id: id.into(),
                    source,
                });
            }
        };
        let mut r = BufReader::new(file);
        let mut head = [0u8; HEADER as usize];
        r.read_exact(&mut head).map_err(|e| ObjectError::Corrupt {
            id: id.into(),
            chunk: 0,
            why: format!("no header: {e}"),
        })?;
        if &head[..MAGIC.len()] != MAGIC || head[MAGIC.len()] > 1 {
            return Err(ObjectError::Corrupt {
                id: id.into(),
                chunk: 0,
                why: "not an object file".into(),
            });
        }
        let sealed = head[MAGIC.len()] == 1;
        if sealed && self.keyring.is_none() {
            return Err(ObjectError::Corrupt {
                id: id.into(),
                chunk: 0,
                why: "sealed, and encryption is off in this engine: no keys to open it".into(),
            });
        }
        if !sealed && self.keyring.is_some() {
            return Err(ObjectError::Corrupt {
                id: id.into(),
                chunk: 0,
                why: crate::crypto::CryptoError::Clear.to_string(),
            });
        }
        Ok(ObjectReader {
            id: id.into(),
            file: r,
            cipher: None,
            keyring: if sealed { self.keyring.clone() } else { None },
            chunk: 0,
            done: false,
        })
    }

    /// Reads all of `id` and checks it against `sha256` (hex).
    pub fn read_all(&self, id: &str, sha256: Option<&str>) -> Result<Vec<u8>, ObjectError> {
        let mut out = Vec::new();
        for c in self.read(id)? {
            out.extend_from_slice(&c?);
        }
        if let Some(want) = sha256 {
            let got = hex::encode(Sha256::digest(&out));
            if !got.eq_ignore_ascii_case(want) {
                return Err(ObjectError::Corrupt {
                    id: id.into(),
                    chunk: 0,
                    why: format!("SHA-256 {got}, recorded {want}"),
                });
            }
        }
        Ok(out)
    }
}

fn chunk_field(n: u64, last: bool) -> String {
    if last {
        format!("chunk/{n}/last")
    } else {
        format!("chunk/{n}")
    }
}

/// An object being written: `Write`, and `Seek` within its first chunk (to patch a header).
pub struct ObjectWriter {
    id: String,
    path: PathBuf,
    part: PathBuf,
    file: Option<File>,
    cipher: Option<Arc<Cipher>>,
    /// The first chunk, kept until `finish`.
    first: Vec<u8>,
    /// The chunk being filled (after the first).
    current: Vec<u8>,
    /// Chunks written to disk after the first.
    chunks: u64,
    /// A seek back into the first chunk: where the next write goes.
    patch: Option<usize>,
    bytes: u64,
    finished: bool,
}

impl ObjectWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn record(&self, n: u64, plain: &[u8], last: bool) -> Vec<u8> {
        let body = match &self.cipher {
            Some(c) => c.seal(plain, &Binding::new(&self.id, &chunk_field(n, last))),
            None => plain.to_vec(),
        };
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Bytes a full first chunk takes on disk (its length prefix included).
    fn first_record_len(&self) -> u64 {
        let overhead = self
            .cipher
            .as_ref()
            .map(|c| c.seal(&[], &Binding::new(&self.id, "chunk/0")).len())
            .unwrap_or(0);
        4 + (CHUNK + overhead) as u64
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the object is finished"))
    }

    /// Writes the full `current` chunk (not the last) after the first chunk's reserved place.
    fn flush_current(&mut self) -> io::Result<()> {
        let n = self.chunks + 1;
        let rec = self.record(n, &self.current, false);
        if self.chunks == 0 {
            let at = HEADER + self.first_record_len();
            self.file()?.seek(SeekFrom::Start(at))?;
        }
        self.file()?.write_all(&rec)?;
        self.chunks += 1;
        self.current.clear();
        Ok(())
    }

    /// Seals the last chunk and the first, reads the file back (every chunk opens; the SHA-256
    /// of the plaintext), renames it into place.
    pub fn finish(mut self) -> Result<ObjectInfo, ObjectError> {
        let id = self.id.clone();
        let io = |source| ObjectError::Io {
            id: id.clone(),
            source,
        };
        let single = self.chunks == 0 && self.current.is_empty();
        if !single {
            let n = self.chunks + 1;
            let rec = self.record(n, &self.current, true);
            if self.chunks == 0 {
                let at = HEADER + self.first_record_len();
                self.file()
                    .map_err(io)?
                    .seek(SeekFrom::Start(at))
                    .map_err(io)?;
            }
            self.file().map_err(io)?.write_all(&rec).map_err(io)?;
        }
        let first = self.record(0, &self.first, single);
        let file = self.file().map_err(io)?;
        file.seek(SeekFrom::Start(HEADER)).map_err(io)?;
        file.write_all(&first).map_err(io)?;
        file.sync_all().map_err(io)?;
        self.file = None;
        // Read back what was written: every chunk must open, and this is the hash.
        let reader = ObjectReader {
            id: self.id.clone(),
            file: {
                let mut f = BufReader::new(File::open(&self.part).map_err(io)?);
                f.seek(SeekFrom::Start(HEADER)).map_err(io)?;
                f
            },
            cipher: self.cipher.clone(),
            keyring: None,
            chunk: 0,
            done: false,
        };
        let mut hash = Sha256::new();
        let mut bytes = 0u64;
        for c in reader {
            let c = c?;
            bytes += c.len() as u64;
            hash.update(&c);
        }
        if bytes != self.bytes {
            return Err(ObjectError::Corrupt {
                id: self.id.clone(),
                chunk: 0,
                why: format!("{bytes} bytes read back, {} written", self.bytes),
            });
        }
        std::fs::rename(&self.part, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.finished = true;
        Ok(ObjectInfo {
            id: self.id.clone(),
            sha256: hex::encode(hash.finalize()),
            bytes,
            key: self.cipher.as_ref().map(|c| c.active().to_owned()),
        })
    }

    /// Drops what was written (nothing is left on disk).
    pub fn abandon(mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.part);
        self.finished = true;
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Neither finished nor abandoned: the part file stays for an operator to look at;
            // it never becomes an object.
            tracing::warn!(object = %self.id, "object dropped unfinished; {} left", self.part.display());
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(at) = self.patch {
            // Patching the first chunk in place: never past what it holds.
            let room = self.first.len().saturating_sub(at);
            if room == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "writing past the end after a seek back: seek to the end first",
                ));
            }
            let n = room.min(buf.len());
            self.first[at..at + n].copy_from_slice(&buf[..n]);
            self.patch = Some(at + n);
            return Ok(n);
        }
        let mut rest = buf;
        if self.first.len() < CHUNK {
            let n = (CHUNK - self.first.len()).min(rest.len());
            self.first.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        while !rest.is_empty() {
            // A full chunk is written once more arrives, so the last one is sealed as last.
            if self.current.len() == CHUNK {
                self.flush_current()?;
            }
            let n = (CHUNK - self.current.len()).min(rest.len());
            self.current.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ObjectWriter {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let end = self.bytes;
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => end.checked_add_signed(d),
            SeekFrom::Current(d) => {
                let here = self.patch.map(|p| p as u64).unwrap_or(end);
                here.checked_add_signed(d)
            }
        };
        match target {
            Some(t) if t == end => {
                self.patch = None;
                Ok(t)
            }
            Some(t) if t < self.first.len() as u64 => {
                self.patch = Some(t as usize);
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an object seeks only back into its first chunk, or to its end",
            )),
        }
    }
}

/// An object read back: its plaintext chunks in order.
pub struct ObjectReader {
    id: String,
    file: BufReader<File>,
    /// Opens with this cipher (a writer reading back its own object).
    cipher: Option<Arc<Cipher>>,
    /// Opens with the key ring (sealed objects of the store).
    keyring: Option<Arc<Keyring>>,
    chunk: u64,
    done: bool,
}

impl ObjectReader {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ObjectError> {
        if self.done {
            return Ok(None);
        }
        let n = self.chunk;
        let id = self.id.clone();
        let corrupt = |why: String| ObjectError::Corrupt {
            id: id.clone(),
            chunk: n,
            why,
        };
        let mut len = [0u8; 4];
        match self.file.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if self.cipher.is_some() || self.keyring.is_some() {
                    return Err(corrupt("cut short: the last chunk is missing".into()));
                }
                self.done = true;
                return Ok(None);
            }
            Err(e) => return Err(corrupt(e.to_string())),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > CHUNK + 1024 {
            return Err(corrupt(format!("a record of {len} bytes")));
        }
        let mut rec = vec![0u8; len];
        self.file
            .read_exact(&mut rec)
            .map_err(|e| corrupt(format!("cut short: {e}")))?;
        self.chunk += 1;
        let open = |last: bool| -> Option<Result<Vec<u8>, crate::crypto::CryptoError>> {
            let field = chunk_field(n, last);
            let b = Binding::new(&id, &field);
            if let Some(c) = &self.cipher {
                Some(c.open(&rec, &b))
            } else {
                self.keyring.as_ref().map(|k| k.open(&rec, &b))
            }
        };
        match open(false) {
            None => Ok(Some(rec)),
            Some(Ok(plain)) => Ok(Some(plain)),
            Some(Err(_)) => match open(true) {
                Some(Ok(plain)) => {
                    self.done = true;
                    Ok(Some(plain))
                }
                Some(Err(e)) => Err(corrupt(e.to_string())),
                None => Ok(Some(rec)),
            },
        }
    }
}

impl Iterator for ObjectReader {
    type Item = Result<Vec<u8>, ObjectError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
