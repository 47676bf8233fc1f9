//! Simulcast layer selection and audio-first bandwidth allocation (STANDARDS RTC-10, RTC-11),
//! pure: no I/O, no clock, no webrtc types, so every rule is unit-tested here.
//!
//! - [`estimate`]: a receiver's bandwidth estimate from what it reports — REMB or TWCC-derived
//!   rates taken as they are, RTCP receiver-report loss moving the estimate (GCC's loss rule:
//!   above 10 % cut by half the loss, below 2 % grow 5 %).
//! - [`allocate`]: one receiver's budget over what it subscribes to: **audio first**, always
//!   (RTC-10: never dropped, its bitrate taken off the top), then every video at its lowest
//!   layer (screen shares before cameras: a document must stay readable), then upgrades one
//!   step at a time while the budget lasts; a video that does not fit even its lowest layer is
//!   paused (video off before audio suffers). Upgrades need 15 % headroom over the layer's
//!   rate, downgrades happen at once, so an estimate near a boundary does not flap.
//! - [`Switcher`]: the forwarder of one subscription switches to the chosen layer only on a
//!   key frame of that layer ([`is_keyframe`] for VP8 and H.264), so the receiver's decoder
//!   never gets a delta frame it has no reference for.
//! - [`publisher_cap`]: the bitrate hint sent to a publisher — the highest layer any receiver
//!   takes — so nobody encodes a 720p layer nobody receives.

/// One simulcast layer of a video publication, lowest first (`q`/`h`/`f` rids, ~180p/360p/720p).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The RTP stream id (`rid`).
    pub rid: String,
    /// Its bitrate in bits per second (as measured on arrival, or the publisher's target).
    pub bps: u64,
}

/// What one video publication offers a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Video {
    /// Layers, lowest first (one layer without simulcast).
    pub layers: Vec<Layer>,
    /// A screen share (kept readable first) rather than a camera.
    pub screen: bool,
    /// The layer the receiver gets now, if any (for the upgrade headroom).
    pub current: Option<usize>,
}

/// A receiver's allocation: which layer of each video (`None`: paused); audio always flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub video: Vec<Option<usize>>,
    /// The bits per second allocated, audio included.
    pub used_bps: u64,
}

/// Headroom an upgrade needs over the layer's rate (hysteresis), in percent.
pub const UPGRADE_HEADROOM_PERCENT: u64 = 15;

/// The estimate after a receiver report with `loss` (fraction lost, 0–255 as RTCP carries it),
/// or a REMB/TWCC rate when the receiver sent one.
pub fn estimate(previous_bps: u64, loss_fraction: u8, remb_bps: Option<u64>) -> u64 {
    if let Some(r) = remb_bps {
        return r;
    }
    let loss = f64::from(loss_fraction) / 256.0;
    let next = if loss > 0.10 {
        previous_bps as f64 * (1.0 - 0.5 * loss)
    } else if loss < 0.02 {
        previous_bps as f64 * 1.05
    } else {
        previous_bps as f64
    };
    next as u64
}

fn with_headroom(bps: u64) -> u64 {
    bps + bps * UPGRADE_HEADROOM_PERCENT / 100
}

/// One receiver's budget (`estimate_bps`) over its `audio` tracks (bits per second each) and
/// its `videos`.
pub fn allocate(estimate_bps: u64, audio: &[u64], videos: &[Video]) -> Allocation {
    // Audio first: taken off the top whatever the estimate (RTC-10).
    let audio_bps: u64 = audio.iter().sum();
    let mut left = estimate_bps.saturating_sub(audio_bps);
    let mut chosen: Vec<Option<usize>> = vec![None; videos.len()];
    // Screen shares before cameras, then in the order given.
    let mut order: Vec<usize> = (0..videos.len()).collect();
    order.sort_by_key(|i| !videos[*i].screen);
    // Cost of taking layer `l` of video `i`: the rate, plus headroom when it is above what the
    // receiver gets now.
    let cost = |i: usize, l: usize| -> u64 {
        let v = &videos[i];
        let bps = v.layers[l].bps;
        if v.current.is_some_and(|c| l > c) || v.current.is_none() && l > 0 {
            with_headroom(bps)
        } else {
            bps
        }
    };
    for &i in &order {
        if videos[i].layers.is_empty() {
            continue;
        }
        let c = cost(i, 0);
        if c <= left {
            left -= videos[i].layers[0].bps;
            chosen[i] = Some(0);
        }
    }
    // Upgrades one step at a time, round robin in priority order, while the budget lasts.
    loop {
        let mut upgraded = false;
        for &i in &order {
            let Some(l) = chosen[i] else { continue };
            let layers = &videos[i].layers;
            if l + 1 >= layers.len() {
                continue;
            }
            let extra = cost(i, l + 1).saturating_sub(layers[l].bps);
            if extra <= left {
                left -= layers[l + 1].bps - layers[l].bps.min(layers[l + 1].bps);
                chosen[i] = Some(l + 1);
                upgraded = true;
            }
        }
        if !upgraded {
            break;
        }
    }
    let video_bps: u64 = chosen
        .iter()
        .zip(videos)
        .filter_map(|(c, v)| c.map(|l| v.layers[l].bps))
        .sum();
    Allocation {
        video: chosen,
        used_bps: audio_bps + video_bps,
    }
}

/// The bitrate hint for a publisher: the rate of the highest of its layers any receiver takes
/// (`None`: nobody takes any, the publisher may pause the video).
pub fn publisher_cap(layers: &[Layer], taken: &[Option<usize>]) -> Option<u64> {
    taken
        .iter()
        .flatten()
        .max()
        .and_then(|l| layers.get(*l))
        .map(|l| l.bps)
}

/// The bitrate hint (REMB) for a simulcast publisher: it encodes every layer up to the one it is
/// capped at, so the hint is the sum of the layers up to the highest any receiver takes
/// ([`publisher_cap`]); when nobody takes any, the lowest layer alone (kept alive so a receiver
/// coming back gets video at once). `None` for a track without layers.
pub fn publisher_budget(layers: &[Layer], taken: &[Option<usize>]) -> Option<u64> {
    let top = taken.iter().flatten().max().copied().unwrap_or(0);
    let top = top.min(layers.len().checked_sub(1)?);
    Some(layers[..=top].iter().map(|l| l.bps).sum())
}

/// The codec of a video track, for key-frame detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// Whether an RTP payload starts a key frame: VP8 (the payload descriptor, then the frame
/// tag's inverse key-frame bit, RFC 7741) or H.264 (an IDR slice or SPS, alone, in a STAP-A or
/// at the start of an FU-A, RFC 6184).
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe(payload),
        VideoCodec::H264 => h264_keyframe(payload),
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        // X: an extension byte, then I, L, T/K fields.
        let Some(&x) = p.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    p.get(at).is_some_and(|b| b & 0x01 == 0)
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let key = |nal: u8| matches!(nal & 0x1f, 5 | 7);
    match first & 0x1f {
        1..=23 => key(first),
        24 => {
            // STAP-A: 16-bit sizes, then NAL units.
            let mut at = 1;
            while at + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
                if key(p[at + 2]) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|h| h & 0x80 != 0 && key(*h)),
        _ => false,
    }
}

/// The layer a subscription forwards, switching only on key frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Switcher {
    /// The layer forwarded now (`None`: nothing yet, or paused).
    pub current: Option<usize>,
    /// The layer to switch to at its next key frame.
    pub target: Option<usize>,
}

impl Switcher {
    /// Aim at `layer` (`None`: pause the video now).
    pub fn aim(&mut self, layer: Option<usize>) {
        self.target = layer;
        if layer.is_none() {
            self.current = None;
        }
    }

    /// A packet of `layer` arrived (`keyframe`: it starts a key frame): whether to forward it.
    /// The switch to the target happens here, on the target's key frame.
    pub fn forward(&mut self, layer: usize, keyframe: bool) -> bool {
        if self.target == Some(layer) && self.current != Some(layer) && keyframe {
            self.current = Some(layer);
        }
        self.current == Some(layer)
    }

    /// Whether the forwarder waits for a key frame of the target (ask the publisher: PLI).
    pub fn wants_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulcast(screen: bool, current: Option<usize>) -> Video {
        Video {
            layers: vec![
                Layer {
                    rid: "q".into(),
                    bps: 150_000,
                },
                Layer {
                    rid: "h".into(),
                    bps: 500_000,
                },
                Layer {
                    rid: "f".into(),
                    bps: 1_200_000,
                },
            ],
            screen,
            current,
        }
    }

    const OPUS: u64 = 40_000;

    #[test]
    fn receivers_of_different_links_get_different_layers() {
        let two = [simulcast(false, None), simulcast(false, None)];
        // A good link: both at 720p.
        let good = allocate(5_000_000, &[OPUS, OPUS], &two);
        assert_eq!(good.video, vec![Some(2), Some(2)]);
        // A constrained link (RTC-11 AT): the low layer.
        let weak = allocate(500_000, &[OPUS, OPUS], &two);
        assert_eq!(weak.video, vec![Some(0), Some(0)]);
        assert!(weak.used_bps <= 500_000);
        // In between: one steps up first, the other when the budget allows.
        let mid = allocate(1_300_000, &[OPUS, OPUS], &two);
        assert_eq!(mid.video, vec![Some(1), Some(1)]);
    }

    #[test]
    fn audio_always_first_video_off_before_audio_suffers() {
        let two = [simulcast(false, None), simulcast(false, None)];
        // 100 kbit/s (RTC-10's emulated profile): both videos paused, audio kept.
        let a = allocate(100_000, &[OPUS, OPUS], &two);
        assert_eq!(a.video, vec![None, None]);
        assert_eq!(a.used_bps, 2 * OPUS);
        // Even below the audio rate, audio is not cut here (only video is ever paused).
        let a = allocate(10_000, &[OPUS, OPUS], &two);
        assert_eq!(a.video, vec![None, None]);
        assert_eq!(a.used_bps, 2 * OPUS);
        // Room for one low layer: the screen share gets it, the camera pauses.
        let share = [simulcast(false, None), simulcast(true, None)];
        let a = allocate(2 * OPUS + 200_000, &[OPUS, OPUS], &share);
        assert_eq!(a.video, vec![None, Some(0)]);
    }

    #[test]
    fn upgrades_need_headroom_downgrades_do_not() {
        let at_low = [simulcast(false, Some(0))];
        // Exactly the 360p rate: not enough to step up (15 % headroom).
        assert_eq!(
            allocate(OPUS + 500_000, &[OPUS], &at_low).video,
            vec![Some(0)]
        );
        assert_eq!(
            allocate(OPUS + 575_000, &[OPUS], &at_low).video,
            vec![Some(1)]
        );
        // Already at 360p: it stays there at exactly its rate, and drops below it.
        let at_mid = [simulcast(false, Some(1))];
        assert_eq!(
            allocate(OPUS + 500_000, &[OPUS], &at_mid).video,
            vec![Some(1)]
        );
        assert_eq!(
            allocate(OPUS + 499_999, &[OPUS], &at_mid).video,
            vec![Some(0)]
        );
    }

    #[test]
    fn the_estimate_follows_remb_and_loss() {
        assert_eq!(estimate(1_000_000, 0, Some(300_000)), 300_000);
        // 25 % loss: cut by half of it.
        assert_eq!(estimate(1_000_000, 64, None), 875_000);
        // 5 % loss: held.
        assert_eq!(estimate(1_000_000, 13, None), 1_000_000);
        // No loss: grows 5 %.
        assert_eq!(estimate(1_000_000, 0, None), 1_050_000);
    }

    #[test]
    fn publishers_are_capped_at_the_highest_layer_taken() {
        let v = simulcast(false, None);
        assert_eq!(publisher_cap(&v.layers, &[Some(0), Some(1)]), Some(500_000));
        assert_eq!(publisher_cap(&v.layers, &[None, Some(0)]), Some(150_000));
        assert_eq!(publisher_cap(&v.layers, &[None, None]), None);
        // The REMB a simulcast publisher gets covers every layer up to the cap.
        assert_eq!(
            publisher_budget(&v.layers, &[Some(0), Some(1)]),
            Some(650_000)
        );
        assert_eq!(
            publisher_budget(&v.layers, &[Some(2), None]),
            Some(1_850_000)
        );
        assert_eq!(publisher_budget(&v.layers, &[None, None]), Some(150_000));
        assert_eq!(publisher_budget(&[], &[Some(1)]), None);
    }

    #[test]
    fn key_frames_of_vp8_and_h264() {
        // VP8: S bit, partition 0, key-frame bit 0 in the frame tag.
        assert!(is_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
        assert!(
            !is_keyframe(VideoCodec::Vp8, &[0x10, 0x01]),
            "an inter frame"
        );
        assert!(
            !is_keyframe(VideoCodec::Vp8, &[0x00, 0x00]),
            "not a partition start"
        );
        // With X, I (15-bit picture id), L, T/K: the tag after five descriptor bytes.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xf0, 0x80, 0x01, 0x00, 0x00, 0x50]
        ));
        assert!(!is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xf0, 0x80, 0x01, 0x00, 0x00, 0x51]
        ));
        // H.264: an IDR slice, an SPS in a STAP-A, an FU-A start of an IDR; not a P slice.
        assert!(is_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(is_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(is_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x88]));
        assert!(
            !is_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x88]),
            "not the FU start"
        );
        assert!(!is_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
    }

    #[test]
    fn layers_switch_only_on_key_frames() {
        let mut s = Switcher::default();
        s.aim(Some(0));
        assert!(s.wants_keyframe());
        assert!(
            !s.forward(0, false),
            "no delta frame before the first key frame"
        );
        assert!(s.forward(0, true));
        assert!(s.forward(0, false));
        assert!(!s.forward(2, true), "not the target");
        // Up to 720p: the low layer flows until the high layer's key frame.
        s.aim(Some(2));
        assert!(s.forward(0, false));
        assert!(!s.forward(2, false));
        assert!(s.forward(2, true));
        assert!(!s.forward(0, false), "the old layer stops at the switch");
        assert!(!s.wants_keyframe());
        // Paused: nothing flows, at once.
        s.aim(None);
        assert!(!s.forward(2, true));
    }
}
