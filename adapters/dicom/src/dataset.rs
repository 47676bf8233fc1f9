//! A reader of a data set's top-level elements as raw bytes, streaming, for the index and
//! queries: it stops at the first tag past what is wanted (so a 0.5 MiB CT slice is read up to
//! group 0020, never its pixels), skips sequences of any nesting (defined or undefined length),
//! and keeps text values undecoded so [`crate::charset`] can decode them with the object's
//! Specific Character Set (DCM-04). Implicit and Explicit VR Little Endian, Explicit VR Big
//! Endian, and (wrapped by the caller in an inflater) Deflated Explicit VR Little Endian; the
//! encapsulated syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE, …) encode their data sets as Explicit
//! VR Little Endian.
//!
//! Also the Part 10 header: [`read_file_meta`] reads the preamble, `DICM` and group 0002.

use std::io::{self, Read};

/// How a data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

impl Syntax {
    /// The encoding of data sets in transfer syntax `ts`, and whether they are deflated.
    pub fn of(ts: &str) -> (Syntax, bool) {
        match ts.trim_end_matches('\0') {
            crate::uids::IMPLICIT_VR_LE => (Syntax::ImplicitLe, false),
            crate::uids::EXPLICIT_VR_BE => (Syntax::ExplicitBe, false),
            crate::uids::DEFLATED_EXPLICIT_VR_LE => (Syntax::ExplicitLe, true),
            _ => (Syntax::ExplicitLe, false),
        }
    }
}

/// A tag as `group << 16 | element`.
pub type Tag = u32;

pub const fn tag(group: u16, element: u16) -> Tag {
    ((group as u32) << 16) | element as u32
}

const ITEM: Tag = tag(0xFFFE, 0xE000);
const ITEM_END: Tag = tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = tag(0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;

/// A top-level element: tag, VR (explicit syntaxes only) and the value's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub tag: Tag,
    pub vr: Option<[u8; 2]>,
    pub value: Vec<u8>,
}

/// Why a data set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("the data set ends inside element {}", show(*.0))]
    Truncated(Tag),
    #[error("element {}: {}", show(*.0), .1)]
    Malformed(Tag, String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// `(GGGG,EEEE)`.
pub fn show(t: Tag) -> String {
    format!("({:04X},{:04X})", t >> 16, t & 0xFFFF)
}

/// What to keep of the elements read.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// Stop before the first top-level tag at or past this one.
    pub until: Tag,
    /// Keep only these tags (all when `None`); sequences are always skipped.
    pub tags: Option<&'a [Tag]>,
    /// Values longer than this are skipped, not kept.
    pub max_value: usize,
}

/// An element header: tag, VR (explicit syntaxes), value length.
type Header = (Tag, Option<[u8; 2]>, u32);

/// Sequences nested deeper than this are refused (a crafted object cannot exhaust the stack).
const MAX_DEPTH: usize = 16;

struct Reader<R> {
    r: R,
    syntax: Syntax,
}

impl<R: Read> Reader<R> {
    /// Fills `buf`; `Ok(false)` at a clean end before the first byte.
    fn fill(&mut self, buf: &mut [u8], at: Tag) -> Result<bool, ScanError> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(ScanError::Truncated(at)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Fills `buf`, which must be there (the middle of an element).
    fn need(&mut self, buf: &mut [u8], at: Tag) -> Result<(), ScanError> {
        if self.fill(buf, at)? {
            Ok(())
        } else {
            Err(ScanError::Truncated(at))
        }
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        match self.syntax {
            Syntax::ExplicitBe => u16::from_be_bytes(b),
            _ => u16::from_le_bytes(b),
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        match self.syntax {
            Syntax::ExplicitBe => u32::from_be_bytes(b),
            _ => u32::from_le_bytes(b),
        }
    }

    /// The next element header: tag, VR, length; `None` at a clean end.
    fn header(&mut self) -> Result<Option<Header>, ScanError> {
        let mut t = [0u8; 4];
        if !self.fill(&mut t, 0)? {
            return Ok(None);
        }
        let tg = tag(self.u16([t[0], t[1]]), self.u16([t[2], t[3]]));
        if tg >> 16 == 0xFFFE || self.syntax == Syntax::ImplicitLe {
            let mut l = [0u8; 4];
            self.need(&mut l, tg)?;
            return Ok(Some((tg, None, self.u32(l))));
        }
        let mut vr = [0u8; 2];
        self.need(&mut vr, tg)?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(ScanError::Malformed(
                tg,
                format!("{vr:02X?} is not a value representation (wrong transfer syntax?)"),
            ));
        }
        let long = matches!(
            &vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"SV"
                | b"UV"
        );
        let len = if long {
            let mut l = [0u8; 6];
            self.need(&mut l, tg)?;
            self.u32([l[2], l[3], l[4], l[5]])
        } else {
            let mut l = [0u8; 2];
            self.need(&mut l, tg)?;
            u32::from(self.u16(l))
        };
        Ok(Some((tg, Some(vr), len)))
    }

    fn skip(&mut self, n: u64, at: Tag) -> Result<(), ScanError> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if copied < n {
            return Err(ScanError::Truncated(at));
        }
        Ok(())
    }

    fn read_value(&mut self, n: u32, at: Tag) -> Result<Vec<u8>, ScanError> {
        let mut v = vec![0u8; n as usize];
        self.need(&mut v, at)?;
        Ok(v)
    }

    /// Skips the items of a sequence of undefined length, up to its delimiter.
    fn skip_sequence(&mut self, at: Tag, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Malformed(
                at,
                format!("sequences nested deeper than {MAX_DEPTH}"),
            ));
        }
        loop {
            let Some((t, _, len)) = self.header()? else {
                return Err(ScanError::Truncated(at));
            };
            match t {
                SEQUENCE_END => return Ok(()),
                ITEM if len == UNDEFINED => self.skip_item(at, depth + 1)?,
                ITEM => self.skip(u64::from(len), at)?,
                _ => {
                    return Err(ScanError::Malformed(
                        at,
                        format!("({:04X},{:04X}) inside a sequence", t >> 16, t & 0xFFFF),
                    ));
                }
            }
        }
    }

    /// Skips the elements of an item of undefined length, up to its delimiter.
    fn skip_item(&mut self, at: Tag, depth: usize) -> Result<(), ScanError> {
        loop {
            let Some((t, _, len)) = self.header()? else {
                return Err(ScanError::Truncated(at));
            };
            if t == ITEM_END {
                return Ok(());
            }
            if len == UNDEFINED {
                self.skip_sequence(at, depth)?;
            } else {
                self.skip(u64::from(len), at)?;
            }
        }
    }
}

/// Reads the top-level elements of a data set (see [`Want`]).
pub fn scan<R: Read>(r: R, syntax: Syntax, want: Want<'_>) -> Result<Vec<Element>, ScanError> {
    let mut rd = Reader { r, syntax };
    let mut out = Vec::new();
    while let Some((t, vr, len)) = rd.header()? {
        if t >= want.until {
            break;
        }
        let is_sequence = len == UNDEFINED || vr == Some(*b"SQ");
        if len == UNDEFINED {
            rd.skip_sequence(t, 1)?;
            continue;
        }
        let keep = !is_sequence
            && (len as usize) <= want.max_value
            && want.tags.is_none_or(|ts| ts.contains(&t));
        if keep {
            let value = rd.read_value(len, t)?;
            out.push(Element { tag: t, vr, value });
        } else {
            rd.skip(u64::from(len), t)?;
        }
    }
    Ok(out)
}

/// The Part 10 header of a file: the file meta elements and the transfer syntax UID. The
/// reader is left at the first byte of the data set.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub elements: Vec<Element>,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// Reads the preamble, `DICM` and the file meta group (Explicit VR Little Endian).
pub fn read_file_meta<R: Read>(r: &mut R) -> Result<FileMeta, ScanError> {
    let mut head = [0u8; 132];
    let mut rd = Reader {
        r: &mut *r,
        syntax: Syntax::ExplicitLe,
    };
    let complete = match rd.fill(&mut head, 0) {
        Ok(c) => c,
        Err(ScanError::Truncated(_)) => false,
        Err(e) => return Err(e),
    };
    if !complete || &head[128..] != b"DICM" {
        return Err(ScanError::Malformed(
            0,
            "not a DICOM Part 10 file (no DICM after the 128-byte preamble)".into(),
        ));
    }
    let Some((t, _, len)) = rd.header()? else {
        return Err(ScanError::Truncated(0));
    };
    if t != tag(0x0002, 0x0000) || len != 4 {
        return Err(ScanError::Malformed(
            t,
            "the file meta group does not start with its group length".into(),
        ));
    }
    let mut l = [0u8; 4];
    rd.need(&mut l, t)?;
    let group_len = u32::from_le_bytes(l);
    if group_len > 1 << 20 {
        return Err(ScanError::Malformed(
            t,
            format!("file meta group of {group_len} bytes"),
        ));
    }
    let group = rd.read_value(group_len, t)?;
    let elements = scan(
        &group[..],
        Syntax::ExplicitLe,
        Want {
            until: tag(0x0003, 0),
            tags: None,
            max_value: 1 << 16,
        },
    )?;
    let text = |tg: Tag| {
        elements
            .iter()
            .find(|e| e.tag == tg)
            .map(|e| uid_text(&e.value))
            .unwrap_or_default()
    };
    let transfer_syntax = text(tag(0x0002, 0x0010));
    if transfer_syntax.is_empty() {
        return Err(ScanError::Malformed(
            tag(0x0002, 0x0010),
            "the file meta group names no transfer syntax".into(),
        ));
    }
    Ok(FileMeta {
        sop_class_uid: text(tag(0x0002, 0x0002)),
        sop_instance_uid: text(tag(0x0002, 0x0003)),
        transfer_syntax,
        elements,
    })
}

/// A UI value as text (padding NUL and spaces removed).
pub fn uid_text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .trim()
        .to_owned()
}

/// A US value (first of several).
pub fn us(v: &[u8], syntax: Syntax) -> Option<u16> {
    let b: [u8; 2] = v.get(..2)?.try_into().ok()?;
    Some(match syntax {
        Syntax::ExplicitBe => u16::from_be_bytes(b),
        _ => u16::from_le_bytes(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit VR LE element bytes.
    fn ex(g: u16, e: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&g.to_le_bytes());
        b.extend_from_slice(&e.to_le_bytes());
        b.extend_from_slice(vr);
        b.extend_from_slice(&(value.len() as u16).to_le_bytes());
        b.extend_from_slice(value);
        b
    }

    fn im(g: u16, e: u16, len: u32, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&g.to_le_bytes());
        b.extend_from_slice(&e.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(value);
        b
    }

    const ALL: Want<'static> = Want {
        until: u32::MAX,
        tags: None,
        max_value: 1 << 16,
    };

    #[test]
    fn nested_undefined_length_sequences_are_skipped() {
        let mut ds = ex(0x0008, 0x0005, b"CS", b"GB18030 ");
        // (0008,1110) SQ, undefined length: one undefined-length item holding another
        // undefined-length sequence, then one defined-length item.
        ds.extend_from_slice(&[0x08, 0x00, 0x10, 0x11, b'S', b'Q', 0, 0]);
        ds.extend_from_slice(&UNDEFINED.to_le_bytes());
        ds.extend(im(0xFFFE, 0xE000, UNDEFINED, &[]));
        ds.extend(ex(0x0008, 0x1150, b"UI", b"1.2\0"));
        ds.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
        ds.extend_from_slice(&UNDEFINED.to_le_bytes());
        ds.extend(im(0xFFFE, 0xE000, 4, b"abcd"));
        ds.extend(im(0xFFFE, 0xE0DD, 0, &[]));
        ds.extend(im(0xFFFE, 0xE00D, 0, &[]));
        ds.extend(im(0xFFFE, 0xE000, 2, b"xy"));
        ds.extend(im(0xFFFE, 0xE0DD, 0, &[]));
        ds.extend(ex(0x0010, 0x0010, b"PN", b"Li^Si "));
        ds.extend(ex(0x0020, 0x000D, b"UI", b"1.2.3\0"));
        let got = scan(&ds[..], Syntax::ExplicitLe, ALL).unwrap();
        let tags: Vec<Tag> = got.iter().map(|e| e.tag).collect();
        assert_eq!(
            tags,
            [
                tag(0x0008, 0x0005),
                tag(0x0010, 0x0010),
                tag(0x0020, 0x000D)
            ]
        );
        assert_eq!(got[1].value, b"Li^Si ");
        // Stops before the first tag past `until`; reads only what it keeps.
        let some = scan(
            &ds[..],
            Syntax::ExplicitLe,
            Want {
                until: tag(0x0020, 0),
                tags: Some(&[tag(0x0010, 0x0010)]),
                max_value: 64,
            },
        )
        .unwrap();
        assert_eq!(some.len(), 1);
    }

    #[test]
    fn implicit_vr_and_big_endian() {
        let mut ds = im(0x0010, 0x0020, 4, b"P001");
        ds.extend(im(0x0008, 0x1111, UNDEFINED, &[]));
        ds.extend(im(0xFFFE, 0xE0DD, 0, &[]));
        ds.extend(im(0x0020, 0x0013, 2, b"7 "));
        let got = scan(&ds[..], Syntax::ImplicitLe, ALL).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].value, b"P001");
        let be = [
            0x00, 0x10, 0x00, 0x20, b'L', b'O', 0x00, 0x04, b'P', b'0', b'0', b'2',
        ];
        let got = scan(&be[..], Syntax::ExplicitBe, ALL).unwrap();
        assert_eq!(
            (got[0].tag, got[0].value.as_slice()),
            (tag(0x0010, 0x0020), &b"P002"[..])
        );
    }

    #[test]
    fn truncated_and_malformed_input_are_errors_not_panics() {
        let ds = ex(0x0010, 0x0010, b"PN", b"Li^Si ");
        for cut in 1..ds.len() {
            assert!(
                scan(&ds[..cut], Syntax::ExplicitLe, ALL).is_err(),
                "cut at {cut}"
            );
        }
        let implicit_read_as_explicit = im(0x0010, 0x0020, 4, b"P001");
        let e = scan(&implicit_read_as_explicit[..], Syntax::ExplicitLe, ALL).unwrap_err();
        assert!(e.to_string().contains("(0010,0020)"), "{e}");
        // A sequence nested 100 deep is refused, not recursed into.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend(im(0x0008, 0x1110, UNDEFINED, &[]));
            deep.extend(im(0xFFFE, 0xE000, UNDEFINED, &[]));
        }
        assert!(scan(&deep[..], Syntax::ImplicitLe, ALL).is_err());
    }

    #[test]
    fn file_meta_is_read_and_the_reader_left_at_the_data_set() {
        let mut group = ex(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0");
        group.extend(ex(0x0002, 0x0003, b"UI", b"1.2.3.4\0"));
        group.extend(ex(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2\0"));
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend(ex(
            0x0002,
            0x0000,
            b"UL",
            &(group.len() as u32).to_le_bytes(),
        ));
        file.extend(group);
        file.extend(im(0x0010, 0x0020, 4, b"P001"));
        let mut r = &file[..];
        let meta = read_file_meta(&mut r).unwrap();
        assert_eq!(meta.transfer_syntax, "1.2.840.10008.1.2");
        assert_eq!(meta.sop_instance_uid, "1.2.3.4");
        assert_eq!(r, &im(0x0010, 0x0020, 4, b"P001")[..]);
        assert!(read_file_meta(&mut &b"not dicom"[..]).is_err());
    }
}
