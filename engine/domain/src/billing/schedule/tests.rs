use super::*;

pub(crate) const YAML: &str = r#"version: 1
facility: H44010600001
province: "44"
mapping_version: "2026.01"
services:
  - service_type: institution-to-institution
    name: 远程会诊
    local_code: HZ-YCHZ-01
    national_code: "003101000010000"
    province_code: "310100001-1"
    by_title:
      chief-physician: 300.00
      副主任医师: "200"
      attending-physician: 100.5
    included_minutes: 30
    extra:
      block_minutes: 15
      max_blocks: 4
      name: 远程会诊加时
      local_code: HZ-YCHZ-02
      national_code: "003101000020000"
      province_code: "310100002-1"
      price: 50.00
  - service_type: direct-to-patient
    name: 互联网复诊
    local_code: HZ-HLWFZ
    national_code: "001102000010000"
    province_code: "110200001-1"
    covered: false
    by_title: { chief-physician: 80.00 }
agreements:
  - id: AGR-2026-001
    invited_share_percent: 60
"#;

#[test]
fn the_documented_shape_parses_exactly() {
    let s = FeeSchedule::parse("fees.yaml", YAML).unwrap();
    assert_eq!(s.facility, "H44010600001");
    let consult = s.service(ServiceType::InstitutionToInstitution).unwrap();
    assert_eq!(consult.item.codes.national, "003101000010000");
    assert_eq!(consult.item.codes.mapping_version, "2026.01");
    assert_eq!(consult.by_title[&Title::Chief], Fen(30_000));
    assert_eq!(consult.by_title[&Title::AssociateChief], Fen(20_000));
    assert_eq!(consult.by_title[&Title::Attending], Fen(10_050));
    assert!(consult.covered);
    let extra = consult.extra.as_ref().unwrap();
    assert_eq!((extra.block_minutes, extra.price), (15, Fen(5_000)));
    assert!(!s.service(ServiceType::DirectToPatient).unwrap().covered);
    assert!(s.service(ServiceType::InternetHospital).is_none());
    assert_eq!(s.agreements["AGR-2026-001"], Rate::percent(60).unwrap());
}

fn problems(yaml: &str) -> Vec<String> {
    FeeSchedule::parse("fees.yaml", yaml)
        .unwrap_err()
        .0
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let bad = YAML
        .replace("\"003101000010000\"", "\" 003101000010000\"")
        .replace("chief-physician: 300.00", "chief-physician: 300.001")
        .replace("price: 50.00", "price: -5")
        .replace("invited_share_percent: 60", "invited_share_percent: 160");
    let p = problems(&bad);
    assert_eq!(p.len(), 4, "{p:#?}");
    assert!(
        p[0].starts_with("fees.yaml:9:20: error: services[0].national_code ` 003101000010000` has surrounding whitespace"),
        "{}",
        p[0]
    );
    assert!(
        p[1].starts_with("fees.yaml:12:24: error: services[0].by_title.chief-physician:"),
        "{}",
        p[1]
    );
    assert!(
        p[2].starts_with("fees.yaml:23:14: error: services[0].extra.price is negative"),
        "{}",
        p[2]
    );
    assert!(
        p[3].starts_with("fees.yaml:33:28: error: agreements[0].invited_share_percent 160"),
        "{}",
        p[3]
    );
}

#[test]
fn syntax_and_unknown_keys_name_the_position() {
    let p = problems(&YAML.replace("included_minutes: 30", "included_minute: 30"));
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("fees.yaml:15:5: error:"), "{}", p[0]);
    assert!(p[0].contains("unknown field `included_minute`"), "{}", p[0]);
    assert!(!p[0].contains("at line"), "{}", p[0]);
    let p = problems(&YAML.replace("direct-to-patient", "institution-to-institution"));
    assert!(p[0].contains("priced twice"), "{p:?}");
    let p = problems("version: 2\nfacility: X\nprovince: '44'\nmapping_version: v\nservices: []\n");
    assert!(
        p[0].starts_with("fees.yaml:1:10: error: version 2"),
        "{p:?}"
    );
    assert!(p[1].contains("services is empty"), "{p:?}");
}
