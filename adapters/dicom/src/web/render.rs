//! Rendering the first frame of an instance with uncompressed pixel data to PNG (8-bit gray or
//! RGB): grayscale through the modality rescale and the first VOI window (or the frame's full
//! range), MONOCHROME1 inverted. Compressed pixel data is not decoded here (406). The PNG is
//! written by hand: zlib from `flate2`, CRC-32 below.

use std::io::Write;

use axum::http::StatusCode;
use dicom_core::Tag;
use dicom_core::value::Value as DValue;

type Failure = (StatusCode, String);

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut c = kind.to_vec();
    c.extend_from_slice(data);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

/// An 8-bit PNG of `channels` (1 gray, 3 RGB) samples per pixel.
pub fn encode(width: u32, height: u32, channels: u8, pixels: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, if channels == 3 { 2 } else { 0 }, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let row = width as usize * channels as usize;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    for r in pixels.chunks(row).take(height as usize) {
        let _ = z.write_all(&[0]);
        let _ = z.write_all(r);
    }
    let idat = z.finish().unwrap_or_default();
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The first frame of a stored instance as PNG (blocking).
pub fn png(path: &str) -> Result<Vec<u8>, Failure> {
    let internal = |m: String| (StatusCode::INTERNAL_SERVER_ERROR, m);
    let obj = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| internal(format!("{path}: {e}")))?;
    let int = |t: Tag| -> Option<i64> { obj.element(t).ok()?.to_int::<i64>().ok() };
    let float = |t: Tag| -> Option<f64> {
        obj.element(t)
            .ok()?
            .to_multi_float64()
            .ok()?
            .first()
            .copied()
    };
    let text = |t: Tag| -> String {
        obj.element(t)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let rows = int(Tag(0x0028, 0x0010)).unwrap_or(0) as usize;
    let cols = int(Tag(0x0028, 0x0011)).unwrap_or(0) as usize;
    let spp = int(Tag(0x0028, 0x0002)).unwrap_or(1) as usize;
    let bits = int(Tag(0x0028, 0x0100)).unwrap_or(8) as usize;
    let signed = int(Tag(0x0028, 0x0103)).unwrap_or(0) == 1;
    let planar = int(Tag(0x0028, 0x0006)).unwrap_or(0) == 1;
    let photometric = text(Tag(0x0028, 0x0004));
    let px = obj.element(Tag(0x7FE0, 0x0010)).map_err(|_| {
        (
            StatusCode::NOT_FOUND,
            "the instance has no pixel data".to_owned(),
        )
    })?;
    let DValue::Primitive(p) = px.value() else {
        return Err((
            StatusCode::NOT_ACCEPTABLE,
            "compressed pixel data is not rendered here; retrieve the frames or the instance"
                .into(),
        ));
    };
    let bytes = p.to_bytes();
    let n = rows * cols;
    if n == 0 {
        return Err(internal("no Rows/Columns".into()));
    }
    match (photometric.as_str(), spp, bits) {
        ("RGB", 3, 8) => {
            if bytes.len() < n * 3 {
                return Err(internal("pixel data shorter than one frame".into()));
            }
            let rgb: Vec<u8> = if planar {
                (0..n)
                    .flat_map(|i| [bytes[i], bytes[n + i], bytes[2 * n + i]])
                    .collect()
            } else {
                bytes[..n * 3].to_vec()
            };
            Ok(encode(cols as u32, rows as u32, 3, &rgb))
        }
        ("MONOCHROME1" | "MONOCHROME2", 1, 8 | 16) => {
            let values: Vec<f64> = if bits == 8 {
                if bytes.len() < n {
                    return Err(internal("pixel data shorter than one frame".into()));
                }
                bytes[..n]
                    .iter()
                    .map(|b| {
                        if signed {
                            f64::from(*b as i8)
                        } else {
                            f64::from(*b)
                        }
                    })
                    .collect()
            } else {
                if bytes.len() < n * 2 {
                    return Err(internal("pixel data shorter than one frame".into()));
                }
                bytes[..n * 2]
                    .chunks(2)
                    .map(|c| {
                        let u = u16::from_le_bytes([c[0], c[1]]);
                        if signed {
                            f64::from(u as i16)
                        } else {
                            f64::from(u)
                        }
                    })
                    .collect()
            };
            let slope = float(Tag(0x0028, 0x1053)).unwrap_or(1.0);
            let intercept = float(Tag(0x0028, 0x1052)).unwrap_or(0.0);
            let values: Vec<f64> = values.iter().map(|v| v * slope + intercept).collect();
            let (lo, hi) = match (float(Tag(0x0028, 0x1050)), float(Tag(0x0028, 0x1051))) {
                (Some(c), Some(w)) if w >= 1.0 => {
                    (c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0)
                }
                _ => {
                    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (lo, hi)
                }
            };
            let span = (hi - lo).max(1e-9);
            let invert = photometric == "MONOCHROME1";
            let gray: Vec<u8> = values
                .iter()
                .map(|v| {
                    let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                    if invert { 255 - g } else { g }
                })
                .collect();
            Ok(encode(cols as u32, rows as u32, 1, &gray))
        }
        _ => Err((
            StatusCode::NOT_ACCEPTABLE,
            format!("{photometric} with {spp} samples of {bits} bits is not rendered here"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_png_shape() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        let png = encode(2, 2, 1, &[0, 255, 255, 0]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        // The image data inflates to the filtered rows.
        let start = png.windows(4).position(|w| w == b"IDAT").unwrap();
        let len = u32::from_be_bytes(png[start - 4..start].try_into().unwrap()) as usize;
        let mut z = flate2::read::ZlibDecoder::new(&png[start + 4..start + 4 + len]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut z, &mut raw).unwrap();
        assert_eq!(raw, vec![0, 0, 255, 0, 255, 0]);
    }
}
