//! HL7-20, HL7-21, HL7-22: MSH-18, decoding before tokenising, and outbound encoding.

use encoding_rs::{BIG5, Encoding, GB18030, GBK, UTF_8};
use huizhen_hl7::charset::{CharsetError, OnInvalid, decode, encode, sniff_msh18};
use huizhen_hl7::{Decoded, Message};

use crate::{adt_a01, cr, get};

fn encoded(text: &str, enc: &'static Encoding) -> Vec<u8> {
    match encode(text, enc) {
        Ok(b) => b,
        Err(e) => panic!("fixture not encodable: {e}"),
    }
}

fn read(raw: &[u8], default: &'static Encoding) -> (Decoded, Message) {
    let decoded = match decode(raw, default, OnInvalid::Reject) {
        Ok(d) => d,
        Err(e) => panic!("decode failed: {e}"),
    };
    let message = match Message::from_decoded(decoded.clone()) {
        Ok(m) => m,
        Err(e) => panic!("parse failed: {e}"),
    };
    (decoded, message)
}

#[test]
fn hl7_20a_unicode_utf8_decodes_chinese() {
    let raw = adt_a01("UNICODE UTF-8").into_bytes();
    let (d, m) = read(&raw, GB18030);
    assert_eq!(d.encoding, UTF_8);
    assert_eq!(d.declared.as_deref(), Some("UNICODE UTF-8"));
    assert!(!d.replaced);
    assert_eq!(get(&m, "PID-5.1").unwrap(), "张三");
    assert_eq!(get(&m, "PV1-3.9").unwrap(), "心内科病区");
    assert_eq!(m.charset(), UTF_8);
}

#[test]
fn hl7_20b_empty_msh18_uses_the_channel_default() {
    let raw = encoded(&adt_a01(""), GBK);
    assert!(raw.windows(2).any(|w| w == [0xD5, 0xC5]), "张 as GBK bytes");
    let (d, m) = read(&raw, GB18030);
    assert_eq!(d.encoding, GB18030);
    assert_eq!(d.declared, None);
    assert!(!d.replaced);
    assert_eq!(get(&m, "PID-5.1").unwrap(), "张三");
    assert_eq!(get(&m, "NK1-2.1").unwrap(), "李四");
    assert_eq!(get(&m, "DG1-3.2").unwrap(), "不稳定型心绞痛");
    assert_eq!(m.charset(), GB18030);
}

#[test]
fn hl7_20c_declared_utf8_with_gbk_bytes_is_rejected_or_flagged() {
    let raw = encoded(&adt_a01("UTF-8"), GBK);
    let first_8bit = raw.iter().position(|b| !b.is_ascii()).unwrap();
    let err = decode(&raw, GB18030, OnInvalid::Reject).unwrap_err();
    assert_eq!(
        err,
        CharsetError::Invalid {
            encoding: "UTF-8",
            offset: first_8bit
        }
    );
    assert_eq!(
        err.to_string(),
        format!("invalid UTF-8 byte sequence at byte offset {first_8bit}")
    );

    let d = decode(&raw, GB18030, OnInvalid::Replace).unwrap();
    assert!(d.replaced, "replacement is flagged");
    assert_eq!(
        d.encoding, UTF_8,
        "the declaration is honoured, not guessed around"
    );
    let m = Message::from_decoded(d).unwrap();
    assert_ne!(get(&m, "PID-5.1").unwrap(), "张三");
    assert!(get(&m, "PID-5.1").unwrap().contains('\u{FFFD}'));
}

#[test]
fn hl7_20_gb18030_four_byte_characters() {
    // 𠀀 (U+20000) and 䶮 (U+4DAE) need GB18030's 4-byte (or extension) codes.
    let text = adt_a01("GB 18030-2000").replace("张三", "王𠀀䶮");
    let raw = encoded(&text, GB18030);
    let (d, m) = read(&raw, UTF_8);
    assert_eq!(d.encoding, GB18030);
    assert_eq!(get(&m, "PID-5.1").unwrap(), "王𠀀䶮");
}

#[test]
fn hl7_20_unknown_charset_is_an_error() {
    let raw = adt_a01("EBCDIC-CN").into_bytes();
    assert_eq!(
        decode(&raw, GB18030, OnInvalid::Replace).unwrap_err(),
        CharsetError::Unknown("EBCDIC-CN".into())
    );
}

#[test]
fn hl7_20_big5_for_cns() {
    let text = cr(&[
        "MSH|^~\\&|HIS|TPE-GH|HUIZHEN||20240315||ADT^A01|1|P|2.5||||||CNS 11643-1992",
        "PID|1||A123456789^^^TPE^NI||陳大文^^^^^^L||19800101|M|||臺北市中正區^^臺北市",
    ]);
    let raw = encoded(&text, BIG5);
    let (d, m) = read(&raw, GB18030);
    assert_eq!(d.encoding, BIG5);
    assert_eq!(get(&m, "PID-5.1").unwrap(), "陳大文");
    assert_eq!(get(&m, "PID-11.3").unwrap(), "臺北市");
}

/// Every 2-byte GBK character whose trail byte is `trail`.
fn gbk_chars_with_trail(trail: u8) -> Vec<char> {
    let mut out = Vec::new();
    for lead in 0x81..=0xFEu8 {
        let bytes = [lead, trail];
        if let Some(s) = GBK.decode_without_bom_handling_and_without_replacement(&bytes) {
            let mut chars = s.chars();
            if let (Some(c), None) = (chars.next(), chars.next())
                && !c.is_ascii()
                && encode(&c.to_string(), GBK).ok().as_deref() == Some(&bytes[..])
            {
                out.push(c);
            }
        }
    }
    out
}

#[test]
fn hl7_21_gbk_trail_bytes_that_look_like_delimiters() {
    for trail in [b'|', b'^', b'~', b'\\'] {
        let chars = gbk_chars_with_trail(trail);
        assert!(
            chars.len() > 50,
            "{} chars with trail {trail:#x}",
            chars.len()
        );
        for ch in chars {
            let name = format!("{ch}三");
            let text = adt_a01("GBK").replace("张三", &name);
            let raw = encoded(&text, GBK);
            let mut lead_trail = GBK.encode(&ch.to_string()).0.into_owned();
            assert_eq!(lead_trail.pop(), Some(trail));
            let (d, m) = read(&raw, GB18030);
            assert_eq!(d.encoding, GBK);
            assert_eq!(get(&m, "PID-5.1").unwrap(), name, "{ch} (trail {trail:#x})");
            assert_eq!(get(&m, "PID-5.7").unwrap(), "L");
            assert_eq!(get(&m, "PID-5[2].1").unwrap(), "ZHANG");
            assert_eq!(get(&m, "PID-7").unwrap(), "19900101");
            assert_eq!(m.segment_count(), 10);
        }
    }
}

#[test]
fn hl7_21_trail_byte_pipe_in_msh4_before_msh18() {
    let ch = gbk_chars_with_trail(b'|')[0];
    let facility = format!("{ch}溪县人民医院");
    let text = adt_a01("GBK").replacen("JDXRMYY", &facility, 1);
    let raw = encoded(&text, GBK);
    // Split on bytes, the pipe inside the character shifts every field after MSH-4 by one.
    assert_eq!(sniff_msh18(&raw).as_deref(), Some("CHN"));
    for default in [GB18030, GBK] {
        let (d, m) = read(&raw, default);
        assert_eq!(d.encoding, GBK, "default {}", default.name());
        assert_eq!(d.declared.as_deref(), Some("GBK"));
        assert_eq!(m.header().sending_facility, facility);
        assert_eq!(m.header().charset, "GBK");
        assert_eq!(get(&m, "PID-5.1").unwrap(), "张三");
    }
    // Declared UTF-8 after a GBK MSH-4: the declaration wins, and the bytes do not fit it.
    let raw = encoded(&adt_a01("UTF-8").replacen("JDXRMYY", &facility, 1), GBK);
    assert!(matches!(
        decode(&raw, GB18030, OnInvalid::Reject),
        Err(CharsetError::Invalid {
            encoding: "UTF-8",
            ..
        })
    ));
}

#[test]
fn hl7_22_gbk_cannot_carry_a_gb18030_only_character() {
    let text = cr(&[
        "MSH|^~\\&|HUIZHEN|PROVINCE-RC|HIS|JDXRMYY|20240315||ADT^A08|HZ1|P|2.5||||||GBK",
        "PID|1||H00012345^^^JDXRMYY^MR||王𠀀^^^^^^L",
    ]);
    let err = encode(&text, GBK).unwrap_err();
    let offset = text.find('𠀀').unwrap();
    assert_eq!(
        err,
        CharsetError::Unmappable {
            ch: '𠀀',
            offset,
            encoding: "GBK"
        }
    );
    assert_eq!(
        err.to_string(),
        format!("character U+20000 at byte offset {offset} cannot be encoded in GBK")
    );
    let bytes = encode(&text, GB18030).unwrap();
    assert!(!bytes.contains(&b'?'));
    assert_eq!(GB18030.decode_without_bom_handling(&bytes).0, text);
}
