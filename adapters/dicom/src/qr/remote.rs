//! The registry of remote AEs: the hospital PACS the SCU side queries and retrieves from, the
//! expert workstations and archives C-MOVE may send to and the forwarding sink stores to —
//! each with its title, address and facility.
//!
//! ```yaml
//! remote_aes:
//!   - title: PACS1              # its AE title (the called AE title when we associate)
//!     host: 10.12.0.5
//!     port: 104
//!     facility: county-1        # whose PACS it is
//!     calling: HUIZHEN          # our AE title toward it (default HUIZHEN)
//!     tls: { ca: hospital-ca.pem }   # optional
//! ```
//!
//! In a pipeline it is the `dicom` source's `remote_aes` key; for the CLI it is a file with
//! that key (`--registry aes.yaml`), read with the engine's config reader so a mistake is
//! reported as `file:line:column`.

use std::path::Path;
use std::time::Duration;

use huizhen_core::tls::ClientTlsConfig;
use serde::Deserialize;

use crate::scu::Peer;
use crate::source::check_ae_title;

/// One remote AE.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAe {
    pub title: String,
    pub host: String,
    pub port: u16,
    pub facility: String,
    /// Our AE title toward it (default: `HUIZHEN`).
    #[serde(default)]
    pub calling: Option<String>,
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// The facility's PACS the priors of its consultations' patients are pulled from (DCM-05:
    /// C-FIND, then C-MOVE to this engine's SCP, which the PACS must know by its AE title).
    #[serde(default)]
    pub prefetch: bool,
}

impl RemoteAe {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// How to associate with it, calling as `default_calling` unless the entry names one.
    pub fn peer(&self, default_calling: &str, timeout: Duration) -> Result<Peer, String> {
        let addr = self.addr();
        let tls = match &self.tls {
            Some(t) => Some(
                t.client(&addr)
                    .map_err(|e| format!("remote AE {}: {e}", self.title))?,
            ),
            None => None,
        };
        Ok(Peer {
            addr,
            called: self.title.clone(),
            calling: self
                .calling
                .clone()
                .unwrap_or_else(|| default_calling.to_owned()),
            tls,
            timeout,
            max_pdu: 256 * 1024,
        })
    }
}

/// The known remote AEs (titles unique).
#[derive(Debug, Clone, Default)]
pub struct Registry(pub Vec<RemoteAe>);

/// A registry file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    remote_aes: Vec<RemoteAe>,
}

impl Registry {
    /// Checks the entries: AE titles, non-empty host and facility, ports, no title twice.
    pub fn new(entries: Vec<RemoteAe>) -> Result<Registry, String> {
        for (i, a) in entries.iter().enumerate() {
            check_ae_title(&format!("remote_aes[{i}].title"), &a.title)?;
            if let Some(c) = &a.calling {
                check_ae_title(&format!("remote_aes[{i}].calling"), c)?;
            }
            if a.host.trim().is_empty() {
                return Err(format!("remote_aes[{i}].host: empty"));
            }
            if a.port == 0 {
                return Err(format!("remote_aes[{i}].port: 0 is not a port"));
            }
            if a.facility.trim().is_empty() {
                return Err(format!("remote_aes[{i}].facility: empty"));
            }
            if entries[..i].iter().any(|b| b.title == a.title) {
                return Err(format!(
                    "remote_aes[{i}].title: {:?} is registered twice (C-MOVE destinations are found by title)",
                    a.title
                ));
            }
        }
        Ok(Registry(entries))
    }

    /// Reads a registry file (`remote_aes: [...]`); errors are `file:line:column: message`.
    pub fn load(path: &Path) -> Result<Registry, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let file: RegistryFile =
            huizhen_core::config::parse_yaml(path, &text).map_err(|e| e.to_string())?;
        Registry::new(file.remote_aes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn by_title(&self, title: &str) -> Option<&RemoteAe> {
        self.0.iter().find(|a| a.title == title.trim())
    }

    /// The remote AEs of a facility.
    pub fn of_facility<'a>(&'a self, facility: &'a str) -> impl Iterator<Item = &'a RemoteAe> {
        self.0.iter().filter(move |a| a.facility == facility)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_file_is_checked_and_errors_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("aes.yaml");
        std::fs::write(
            &good,
            "remote_aes:\n  - title: PACS1\n    host: 127.0.0.1\n    port: 104\n    facility: county-1\n  - title: WS01\n    host: ::1\n    port: 11113\n    facility: province\n    calling: HZ_EXPERT\n",
        )
        .unwrap();
        let r = Registry::load(&good).unwrap();
        assert_eq!(r.by_title("PACS1").unwrap().addr(), "127.0.0.1:104");
        assert_eq!(r.by_title("WS01").unwrap().addr(), "[::1]:11113");
        assert_eq!(r.of_facility("county-1").count(), 1);
        let p = r
            .by_title("WS01")
            .unwrap()
            .peer("HUIZHEN", Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            (p.called.as_str(), p.calling.as_str()),
            ("WS01", "HZ_EXPERT")
        );

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "remote_aes:\n  - title: PACS1\n    host: 127.0.0.1\n    port: many\n    facility: c\n",
        )
        .unwrap();
        let e = Registry::load(&bad).unwrap_err();
        assert!(e.contains("bad.yaml:4:"), "{e}");
        std::fs::write(
            &bad,
            "remote_aes:\n  - {title: A, host: h, port: 1, facility: f}\n  - {title: A, host: h, port: 2, facility: f}\n",
        )
        .unwrap();
        assert!(
            Registry::load(&bad)
                .unwrap_err()
                .contains("remote_aes[1].title")
        );
        std::fs::write(
            &bad,
            "remote_aes:\n  - {title: A, host: h, port: 1, facilty: f}\n",
        )
        .unwrap();
        let e = Registry::load(&bad).unwrap_err();
        assert!(e.contains("bad.yaml:2:"), "{e}");
    }
}
