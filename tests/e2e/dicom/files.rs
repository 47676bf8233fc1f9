//! Test instances written with dicom-rs (dicom-object), converted to other transfer syntaxes
//! with dcmtk's tools, and the dcmtk check (skip outside CI when dcmtk is absent).

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const EXPLICIT: &str = "1.2.840.10008.1.2.1";
pub const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// Whether dcmtk is installed. Outside CI a missing dcmtk skips the test (with a note); under
/// CI (`CI=true`) it fails it: `.ci/run` installs the package.
pub fn dcmtk() -> bool {
    let found = Command::new("storescu").arg("--version").output().is_ok();
    if !found {
        if crate::support::under_ci() {
            panic!("dcmtk (storescu, findscu, …) is required under CI: apt-get install dcmtk");
        }
        eprintln!("skipping: dcmtk is not installed (apt-get install dcmtk)");
    }
    found
}

/// Runs a dcmtk tool; panics with its output when it fails.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// What an instance says.
#[derive(Debug, Clone)]
pub struct Spec {
    pub study: String,
    pub series: String,
    pub sop: String,
    pub patient_id: String,
    /// The Patient's Name as bytes (already in the charset below).
    pub name: Vec<u8>,
    /// (0008,0005), or none.
    pub charset: Option<String>,
    pub accession: String,
    pub date: String,
    pub modality: String,
    pub instance_number: u32,
    /// Rows = columns of a MONOCHROME2 image.
    pub size: u16,
    /// 8 bits per pixel (for JPEG Baseline) instead of 12 in 16.
    pub bits8: bool,
}

impl Spec {
    pub fn new(study: &str, series: &str, n: u32) -> Spec {
        Spec {
            study: study.into(),
            series: series.into(),
            sop: format!("{series}.{n}"),
            patient_id: "P001".into(),
            name: b"Li^Si".to_vec(),
            charset: None,
            accession: "ACC0001".into(),
            date: "20260115".into(),
            modality: "CT".into(),
            instance_number: n,
            size: 16,
            bits8: false,
        }
    }
}

fn text(t: dicom_core::Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(t, vr, PrimitiveValue::from(v))
}

/// The data set of `s` (no pixel data).
fn dataset(s: &Spec) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    if let Some(c) = &s.charset {
        obj.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, c));
    }
    obj.put(text(tags::SOP_CLASS_UID, VR::UI, CT));
    obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, &s.sop));
    obj.put(text(tags::STUDY_DATE, VR::DA, &s.date));
    obj.put(text(tags::ACCESSION_NUMBER, VR::SH, &s.accession));
    obj.put(text(tags::MODALITY, VR::CS, &s.modality));
    // Raw bytes: dicom-rs writes them as they are, whatever the charset.
    let mut name = s.name.clone();
    if name.len() % 2 == 1 {
        name.push(b' ');
    }
    obj.put(DataElement::new(
        tags::PATIENT_NAME,
        VR::PN,
        PrimitiveValue::U8(name.into()),
    ));
    obj.put(text(tags::PATIENT_ID, VR::LO, &s.patient_id));
    obj.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &s.study));
    obj.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &s.series));
    obj.put(text(tags::SERIES_NUMBER, VR::IS, "1"));
    obj.put(text(
        tags::INSTANCE_NUMBER,
        VR::IS,
        &s.instance_number.to_string(),
    ));
    let (allocated, stored) = if s.bits8 { (8, 8) } else { (16, 12) };
    for (t, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, s.size),
        (tags::COLUMNS, s.size),
        (tags::BITS_ALLOCATED, allocated),
        (tags::BITS_STORED, stored),
        (tags::HIGH_BIT, stored - 1),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(t, VR::US, PrimitiveValue::from(v)));
    }
    obj.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    obj
}

/// Writes `s` as Explicit VR Little Endian with a 12-bit gradient image.
pub fn write(path: &Path, s: &Spec) {
    let mut obj = dataset(s);
    let n = usize::from(s.size) * usize::from(s.size);
    let seed = s.instance_number as usize;
    if s.bits8 {
        let pixels: Vec<u8> = (0..n).map(|i| ((i * 7 + seed) % 256) as u8).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(pixels.into()),
        ));
    } else {
        let pixels: Vec<u16> = (0..n).map(|i| ((i * 7 + seed) % 4096) as u16).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.into()),
        ));
    }
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT)
                .media_storage_sop_class_uid(CT)
                .media_storage_sop_instance_uid(&s.sop),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// Writes `s` as JPEG 2000 Lossless: encapsulated pixel data holding a codestream header (the
/// SCP stores it as received and never decodes it; dcmtk has no JPEG 2000 codec).
pub fn write_j2k(path: &Path, s: &Spec) {
    let mut obj = dataset(s);
    let mut codestream = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x2F];
    codestream.extend((0..250u8).map(|b| b.wrapping_mul(3)));
    codestream.extend_from_slice(&[0xFF, 0xD9]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::from(PixelFragmentSequence::new(vec![], vec![codestream])),
    ));
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(J2K_LOSSLESS)
                .media_storage_sop_class_uid(CT)
                .media_storage_sop_instance_uid(&s.sop),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// The data set bytes of a Part 10 file (what a C-STORE sends: everything after group 0002).
pub fn dataset_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[128..132], b"DICM", "{}", path.display());
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group_len..].to_vec()
}

/// dcmdump's listing of a file's data set (without group 0002).
pub fn dump(path: &Path) -> String {
    run("dcmdump", &["-q", path.to_str().unwrap()])
        .lines()
        .filter(|l| l.starts_with('(') && !l.starts_with("(0002"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The transfer syntax of a Part 10 file.
pub fn transfer_syntax(path: &Path) -> String {
    meta(path).transfer_syntax
}

/// The file meta group of a Part 10 file.
pub fn meta(path: &Path) -> huizhen_dicom::dataset::FileMeta {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    huizhen_dicom::dataset::read_file_meta(&mut f).unwrap()
}

/// The storescu option that proposes transfer syntax `ts` (with the uncompressed ones).
pub fn storescu_option(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2" => "-xi",
        "1.2.840.10008.1.2.1.99" => "-xd",
        "1.2.840.10008.1.2.4.70" => "-xs",
        "1.2.840.10008.1.2.4.50" => "-xy",
        "1.2.840.10008.1.2.4.80" => "-xt",
        "1.2.840.10008.1.2.4.90" => "-xv",
        "1.2.840.10008.1.2.5" => "-xr",
        _ => "-x=",
    }
}

/// Converts `from` into `to` with a dcmtk tool (`dcmconv +ti`, `dcmcjpls`, …).
pub fn convert(tool: &str, opts: &[&str], from: &Path, to: &Path) -> PathBuf {
    let mut args: Vec<&str> = opts.to_vec();
    let (f, t) = (from.to_str().unwrap(), to.to_str().unwrap());
    args.extend([f, t]);
    run(tool, &args);
    to.to_path_buf()
}
