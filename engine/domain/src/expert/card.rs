//! Expert cards: what the hard filters read of an expert, prepared once per expert value (at
//! import, on a new version, on a state change) instead of once per case, and laid out flat.
//!
//! **Why.** A first-level department case (`03`) has ~1,700 candidates, most of them excluded.
//! Checking one against the filters costs a few comparisons, but reading an [`Expert`] means
//! following pointers to a dozen separate heap blocks (the departments, each department text,
//! the codes, the facility, the filings, the schedule), and on a busy machine each of them is a
//! cache miss: profiling showed the filters waiting on memory, not computing. An
//! [`ExpertCard`] keeps the same facts inline — short texts in place (up to 15 bytes, which
//! covers department codes, ICD-10 codes, facility codes and ids), the department keys with
//! their dotted ancestors and the normalised codes already derived — so walking a list of cards
//! reads consecutive memory. A fact that does not fit (a longer text, more entries than the
//! inline room) is simply not kept, and the filters read the expert's own field for it: the
//! answers are the same either way, only slower (a property test checks that).

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use super::model::{ClockTime, Days, Expert, Load, Title, WeeklyWindow};

/// A text of at most 15 bytes, kept inline.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Short {
    len: u8,
    bytes: [u8; 15],
}

impl Short {
    /// The text inline, or `None` when it is longer than 15 bytes.
    fn new(text: &str) -> Option<Short> {
        let b = text.as_bytes();
        let mut bytes = [0u8; 15];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(Short {
            len: u8::try_from(b.len()).ok()?,
            bytes,
        })
    }

    /// The text's bytes: what the filters compare (no UTF-8 check on the hot path).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(crate) fn as_str(&self) -> &str {
        // The bytes were copied whole from a `&str`, so they are UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Up to `N` short texts inline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shorts<const N: usize> {
    n: u8,
    items: [Short; N],
}

impl<const N: usize> Shorts<N> {
    /// The texts inline, or `None` when there are more than `N` or one is too long.
    fn new<'t>(texts: impl IntoIterator<Item = &'t str>) -> Option<Shorts<N>> {
        let mut out = Shorts {
            n: 0,
            items: [Short::default(); N],
        };
        for t in texts {
            *out.items.get_mut(usize::from(out.n))? = Short::new(t)?;
            out.n += 1;
        }
        Some(out)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.items[..usize::from(self.n)]
            .iter()
            .map(Short::as_bytes)
    }
}

/// Each department key an expert is filed under (possibly repeated): each department, trimmed
/// and not blank, and its dotted ancestors (`03.02.01` → `03.02.01`, `03.02`, `03`). A case
/// for department `d` accepts the expert exactly when `d` (trimmed, not blank) is one of them
/// ([`Expert::in_department`]).
pub fn department_key_iter(expert: &Expert) -> impl Iterator<Item = &str> {
    expert
        .departments
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .flat_map(|d| {
            std::iter::successors(Some(d), |rest| rest.rsplit_once('.').map(|(head, _)| head))
                .filter(|k| !k.is_empty())
        })
}

/// Every department key an expert is filed under, sorted, each once.
pub fn department_keys(expert: &Expert) -> Vec<String> {
    let mut keys: Vec<String> = department_key_iter(expert).map(str::to_owned).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Every ICD-10 category an expert declares expertise in, sorted, each once.
pub fn expertise_keys(expert: &Expert) -> Vec<String> {
    let mut cats: Vec<String> = expert
        .expertise
        .iter()
        .map(|c| c.category().to_owned())
        .collect();
    cats.sort_unstable();
    cats.dedup();
    cats
}

/// The facts of one expert the hard filters read, inline (see the module docs). Built by
/// [`Profile::of`]; a field that is `None` did not fit and is read from the expert.
#[derive(Clone, Debug)]
pub(crate) struct Profile {
    /// The id as given.
    pub(crate) id: Option<Short>,
    /// The facility, trimmed.
    pub(crate) facility: Option<Short>,
    /// The department keys ([`department_key_iter`], deduplicated).
    pub(crate) departments: Option<Shorts<3>>,
    /// The declared codes, normalised.
    pub(crate) codes: Option<Shorts<4>>,
    /// The multi-site filings, trimmed.
    pub(crate) filings: Option<Shorts<2>>,
    /// The schedule's windows.
    pub(crate) windows: Option<([WeeklyWindow; 4], u8)>,
    pub(crate) title: Title,
    pub(crate) licence_verified: bool,
    pub(crate) registration_active: bool,
    pub(crate) on_call: bool,
    pub(crate) since: NaiveDate,
    pub(crate) last_heartbeat: Option<DateTime<Utc>>,
    pub(crate) load: Load,
}

impl Profile {
    /// Prepares the inline facts of `e`.
    pub(crate) fn of(e: &Expert) -> Profile {
        let mut keys: [&str; 3] = [""; 3];
        let mut n = 0usize;
        let mut fits = true;
        for k in department_key_iter(e) {
            if keys[..n].contains(&k) {
                continue;
            }
            match keys.get_mut(n) {
                Some(slot) => {
                    *slot = k;
                    n += 1;
                }
                None => {
                    fits = false;
                    break;
                }
            }
        }
        let departments = if fits {
            Shorts::new(keys[..n].iter().copied())
        } else {
            None
        };
        let windows = u8::try_from(e.schedule.windows.len())
            .ok()
            .filter(|n| *n <= 4)
            .map(|n| {
                let mut w = [WeeklyWindow {
                    days: Days::default(),
                    from: ClockTime::MIDNIGHT,
                    to: ClockTime::MIDNIGHT,
                }; 4];
                w[..usize::from(n)].copy_from_slice(&e.schedule.windows);
                (w, n)
            });
        Profile {
            id: Short::new(&e.id),
            facility: Short::new(e.facility.trim()),
            departments,
            codes: Shorts::new(e.expertise.iter().map(|c| c.normalized())),
            filings: Shorts::new(e.multi_site_filings.iter().map(|f| f.trim())),
            windows,
            title: e.title,
            licence_verified: e.licence_verified,
            registration_active: e.registration_active,
            on_call: e.schedule.on_call,
            since: e.independent_practice_since,
            last_heartbeat: e.presence.last_heartbeat,
            load: e.load,
        }
    }

    /// A profile that keeps nothing inline, so that every check reads the expert: what the
    /// inline facts must agree with (tests).
    #[cfg(test)]
    pub(crate) fn unprepared(e: &Expert) -> Profile {
        Profile {
            id: None,
            facility: None,
            departments: None,
            codes: None,
            filings: None,
            windows: None,
            ..Profile::of(e)
        }
    }

    /// The windows, from the card or the expert.
    pub(crate) fn windows<'a>(&'a self, e: &'a Expert) -> &'a [WeeklyWindow] {
        match &self.windows {
            Some((w, n)) => &w[..usize::from(*n)],
            None => &e.schedule.windows,
        }
    }

    /// The id as given, from the card or the expert.
    pub(crate) fn id<'a>(&'a self, e: &'a Expert) -> &'a str {
        // `map_or_else`: the expert's field is read only when the card has none.
        self.id
            .as_ref()
            .map_or_else(|| e.id.as_str(), Short::as_str)
    }

    /// The facility, trimmed, from the card or the expert.
    pub(crate) fn facility<'a>(&'a self, e: &'a Expert) -> &'a [u8] {
        self.facility
            .as_ref()
            .map_or_else(|| e.facility.trim().as_bytes(), Short::as_bytes)
    }

    /// [`Expert::in_department`] for a department already trimmed.
    pub(crate) fn in_department(&self, e: &Expert, want: &str) -> bool {
        match &self.departments {
            Some(keys) if !want.is_empty() => keys.iter().any(|k| k == want.as_bytes()),
            _ => e.in_department(want),
        }
    }

    /// True when the expert has a multi-site filing at `platform` (trimmed).
    pub(crate) fn filed_at(&self, e: &Expert, platform: &str) -> bool {
        match &self.filings {
            Some(f) => f.iter().any(|f| f == platform.as_bytes()),
            None => e.multi_site_filings.iter().any(|f| f.trim() == platform),
        }
    }
}

/// An expert with its [`Profile`]: what an index hands to matching. Cheap to clone (the
/// expert is shared); dereferences to the [`Expert`]. Build a new card whenever the expert
/// changes (facts or state): the card copies what the filters read.
#[derive(Clone, Debug)]
pub struct ExpertCard {
    profile: Profile,
    expert: Arc<Expert>,
}

impl ExpertCard {
    /// The card of `expert`.
    pub fn new(expert: Arc<Expert>) -> ExpertCard {
        ExpertCard {
            profile: Profile::of(&expert),
            expert,
        }
    }

    /// The shared expert.
    pub fn expert(&self) -> &Arc<Expert> {
        &self.expert
    }

    pub(crate) fn profile(&self) -> &Profile {
        &self.profile
    }
}

impl Deref for ExpertCard {
    type Target = Expert;
    fn deref(&self) -> &Expert {
        &self.expert
    }
}
