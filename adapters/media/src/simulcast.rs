//! What the SDP says about simulcast and codecs (RFC 8853 `a=simulcast`, RFC 8851 `a=rid`),
//! pure: the layers a publisher's offer announces, lowest first, their default rates, and the
//! media sections a subscriber's answer rejected.

/// The default rate of each layer before it is measured on arrival, lowest first (~180p,
/// ~360p, ~720p).
pub const DEFAULT_LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_200_000];

/// The default rate of a video track without simulcast, before it is measured.
pub const DEFAULT_SINGLE_BPS: u64 = 500_000;

/// The default rate of an audio track (Opus), before it is measured.
pub const DEFAULT_AUDIO_BPS: u64 = 40_000;

/// The rank of a well-known rid (`q`/`h`/`f`, `low`/`mid`/`high`, `l`/`m`), lowest first.
fn rank(rid: &str) -> Option<usize> {
    match rid {
        "q" | "low" | "l" | "lo" => Some(0),
        "h" | "mid" | "m" => Some(1),
        "f" | "high" | "hi" => Some(2),
        _ => None,
    }
}

/// The send rids of the first video section of `sdp` with an `a=simulcast:send` line, lowest
/// first: the well-known names (`q`/`h`/`f`…) by their rank, any other in the order of the
/// `a=simulcast` line (which the publisher must then list lowest first). Empty: no simulcast.
/// Alternatives (`q,h`) take the first; paused rids (`~q`) count as layers.
pub fn send_rids(sdp: &str) -> Vec<String> {
    let mut video = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video");
        } else if video && let Some(list) = line.strip_prefix("a=simulcast:") {
            let mut parts = list.split_whitespace();
            let mut rids = Vec::new();
            while let Some(dir) = parts.next() {
                let streams = parts.next().unwrap_or("");
                if dir == "send" {
                    for s in streams.split(';') {
                        let first = s.split(',').next().unwrap_or("").trim_start_matches('~');
                        if !first.is_empty() && !rids.iter().any(|r: &String| r == first) {
                            rids.push(first.to_owned());
                        }
                    }
                }
            }
            if rids.len() < 2 {
                return Vec::new();
            }
            if rids.iter().all(|r| rank(r).is_some()) {
                rids.sort_by_key(|r| rank(r));
            }
            return rids;
        }
    }
    Vec::new()
}

/// The default rates of `n` layers, lowest first.
pub fn default_rates(n: usize) -> Vec<u64> {
    match n {
        0 | 1 => vec![DEFAULT_SINGLE_BPS],
        n => (0..n)
            .map(|i| {
                // Spread over the three defaults: the lowest, the highest, and between.
                let at = i * (DEFAULT_LAYER_BPS.len() - 1) / (n - 1);
                DEFAULT_LAYER_BPS[at]
            })
            .collect(),
    }
}

/// The kinds (`audio`, `video`) of the media sections an answer rejected (port 0): what the
/// answerer cannot receive, most often because it decodes none of the offered codecs.
pub fn rejected_sections(answer: &str) -> Vec<String> {
    answer
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|m| {
            let mut f = m.split_whitespace();
            let kind = f.next()?;
            let port = f.next()?;
            (port == "0" && (kind == "audio" || kind == "video")).then(|| kind.to_owned())
        })
        .collect()
}

/// `sdp` with, on each `m=video` line, H.264 constrained baseline with packetization-mode=1
/// (profile-level-id 42e01f) moved first and VP8 second (RTC-11), the other formats after in
/// their order. The `rtc` crate answers in the offer's order; a publisher sends the first codec
/// of the answer, so the answer the engine sends states its preference.
pub fn prefer_h264(sdp: &str) -> String {
    let fmtp = |pt: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("a=fmtp:{pt} ")))
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let rtpmap = |pt: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("a=rtpmap:{pt} ")))
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let rank = |pt: &str| {
        let map = rtpmap(pt);
        let f = fmtp(pt);
        if map.starts_with("h264/")
            && f.contains("packetization-mode=1")
            && f.contains("profile-level-id=42e01f")
        {
            0
        } else if map.starts_with("vp8/") {
            1
        } else {
            2
        }
    };
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out: Vec<String> = Vec::new();
    for line in sdp.split(eol) {
        if let Some(m) = line.strip_prefix("m=video ") {
            let mut f: Vec<&str> = m.split(' ').collect();
            if f.len() > 3 {
                let mut formats = f.split_off(2);
                // Stable: equal ranks keep their order.
                formats.sort_by_key(|pt| rank(pt));
                f.extend(formats);
                out.push(format!("m=video {}", f.join(" ")));
                continue;
            }
        }
        out.push(line.to_owned());
    }
    out.join(eol)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:f send\r\na=rid:h send\r\na=rid:q send\r\na=simulcast:send f;h;q\r\n";

    #[test]
    fn the_rids_of_a_simulcast_offer_lowest_first() {
        assert_eq!(send_rids(OFFER), vec!["q", "h", "f"]);
        // Unknown names: the order of the a=simulcast line; alternatives and paused rids.
        let sdp = "m=video 9 X 96\r\na=simulcast:send a,b;~c recv r\r\n";
        assert_eq!(send_rids(sdp), vec!["a", "c"]);
        // No simulcast, or a single rid.
        assert!(send_rids("m=video 9 X 96\r\na=mid:0\r\n").is_empty());
        assert!(send_rids("m=video 9 X 96\r\na=simulcast:send q\r\n").is_empty());
        // An audio section's line is not a video's.
        assert!(send_rids("m=audio 9 X 111\r\na=simulcast:send q;h\r\n").is_empty());
    }

    #[test]
    fn default_rates_spread_over_the_three_layers() {
        assert_eq!(default_rates(3), vec![150_000, 500_000, 1_200_000]);
        assert_eq!(default_rates(2), vec![150_000, 1_200_000]);
        assert_eq!(default_rates(1), vec![DEFAULT_SINGLE_BPS]);
    }

    #[test]
    fn h264_then_vp8_first_in_video_sections() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 98 102 127 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:98 VP9/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:127 H264/90000\r\na=fmtp:127 packetization-mode=0;profile-level-id=42e01f\r\na=rtpmap:97 rtx/90000\r\n";
        let out = prefer_h264(sdp);
        assert!(
            out.contains("\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 96 98 127 97\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"),
            "{out}"
        );
        assert_eq!(out.len(), sdp.len());
        // No H.264 offered: VP8 first, the rest as it was.
        let vp8 = "m=video 9 X 98 96\na=rtpmap:98 VP9/90000\na=rtpmap:96 VP8/90000\n";
        assert!(prefer_h264(vp8).starts_with("m=video 9 X 96 98\n"));
    }

    #[test]
    fn rejected_sections_of_an_answer() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 0 UDP/TLS/RTP/SAVPF 102\r\nm=application 0 x\r\n";
        assert_eq!(rejected_sections(answer), vec!["video"]);
        assert!(rejected_sections(OFFER).is_empty());
    }
}
