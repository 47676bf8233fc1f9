//! What a peer connection's remote tells the SFU over RTCP, read where the `webrtc` crate does
//! not hand it to the application: an interceptor at the application end of every engine peer
//! connection's chain notes each inbound REMB (the receiver's bandwidth estimate), receiver
//! report (fraction lost) and key-frame request (PLI, FIR) into a shared [`Feedback`], and lets
//! the packets go on unchanged (the crate's own interceptors have already acted on them).
//!
//! On a subscription leg this is the subscriber's view of what the engine forwards it: the
//! input of [`crate::layers::estimate`] and of key-frame requests passed up to the publisher.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;

/// The slot of the tap: after every interceptor of the default chain.
pub const TAP_SLOT: usize = 14_500;

/// What the remote of one peer connection reported, as last seen.
#[derive(Default)]
pub struct Feedback {
    reports: Mutex<Reports>,
    /// Key-frame requests (PLI or FIR) received.
    pub keyframe_requests: AtomicU64,
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Reports {
    remb_bps: Option<u64>,
    /// The highest fraction lost (0–255) of the receiver reports since last taken.
    loss: u8,
    /// Receiver reports since last taken.
    count: u64,
}

/// A round's view: the REMB rate if any was received, the worst loss of the receiver reports
/// since the last round, and whether any report came at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    pub remb_bps: Option<u64>,
    pub loss_fraction: u8,
    pub reports: u64,
}

impl Feedback {
    /// Takes the round's view: the loss figures restart, the latest REMB stays (a receiver that
    /// sends REMB keeps its estimate until it sends another).
    pub fn take_round(&self) -> Round {
        let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let out = Round {
            remb_bps: r.remb_bps,
            loss_fraction: r.loss,
            reports: r.count,
        };
        r.loss = 0;
        r.count = 0;
        out
    }

    fn note(&self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        for p in packets {
            let any = p.as_any();
            if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
                r.remb_bps = Some(remb.bitrate.max(0.0) as u64);
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
                r.count += 1;
                for block in &rr.reports {
                    r.loss = r.loss.max(block.fraction_lost);
                }
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                if !sr.reports.is_empty() {
                    let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
                    r.count += 1;
                    for block in &sr.reports {
                        r.loss = r.loss.max(block.fraction_lost);
                    }
                }
            } else if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The interceptor that fills a [`Feedback`].
pub struct Tap {
    sink: Arc<Feedback>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Tap {
    pub fn new(sink: Arc<Feedback>) -> Tap {
        Tap {
            sink,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// Adds a tap filling `sink` to `registry`.
    pub fn install(
        registry: rtc::interceptor::Registry,
        sink: Arc<Feedback>,
    ) -> rtc::interceptor::Registry {
        registry.with(Slot::from(TAP_SLOT), Tap::new(sink))
    }
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for Tap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            self.sink.note(packets);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for Tap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::reception_report::ReceptionReport;

    #[test]
    fn remb_receiver_reports_and_key_frame_requests_are_noted() {
        let f = Feedback::default();
        assert_eq!(
            f.take_round(),
            Round {
                remb_bps: None,
                loss_fraction: 0,
                reports: 0
            }
        );
        f.note(&[
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: 250_000.0,
                ssrcs: vec![2],
            }),
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![
                    ReceptionReport {
                        ssrc: 2,
                        fraction_lost: 10,
                        ..Default::default()
                    },
                    ReceptionReport {
                        ssrc: 3,
                        fraction_lost: 40,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 2,
            }),
        ]);
        assert_eq!(
            f.take_round(),
            Round {
                remb_bps: Some(250_000),
                loss_fraction: 40,
                reports: 1
            }
        );
        assert_eq!(f.keyframe_requests.load(Ordering::Relaxed), 1);
        // The loss restarts each round; the REMB stays until the next one.
        assert_eq!(
            f.take_round(),
            Round {
                remb_bps: Some(250_000),
                loss_fraction: 0,
                reports: 0
            }
        );
    }
}
