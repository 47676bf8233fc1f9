//! One continuous outgoing RTP stream out of several incoming ones (the simulcast layers of a
//! track), pure: no I/O, no clock.
//!
//! A subscription forwards one layer at a time and switches between layers (RTC-11); every
//! layer arrives on its own SSRC with its own sequence numbers and its own random RTP timestamp
//! base. The receiver must see one stream: one SSRC, sequence numbers that go on by one across
//! a switch, timestamps that keep increasing. [`Rewriter`] keeps, per outgoing stream, the
//! offsets that map the current source onto it and re-bases them at each switch (or after a
//! pause): the first packet of the new source follows the last packet sent by one sequence
//! number, and its timestamp follows the last one by the time that passed (given by the caller,
//! in clock-rate units). Within one source the offsets stay put, so the source's own gaps
//! (losses the receiver may NACK) and reordering pass through unchanged.

/// The rewriting state of one outgoing stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewriter {
    /// The SSRC the receiver sees.
    pub ssrc: u32,
    /// The source SSRC now mapped, if any.
    source: Option<u32>,
    /// Re-base at the next packet (a switch or a resume after a pause).
    rebase: bool,
    seq_offset: u16,
    ts_offset: u32,
    /// The last sequence number and timestamp sent (`None`: nothing sent yet).
    last: Option<(u16, u32)>,
}

/// What to put in a forwarded packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
}

/// Whether sequence number `a` comes after `b` (RFC 3550 modular order).
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Whether timestamp `a` comes after `b` (modular order).
fn ts_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

impl Rewriter {
    /// A new outgoing stream on `ssrc`.
    pub fn new(ssrc: u32) -> Rewriter {
        Rewriter {
            ssrc,
            source: None,
            rebase: true,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
        }
    }

    /// The next packet re-bases the offsets (the forwarder switched layer or resumes after a
    /// pause, even on the same source).
    pub fn switch(&mut self) {
        self.rebase = true;
    }

    /// Rewrites a packet of `source` (its sequence number `seq`, timestamp `ts`). `elapsed` is
    /// the time since the last packet sent, in clock-rate units (used only on a re-base; at
    /// least 1 is added so timestamps keep increasing).
    pub fn rewrite(&mut self, source: u32, seq: u16, ts: u32, elapsed: u32) -> Rewritten {
        if self.rebase || self.source != Some(source) {
            let (next_seq, next_ts) = match self.last {
                Some((s, t)) => (s.wrapping_add(1), t.wrapping_add(elapsed.max(1))),
                // The first packet ever: the source's own numbers.
                None => (seq, ts),
            };
            self.seq_offset = next_seq.wrapping_sub(seq);
            self.ts_offset = next_ts.wrapping_sub(ts);
            self.source = Some(source);
            self.rebase = false;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        self.last = Some(match self.last {
            Some((s, t)) => (
                if seq_after(out_seq, s) { out_seq } else { s },
                if ts_after(out_ts, t) { out_ts } else { t },
            ),
            None => (out_seq, out_ts),
        });
        Rewritten {
            ssrc: self.ssrc,
            sequence_number: out_seq,
            timestamp: out_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_passes_through_with_the_new_ssrc() {
        let mut r = Rewriter::new(0xabcd);
        let a = r.rewrite(1, 100, 9000, 0);
        assert_eq!(
            a,
            Rewritten {
                ssrc: 0xabcd,
                sequence_number: 100,
                timestamp: 9000
            }
        );
        // A loss (101 missing) and a reordered packet pass through as they are.
        assert_eq!(r.rewrite(1, 102, 9000, 0).sequence_number, 102);
        assert_eq!(r.rewrite(1, 101, 9000, 0).sequence_number, 101);
        assert_eq!(r.rewrite(1, 103, 12000, 0).timestamp, 12000);
    }

    #[test]
    fn a_switch_continues_the_sequence_and_the_timestamps() {
        let mut r = Rewriter::new(7);
        for i in 0..10u16 {
            r.rewrite(1, 500 + i, 1000 + u32::from(i) * 3000, 0);
        }
        // Last sent: 509, 28000. The new layer has other numbers entirely.
        let first = r.rewrite(2, 60_000, 4_000_000_000, 3000);
        assert_eq!(first.sequence_number, 510);
        assert_eq!(first.timestamp, 31_000);
        assert_eq!(first.ssrc, 7);
        let next = r.rewrite(2, 60_001, 4_000_003_000, 0);
        assert_eq!(next.sequence_number, 511);
        assert_eq!(next.timestamp, 34_000);
        // Back to the first layer: again one on.
        let back = r.rewrite(1, 530, 70_000, 1500);
        assert_eq!(back.sequence_number, 512);
        assert_eq!(back.timestamp, 35_500);
    }

    #[test]
    fn wrapping_numbers_and_a_zero_gap() {
        let mut r = Rewriter::new(7);
        r.rewrite(1, u16::MAX, u32::MAX, 0);
        let w = r.rewrite(1, 0, 2999, 0);
        assert_eq!((w.sequence_number, w.timestamp), (0, 2999));
        // A switch with no time passed still moves the timestamp on by one.
        let s = r.rewrite(2, 10, 10, 0);
        assert_eq!((s.sequence_number, s.timestamp), (1, 3000));
    }

    #[test]
    fn a_resume_on_the_same_source_closes_the_gap() {
        let mut r = Rewriter::new(7);
        r.rewrite(1, 10, 100, 0);
        r.rewrite(1, 11, 200, 0);
        // Paused: 12..=40 not forwarded; resumed on 41.
        r.switch();
        let s = r.rewrite(1, 41, 3000, 900);
        assert_eq!((s.sequence_number, s.timestamp), (12, 1100));
        assert_eq!(r.rewrite(1, 42, 3100, 0).sequence_number, 13);
    }

    #[test]
    fn a_late_packet_of_the_old_source_does_not_move_the_last_sent() {
        let mut r = Rewriter::new(7);
        r.rewrite(1, 10, 100, 0);
        r.rewrite(1, 11, 200, 0);
        r.switch();
        r.rewrite(1, 20, 1000, 100);
        // 12, late (before the re-base point): mapped below what was sent, not a new "last".
        let late = r.rewrite(1, 12, 300, 0);
        assert_eq!(late.sequence_number, 4);
        assert_eq!(r.rewrite(1, 21, 1100, 0).sequence_number, 13);
    }
}
