//! The transaction Bundle a conversion produces (FHIR-20): every entry is a conditional
//! interaction on a business identifier, so replaying a message changes nothing.
//!
//! * `PUT Type?identifier=system|value`: conditional update (0 matches → create, 1 → update,
//!   several → 412), for what the message is the source of truth of (the ADT patient, a
//!   report and its results, an order, an appointment, a document);
//! * `POST Type` with `ifNoneExist: identifier=system|value`: conditional create, for what the
//!   message only refers to (the patient of a result, an order, an appointment or a
//!   document), so demographics from a lab system never overwrite the registry's.
//!
//! Entries refer to each other by `fullUrl` (`urn:uuid:…`, derived from the message id and
//! the entry's identifier, so a conversion is deterministic); the server resolves them.
//! An entry is added once per identifier: a patient named by three result groups is one entry.

use std::collections::BTreeMap;

use fhir_sdk::r4b::codes::{BundleType, HTTPVerb};
use fhir_sdk::r4b::resources::{Bundle, BundleEntry, BundleEntryRequest, Resource};
use fhir_sdk::r4b::types::Identifier;
use sha2::{Digest, Sha256};

use super::ConvertError;
use super::model::{built, token};

/// Characters a search parameter value may keep as they are (besides ASCII letters and
/// digits); anything else is percent-encoded, `%` included, so an identifier system that is
/// itself percent-encoded (a Chinese authority name) survives the query string.
const KEEP: &[u8] = b"-._~:/|@!$'()*,;";

/// `identifier=<system>|<value>`, query-encoded.
pub fn identifier_query(id: &Identifier) -> String {
    let mut out = String::from("identifier=");
    for b in token(id).bytes() {
        if b.is_ascii_alphanumeric() || KEEP.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How an entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Write {
    /// Conditional update on the identifier.
    Update,
    /// Conditional create on the identifier.
    CreateIfNone,
}

/// A transaction Bundle being built.
pub(super) struct Tx {
    seed: String,
    entries: Vec<BundleEntry>,
    /// `Type?identifier=…` → the entry's fullUrl.
    by_key: BTreeMap<String, String>,
}

impl Tx {
    /// `seed` makes the fullUrls (the message id).
    pub fn new(seed: &str) -> Tx {
        Tx {
            seed: seed.to_owned(),
            entries: Vec::new(),
            by_key: BTreeMap::new(),
        }
    }

    /// The fullUrl an entry keyed `key` gets: a UUID from SHA-256 of the seed and the key.
    fn full_url(&self, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.seed.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        format!(
            "urn:uuid:{}",
            uuid::Builder::from_custom_bytes(b).into_uuid()
        )
    }

    /// The fullUrl the entry for `type_` with this identifier has or will have.
    pub fn url_for(&self, type_: &str, id: &Identifier) -> String {
        self.full_url(&format!("{type_}?{}", identifier_query(id)))
    }

    /// The fullUrl of the entry written for `type_` with this identifier, if there is one.
    pub fn existing(&self, type_: &str, id: &Identifier) -> Option<&str> {
        self.by_key
            .get(&format!("{type_}?{}", identifier_query(id)))
            .map(String::as_str)
    }

    /// Adds `resource` written as `how` on `id`; returns its fullUrl. A second entry with the
    /// same type and identifier is not added: the first one's fullUrl is returned.
    pub fn add(
        &mut self,
        type_: &str,
        id: &Identifier,
        how: Write,
        resource: Resource,
    ) -> Result<String, ConvertError> {
        let query = identifier_query(id);
        let key = format!("{type_}?{query}");
        if let Some(u) = self.by_key.get(&key) {
            return Ok(u.clone());
        }
        let full_url = self.full_url(&key);
        let request = match how {
            Write::Update => BundleEntryRequest::builder()
                .method(HTTPVerb::Put)
                .url(key.clone())
                .build(),
            Write::CreateIfNone => BundleEntryRequest::builder()
                .method(HTTPVerb::Post)
                .url(type_.to_owned())
                .if_none_exist(query)
                .build(),
        };
        let request = built(request, "Bundle.entry.request")?;
        let entry = built(
            BundleEntry::builder()
                .full_url(full_url.clone())
                .resource(resource)
                .request(request)
                .build(),
            "Bundle.entry",
        )?;
        self.entries.push(entry);
        self.by_key.insert(key, full_url.clone());
        Ok(full_url)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The resource types of the entries, in order, each once.
    pub fn types(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.entries {
            if let Some(r) = &e.resource {
                let t = super::wire::resource_type_name(r);
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// The transaction Bundle.
    pub fn finish(self) -> Result<Bundle, ConvertError> {
        let mut b = built(
            Bundle::builder().r#type(BundleType::Transaction).build(),
            "Bundle",
        )?;
        b.entry = self.entries.into_iter().map(Some).collect();
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        let mut id = Identifier::builder().build().unwrap();
        id.system = Some("urn:huizhen:id:%E5%8E%BF".into());
        id.value = Some("A 1&2".into());
        assert_eq!(
            identifier_query(&id),
            "identifier=urn:huizhen:id:%25E5%258E%25BF|A%201%262"
        );
    }

    #[test]
    fn full_urls_are_stable_uuids() {
        let t = Tx::new("m1");
        let a = t.full_url("Patient?identifier=x|1");
        assert_eq!(a, t.full_url("Patient?identifier=x|1"));
        assert_ne!(a, Tx::new("m2").full_url("Patient?identifier=x|1"));
        assert!(a.starts_with("urn:uuid:") && a.len() == 45, "{a}");
    }
}
