//! `multipart/related` (RFC 2387 over RFC 2046 §5.1) both ways: a streaming reader for STOW-RS
//! bodies (parts come out as events while the body arrives: nothing is kept beyond one chunk and
//! the delimiter's length) and the writer WADO-RS answers with.

use bytes::{Bytes, BytesMut};

/// The `boundary` (and `type`) parameters of a `multipart/related` Content-Type.
pub fn parse_content_type(ct: &str) -> Result<(String, Option<String>), String> {
    let mut parts = split_params(ct);
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    if media != "multipart/related" {
        return Err(format!(
            "Content-Type {media:?}: STOW-RS takes multipart/related; type=\"application/dicom\""
        ));
    }
    let mut boundary = None;
    let mut ty = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "boundary" => boundary = Some(v),
                "type" => ty = Some(v.to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    let boundary = boundary
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or("multipart/related without a boundary (1 to 70 characters)")?;
    Ok((boundary, ty))
}

/// Splits `a; b="x;y"; c` at semicolons outside quotes.
pub fn split_params(s: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
}

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its headers (names lower-cased).
    Part(Vec<(String, String)>),
    /// Bytes of the current part's body.
    Data(Bytes),
    /// The current part ended.
    End,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Preamble,
    Headers,
    Body,
    /// A delimiter was read; what follows it decides.
    AfterDelim,
    Done,
}

/// A streaming `multipart` reader.
#[derive(Debug)]
pub struct Reader {
    /// `\r\n--boundary`.
    delim: Vec<u8>,
    buf: BytesMut,
    state: State,
    max_headers: usize,
}

impl Reader {
    pub fn new(boundary: &str) -> Reader {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary.as_bytes());
        Reader {
            delim,
            // The body may start with the delimiter without its CRLF.
            buf: BytesMut::from(&b"\r\n"[..]),
            state: State::Preamble,
            max_headers: 16 * 1024,
        }
    }

    /// Whether the closing delimiter was seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds a chunk; returns what it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Done => {
                    self.buf.clear();
                    return Ok(out);
                }
                State::Preamble => match find(&self.buf, &self.delim) {
                    Some(p) => {
                        let _ = self.buf.split_to(p + self.delim.len());
                        self.state = State::AfterDelim;
                    }
                    None => {
                        let keep = self.delim.len();
                        if self.buf.len() > keep {
                            let _ = self.buf.split_to(self.buf.len() - keep);
                        }
                        return Ok(out);
                    }
                },
                State::Headers => match find(&self.buf, b"\r\n\r\n") {
                    Some(p) => {
                        let head = self.buf.split_to(p + 4);
                        let text = std::str::from_utf8(&head[..p])
                            .map_err(|_| "a part's headers are not text")?;
                        let mut headers = Vec::new();
                        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                            let (k, v) = line.split_once(':').ok_or_else(|| {
                                format!("a part's header line {line:?} has no colon")
                            })?;
                            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                        }
                        out.push(Event::Part(headers));
                        self.state = State::Body;
                    }
                    None if self.buf.len() > self.max_headers => {
                        return Err("a part's headers exceed 16 KiB".into());
                    }
                    None => return Ok(out),
                },
                State::Body => match find(&self.buf, &self.delim) {
                    Some(p) => {
                        if p > 0 {
                            out.push(Event::Data(self.buf.split_to(p).freeze()));
                        }
                        let _ = self.buf.split_to(self.delim.len());
                        out.push(Event::End);
                        self.state = State::AfterDelim;
                    }
                    None => {
                        let keep = self.delim.len() - 1;
                        if self.buf.len() > keep {
                            let n = self.buf.len() - keep;
                            out.push(Event::Data(self.buf.split_to(n).freeze()));
                        }
                        return Ok(out);
                    }
                },
                State::AfterDelim => {
                    if !self.after_delimiter()? {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// After a delimiter: `--` closes, otherwise transport padding then CRLF opens a part.
    /// `Ok(false)`: not enough bytes yet (the caller keeps the delimiter).
    fn after_delimiter(&mut self) -> Result<bool, String> {
        if self.buf.len() < 2 {
            return Ok(false);
        }
        if &self.buf[..2] == b"--" {
            self.state = State::Done;
            return Ok(true);
        }
        match find(&self.buf, b"\r\n") {
            Some(p) => {
                if self.buf[..p].iter().any(|b| *b != b' ' && *b != b'\t') {
                    return Err("unexpected bytes after a multipart delimiter".into());
                }
                let _ = self.buf.split_to(p + 2);
                self.state = State::Headers;
                Ok(true)
            }
            None if self.buf.len() > 1024 => {
                Err("unexpected bytes after a multipart delimiter".into())
            }
            None => Ok(false),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A fresh boundary for an answer.
pub fn boundary() -> String {
    format!("huizhen-{}", huizhen_core::message::new_id())
}

/// The bytes that open a part.
pub fn part_head(boundary: &str, content_type: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let mut s = format!("--{boundary}\r\nContent-Type: {content_type}\r\n");
    for (k, v) in extra {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The bytes that close the body.
pub fn close(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&[u8]], boundary: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for p in parts {
            b.extend(part_head(boundary, "application/dicom", &[]));
            b.extend_from_slice(p);
            b.extend_from_slice(b"\r\n");
        }
        b.extend(close(boundary));
        b
    }

    fn run(body: &[u8], boundary: &str, chunk: usize) -> Vec<Vec<u8>> {
        let mut r = Reader::new(boundary);
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for c in body.chunks(chunk) {
            for e in r.push(c).unwrap() {
                match e {
                    Event::Part(h) => {
                        assert!(h.iter().any(|(k, _)| k == "content-type"));
                        parts.push(Vec::new())
                    }
                    Event::Data(d) => parts.last_mut().unwrap().extend_from_slice(&d),
                    Event::End => {}
                }
            }
        }
        assert!(r.done());
        parts
    }

    #[test]
    fn parts_come_out_whole_whatever_the_chunking() {
        let b = "XyZ";
        // Bodies that contain near-delimiters and CRLFs.
        let p1: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let p2 = b"\r\n--XyQ\r\n--Xy".to_vec();
        let p3 = Vec::new();
        let all = body(&[&p1, &p2, &p3], b);
        for chunk in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            let got = run(&all, b, chunk);
            assert_eq!(
                got,
                vec![p1.clone(), p2.clone(), p3.clone()],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn content_type_parameters() {
        let (b, t) =
            parse_content_type("multipart/related; type=\"application/dicom\"; boundary=\"a;b\"")
                .unwrap();
        assert_eq!(b, "a;b");
        assert_eq!(t.as_deref(), Some("application/dicom"));
        assert!(parse_content_type("application/dicom").is_err());
        assert!(parse_content_type("multipart/related").is_err());
    }
}
