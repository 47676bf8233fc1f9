//! Integration tests for the HL7 v2 core, one binary: the acceptance tests of STANDARDS
//! HL7-20…22 and HL7-30…36, property tests, and the replay of the fuzz corpus.

mod charset;
mod corpus;
mod differential;
mod props;
mod syntax;

use huizhen_hl7::Message;

/// Joins segments with CR, the standard terminator.
pub fn cr(segments: &[&str]) -> String {
    segments.join("\r")
}

/// Parses text that must parse.
pub fn parse(text: &str) -> Message {
    match Message::parse(text) {
        Ok(m) => m,
        Err(e) => panic!("parse failed: {e}"),
    }
}

/// `get_str` for a path that must be valid.
pub fn get(msg: &Message, path: &str) -> Option<String> {
    match msg.get_str(path) {
        Ok(v) => v,
        Err(e) => panic!("bad path: {e}"),
    }
}

/// An inpatient admission from a county hospital HIS (ADT^A01, v2.5, Chinese names).
/// `MSH-18` is left for the caller to fill in.
pub fn adt_a01(msh18: &str) -> String {
    cr(&[
        &format!(
            "MSH|^~\\&|HIS|JDXRMYY|HUIZHEN|PROVINCE-RC|20240315083012||ADT^A01^ADT_A01|HIS20240315000123|P|2.5|||AL|NE|CHN|{msh18}"
        ),
        "EVN|A01|20240315083000|||0231^李^建国^^^^^^^L",
        "PID|1||H00012345^^^JDXRMYY^MR~330781199001011234^^^CHN^NNCHN||张三^^^^^^L~ZHANG^SAN^^^^^A||19900101|M|||城关镇人民路88号^^兰溪市^浙江省^321100^CHN^H||^PRN^PH^^86^579^88123456~^PRN^CP^^86^^13800138000|||M^已婚|||330781199001011234|||汉族",
        "NK1|1|李四^^^^^^L|SPO^配偶|城关镇人民路88号^^兰溪市^浙江省^321100^CHN|^PRN^CP^^86^^13900139000",
        "PV1|1|I|NK^0302^01^JDXRMYY^^^^^心内科病区||||0231^李^建国^^^^^^^L|||CAR||||7|||0231^李^建国^^^^^^^L|IP|I20240315001|||||||||||||||||||||||||20240315080000",
        "DG1|1||I20.000^不稳定型心绞痛^ICD10-CN||20240315|A",
        "OBX|1|TX|11450-4^主诉^LN||胸闷、胸痛 3 天\\.br\\加重 2 小时||||||F",
        "OBX|2|NM|8480-6^收缩压^LN||150|mm[Hg]|90-140|H|||F",
        "OBX|3|ST|X-NOTE^备注^L||血压 150\\S\\95；药物过敏：青霉素\\T\\头孢|||||F",
        "ZDS|1.2.156.112604.1.2.1.20240315.1^HIS^Application^DICOM",
    ])
}
