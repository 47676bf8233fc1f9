//! MLLP framing (HL7 v2.5.1 Appendix C; STANDARDS HL7-01, HL7-03).
//!
//! A frame is `0x0B` + payload + `0x1C` + `0x0D`. The [`Deframer`] works on raw bytes, before any
//! character decoding (0x0B, 0x1C and 0x0D never occur as trail bytes in UTF-8, GBK or GB18030),
//! and reassembles frames from a byte stream: a frame may arrive split over many reads and one
//! read may carry several frames. Bytes outside a frame are discarded and reported as noise.
//! A frame over the size limit is reported once and the connection should be closed; the buffer
//! never grows past the limit. A sender that ends a frame with `0x1C` but no `0x0D` is accepted.

/// Start block.
pub const SB: u8 = 0x0B;
/// End block.
pub const EB: u8 = 0x1C;
/// Carriage return, which follows the end block.
pub const CR: u8 = 0x0D;

/// What the deframer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete payload (without the framing bytes).
    Frame(Vec<u8>),
    /// Bytes outside any frame were discarded (not counting CR/LF/space between frames).
    Noise(usize),
    /// A frame grew past the limit. The connection should be closed.
    TooLarge { limit: usize },
    /// A new start block arrived inside an unfinished frame: the unfinished bytes are dropped.
    Interrupted(usize),
}

/// Reassembles MLLP frames from a byte stream.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    in_frame: bool,
    /// The last byte seen was an end block; a CR next is part of the framing.
    after_eb: bool,
    noise: usize,
    /// Bytes outside any frame since the last frame ended, whitespace included (not the CR of
    /// the end block).
    between: usize,
    limit: usize,
    overflowed: bool,
}

impl Deframer {
    /// A deframer that refuses frames larger than `limit` bytes.
    pub fn new(limit: usize) -> Deframer {
        Deframer {
            buf: Vec::new(),
            in_frame: false,
            after_eb: false,
            noise: 0,
            between: 0,
            limit,
            overflowed: false,
        }
    }

    /// Feeds bytes; returns what they completed, in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if self.overflowed {
                return out;
            }
            if self.after_eb {
                // The frame was emitted at its end block; swallow the CR that follows it.
                self.after_eb = false;
                if data[i] == CR {
                    i += 1;
                }
                continue;
            }
            if !self.in_frame {
                match data[i..].iter().position(|&b| b == SB) {
                    Some(p) => {
                        self.between = 0;
                        self.noise += count_noise(&data[i..i + p]);
                        if self.noise > 0 {
                            out.push(Event::Noise(self.noise));
                            self.noise = 0;
                        }
                        self.in_frame = true;
                        i += p + 1;
                    }
                    None => {
                        self.noise += count_noise(&data[i..]);
                        self.between = self.between.saturating_add(data.len() - i);
                        return out;
                    }
                }
                continue;
            }
            // In a frame: copy up to the next end block (or a start block, which interrupts).
            let rest = &data[i..];
            match rest.iter().position(|&b| b == EB || b == SB) {
                Some(p) => {
                    if !self.append(&rest[..p], &mut out) {
                        return out;
                    }
                    if rest[p] == SB {
                        out.push(Event::Interrupted(self.buf.len()));
                        self.buf.clear();
                        i += p + 1;
                        continue;
                    }
                    // Emit at once: a sender that leaves out the CR and waits for its ACK
                    // must not wait for a byte that never comes.
                    out.push(Event::Frame(std::mem::take(&mut self.buf)));
                    self.in_frame = false;
                    self.between = 0;
                    self.after_eb = true;
                    i += p + 1;
                }
                None => {
                    self.append(rest, &mut out);
                    return out;
                }
            }
        }
        out
    }

    /// Call when the peer closed the connection: the length of an unfinished frame, if any.
    pub fn finish(&mut self) -> Option<usize> {
        if self.in_frame && !self.overflowed {
            let n = self.buf.len();
            self.buf.clear();
            self.in_frame = false;
            return Some(n);
        }
        None
    }

    /// Noise seen since the last report (reported when the next frame starts).
    pub fn pending_noise(&self) -> usize {
        self.noise
    }

    /// Whether a frame has started and not yet ended.
    pub fn in_frame(&self) -> bool {
        self.in_frame && !self.overflowed
    }

    /// Bytes held for the unfinished frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received outside any frame since the last one ended, whitespace included (the
    /// CR after an end block is framing and not counted): a listener tells a pause between
    /// frames (a line end or two) from a peer trickling bytes that never make a frame.
    pub fn between_frames(&self) -> usize {
        self.between
    }

    fn append(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> bool {
        if self.buf.len() + bytes.len() > self.limit {
            self.overflowed = true;
            self.buf = Vec::new();
            out.push(Event::TooLarge { limit: self.limit });
            return false;
        }
        self.buf.extend_from_slice(bytes);
        true
    }
}

fn count_noise(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .filter(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .count()
}

/// Wraps a payload in MLLP framing.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 3);
    v.push(SB);
    v.extend_from_slice(payload);
    v.push(EB);
    v.push(CR);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(events: &[Event]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    const MSG: &[u8] = b"MSH|^~\\&|HIS|H1|HZ|P|20260101||ADT^A01|1|P|2.5\rPID|1||123\r";

    #[test]
    fn split_at_every_offset_yields_one_frame() {
        let f = frame(MSG);
        for cut in 0..=f.len() {
            let mut d = Deframer::new(1024);
            let mut ev = d.push(&f[..cut]);
            ev.extend(d.push(&f[cut..]));
            assert_eq!(frames(&ev), vec![MSG.to_vec()], "cut at {cut}");
            assert!(
                !ev.iter().any(|e| matches!(e, Event::Noise(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn three_frames_in_one_read() {
        let mut all = frame(b"A");
        all.extend(frame(b"B"));
        all.extend(frame(b"C"));
        let mut d = Deframer::new(1024);
        assert_eq!(
            frames(&d.push(&all)),
            vec![b"A".to_vec(), b"B".to_vec(), b"C".to_vec()]
        );
    }

    #[test]
    fn garbage_before_a_frame_is_one_warning() {
        let mut all = b"GARBAGE".to_vec();
        all.extend(frame(MSG));
        let mut d = Deframer::new(1024);
        let ev = d.push(&all);
        assert_eq!(ev, vec![Event::Noise(7), Event::Frame(MSG.to_vec())]);
    }

    #[test]
    fn unterminated_frame_at_close_is_reported() {
        let mut d = Deframer::new(1024);
        let mut f = vec![SB];
        f.extend_from_slice(MSG);
        assert!(frames(&d.push(&f)).is_empty());
        assert_eq!(d.finish(), Some(MSG.len()));
    }

    #[test]
    fn end_block_without_cr_is_accepted() {
        let mut d = Deframer::new(1024);
        let mut f = vec![SB];
        f.extend_from_slice(b"A");
        f.push(EB);
        f.push(SB);
        f.extend_from_slice(b"B");
        f.push(EB);
        let ev = d.push(&f);
        assert_eq!(frames(&ev), vec![b"A".to_vec(), b"B".to_vec()]);
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn oversized_frame_stops_and_stays_bounded() {
        let mut d = Deframer::new(100);
        let mut ev = d.push(&[SB]);
        for _ in 0..1000 {
            ev.extend(d.push(&[b'x'; 64]));
        }
        assert_eq!(ev, vec![Event::TooLarge { limit: 100 }]);
        assert!(d.buf.capacity() <= 100);
    }

    #[test]
    fn start_block_inside_a_frame_interrupts_it() {
        let mut d = Deframer::new(1024);
        let mut f = vec![SB];
        f.extend_from_slice(b"half");
        f.extend(frame(b"whole"));
        let ev = d.push(&f);
        assert_eq!(
            ev,
            vec![Event::Interrupted(4), Event::Frame(b"whole".to_vec())]
        );
    }

    proptest! {
        #[test]
        fn any_chunking_reassembles_the_same_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no framing bytes", |b| *b != SB && *b != EB), 0..200), 1..6),
            cuts in prop::collection::vec(1usize..50, 0..20),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                stream.extend(frame(p));
            }
            let mut d = Deframer::new(1 << 20);
            let mut ev = Vec::new();
            let mut rest = &stream[..];
            for c in cuts {
                let c = c.min(rest.len());
                ev.extend(d.push(&rest[..c]));
                rest = &rest[c..];
            }
            ev.extend(d.push(rest));
            prop_assert_eq!(frames(&ev), payloads);
        }
    }
}
