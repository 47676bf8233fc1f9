//! The filesystem object store: one Part 10 file per instance at
//! `<root>/<study uid>/<series uid>/<sop instance uid>.dcm` (UIDs are checked to be digits and
//! dots before they become path components).
//!
//! An instance is streamed: its file meta header (written with dicom-object, from the C-STORE
//! command and the presentation context) goes to `<root>/.incoming/<uuid>.part`, then each data
//! fragment as it arrives, hashed (SHA-256 of the data set as sent) on the way; nothing of it
//! is held in memory beyond one PDU. Once complete and read for the index it is renamed into
//! place (a resend replaces the file atomically). With the store's `power-loss` durability the
//! file and its folder are fsynced before the instance is acknowledged; with `process-crash` (the
//! default, as for the journal) the page cache is trusted. An instance that cannot be read is
//! moved to `<root>/.rejected/` and journaled as a dead letter, not dropped.

use std::io;
use std::path::{Path, PathBuf};

use dicom_object::meta::FileMetaTableBuilder;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::dataset::{self, Element, ScanError, Syntax, Want};

/// Bytes of an instance gathered before they are written (per association being received).
const WRITE_BUFFER: usize = 256 * 1024;

/// Where instances are kept.
#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
    sync: bool,
}

/// What the file meta header of an incoming instance says.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax: &'a str,
    pub calling_ae: &'a str,
}

/// An instance being received.
#[derive(Debug)]
pub struct Incoming {
    file: tokio::io::BufWriter<tokio::fs::File>,
    tmp: PathBuf,
    hasher: Sha256,
    dataset_bytes: u64,
    dataset_offset: u64,
    sync: bool,
}

/// A completely received instance, not yet in place.
#[derive(Debug)]
pub struct Received {
    tmp: PathBuf,
    pub sha256: String,
    /// The data set's size as sent.
    pub dataset_bytes: u64,
    dataset_offset: u64,
    sync: bool,
}

impl Objects {
    pub fn new(root: impl Into<PathBuf>, sync: bool) -> Objects {
        Objects {
            root: root.into(),
            sync,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn incoming_dir(&self) -> PathBuf {
        self.root.join(".incoming")
    }

    /// Creates the folders and removes what an interrupted run left in `.incoming` (never
    /// acknowledged, so the sender still has it): partial files not written to for
    /// `stale_after` (another engine process sharing the folder may be writing the fresh ones).
    pub async fn prepare(&self, stale_after: std::time::Duration) -> io::Result<()> {
        let incoming = self.incoming_dir();
        tokio::fs::create_dir_all(&incoming).await?;
        tokio::fs::create_dir_all(self.root.join(".rejected")).await?;
        let mut dir = tokio::fs::read_dir(&incoming).await?;
        while let Some(e) = dir.next_entry().await? {
            let stale = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= stale_after);
            if stale && e.file_name().to_string_lossy().ends_with(".part") {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
        Ok(())
    }

    /// Starts an instance: writes the preamble, `DICM` and the file meta group.
    pub async fn begin(&self, meta: &Meta<'_>) -> io::Result<Incoming> {
        let header = file_header(meta)?;
        let tmp = self
            .incoming_dir()
            .join(format!("{}.part", huizhen_core::message::new_id()));
        // Senders' PDUs are often 16 KiB: gathered into larger writes, each a blocking-pool hop.
        let mut file =
            tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::create(&tmp).await?);
        file.write_all(&header).await?;
        Ok(Incoming {
            file,
            tmp,
            hasher: Sha256::new(),
            dataset_bytes: 0,
            dataset_offset: header.len() as u64,
            sync: self.sync,
        })
    }

    /// Starts an instance whose Part 10 header comes as sent (STOW-RS keeps the sender's file
    /// meta group): write it with [`Incoming::write_header`], then the data set.
    pub async fn begin_raw(&self) -> io::Result<Incoming> {
        let tmp = self
            .incoming_dir()
            .join(format!("{}.part", huizhen_core::message::new_id()));
        let file =
            tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::create(&tmp).await?);
        Ok(Incoming {
            file,
            tmp,
            hasher: Sha256::new(),
            dataset_bytes: 0,
            dataset_offset: 0,
            sync: self.sync,
        })
    }

    /// Where an instance lives.
    pub fn path_of(&self, study: &str, series: &str, instance: &str) -> PathBuf {
        self.root
            .join(study)
            .join(series)
            .join(format!("{instance}.dcm"))
    }

    /// Moves a received instance to its place (the UIDs must be valid, see
    /// [`crate::uids::is_valid`]).
    pub async fn place(
        &self,
        r: &Received,
        study: &str,
        series: &str,
        instance: &str,
    ) -> io::Result<PathBuf> {
        for uid in [study, series, instance] {
            if !crate::uids::is_valid(uid) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{uid:?} is not a valid UID"),
                ));
            }
        }
        let to = self.path_of(study, series, instance);
        let dir = to.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(&r.tmp, &to).await?;
        if r.sync {
            sync_dir(dir).await?;
        }
        Ok(to)
    }

    /// Keeps an instance that could not be indexed under `.rejected/` for a person to look
    /// at; returns where.
    pub async fn reject(&self, r: Received) -> io::Result<PathBuf> {
        let name = r
            .tmp
            .file_name()
            .map(|n| n.to_string_lossy().replace(".part", ".dcm"))
            .unwrap_or_else(|| "unnamed.dcm".into());
        let to = self.root.join(".rejected").join(name);
        tokio::fs::rename(&r.tmp, &to).await?;
        Ok(to)
    }
}

async fn sync_dir(dir: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// Preamble, `DICM` and the file meta group.
pub(crate) fn file_header(meta: &Meta<'_>) -> io::Result<Vec<u8>> {
    let table = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(meta.sop_class_uid)
        .media_storage_sop_instance_uid(meta.sop_instance_uid)
        .transfer_syntax(meta.transfer_syntax)
        .implementation_class_uid(crate::uids::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::uids::IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(meta.calling_ae)
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("file meta: {e}")))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    table
        .write(&mut out)
        .map_err(|e| io::Error::other(format!("file meta: {e}")))?;
    Ok(out)
}

impl Incoming {
    /// Appends a data fragment.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.dataset_bytes += data.len() as u64;
        self.file.write_all(data).await
    }

    /// Appends bytes of the Part 10 header (before any data set byte: not hashed, not counted).
    pub async fn write_header(&mut self, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(
            self.dataset_bytes, 0,
            "the header comes before the data set"
        );
        self.dataset_offset += data.len() as u64;
        self.file.write_all(data).await
    }

    /// The data set is complete.
    pub async fn finish(mut self) -> io::Result<Received> {
        self.file.flush().await?;
        if self.sync {
            self.file.get_ref().sync_all().await?;
        }
        Ok(Received {
            tmp: self.tmp,
            sha256: hex::encode(self.hasher.finalize()),
            dataset_bytes: self.dataset_bytes,
            dataset_offset: self.dataset_offset,
            sync: self.sync,
        })
    }

    /// Throws away a partial instance (the association ended inside it).
    pub async fn abandon(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

/// Where a received data set can be read from (owned, for a blocking task).
#[derive(Debug, Clone)]
pub struct IndexSource {
    path: PathBuf,
    offset: u64,
}

impl IndexSource {
    /// Reads the top-level elements the index needs (blocking: run it off the runtime).
    pub fn read(&self, transfer_syntax: &str) -> Result<Vec<Element>, ScanError> {
        use std::io::{BufReader, Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let r = BufReader::with_capacity(16 * 1024, f);
        let (syntax, deflated) = Syntax::of(transfer_syntax);
        let want = Want {
            until: crate::record::INDEX_UNTIL,
            tags: Some(crate::record::INDEX_TAGS),
            max_value: 64 * 1024,
        };
        if deflated {
            let inflated: Box<dyn Read> = Box::new(flate2::read::DeflateDecoder::new(r));
            dataset::scan(inflated, syntax, want)
        } else {
            dataset::scan(r, syntax, want)
        }
    }
}

impl Received {
    /// What reads its index attributes.
    pub fn index_source(&self) -> IndexSource {
        IndexSource {
            path: self.tmp.clone(),
            offset: self.dataset_offset,
        }
    }

    /// Deletes it.
    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }

    /// Where it is now (for logs and tests).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_instance_is_streamed_read_and_placed() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::new(dir.path().join("dicom"), true);
        objects.prepare(Duration::ZERO).await.unwrap();
        let mut inc = objects
            .begin(&Meta {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.7",
                sop_instance_uid: "1.2.3.4",
                transfer_syntax: crate::uids::EXPLICIT_VR_LE,
                calling_ae: "CT01",
            })
            .await
            .unwrap();
        // Explicit VR LE: (0010,0020) LO "P001", then (0020,000D) UI "1.2.3".
        let ds: &[u8] = b"\x10\x00\x20\x00LO\x04\x00P001\x20\x00\x0d\x00UI\x06\x001.2.3\0";
        inc.write(&ds[..10]).await.unwrap();
        inc.write(&ds[10..]).await.unwrap();
        let r = inc.finish().await.unwrap();
        assert_eq!(r.dataset_bytes, ds.len() as u64);
        assert_eq!(r.sha256, hex::encode(Sha256::digest(ds)));
        let els = r.index_source().read(crate::uids::EXPLICIT_VR_LE).unwrap();
        assert_eq!(els.len(), 2);
        // The file is a Part 10 file dicom-object opens, with our meta.
        let obj = dicom_object::open_file(r.tmp_path()).unwrap();
        assert_eq!(obj.meta().media_storage_sop_instance_uid(), "1.2.3.4");
        assert_eq!(obj.meta().source_application_entity_title(), Some("CT01"));
        let to = objects
            .place(&r, "1.2.3", "1.2.3.1", "1.2.3.4")
            .await
            .unwrap();
        assert!(to.ends_with("1.2.3/1.2.3.1/1.2.3.4.dcm"));
        assert!(to.exists());
        // Nothing is left in .incoming, and bad UIDs never become paths.
        let inc = objects
            .begin(&Meta {
                sop_class_uid: "1.2",
                sop_instance_uid: "1.2",
                transfer_syntax: crate::uids::EXPLICIT_VR_LE,
                calling_ae: "CT01",
            })
            .await
            .unwrap();
        let r = inc.finish().await.unwrap();
        assert!(objects.place(&r, "..", "1", "2").await.is_err());
        objects.prepare(Duration::from_secs(3600)).await.unwrap();
        let left = std::fs::read_dir(dir.path().join("dicom/.incoming"))
            .unwrap()
            .count();
        assert_eq!(left, 1, "a fresh partial file may be another process's");
        objects.prepare(Duration::ZERO).await.unwrap();
        let left = std::fs::read_dir(dir.path().join("dicom/.incoming"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "a restart clears unacknowledged partial files");
    }
}
