//! Address agreement: the share of tokens two addresses have in common, tolerant of the
//! slips of keyed Latin addresses (a typo in a word, a space lost or added: `cope place` /
//! `copeplace`, `ashgrove` / `ashgrov e`, `shenton park` / `shento mpark`), strict about
//! house numbers.
//!
//! Allocation-free like the rest of comparison: unmatched words are kept in fixed arrays and
//! joined words in a stack buffer.

use super::{Level, best, within_one_edit};
use crate::identity::normalize::{NormalizedAddress, NormalizedPerson, TokenHash};

/// Address agreement: the Dice share of tokens in common, `exact` at 0.8 only when the house
/// numbers agree too (most of a Chinese address is the province, city and road that
/// neighbours share; the numbers, 号 栋 室, are the household's), `partial` at 0.45. Latin
/// words left over count as in common when one typo apart (words of five letters or more),
/// or when two words of one side written together are the other side's one word (a lost
/// space), or two and two are the same letters split elsewhere (a moved space), each within
/// one typo.
pub(super) fn compare_addresses(a: &NormalizedPerson, b: &NormalizedPerson) -> Option<Level> {
    let mut level = None;
    for x in a.addresses.iter().filter(|x| !x.tokens.is_empty()) {
        for y in b.addresses.iter().filter(|y| !y.tokens.is_empty()) {
            level = best(level, Some(address_level(x, y)));
        }
    }
    level
}

/// At most this many unmatched words per side take part in the typo and join passes.
const MAX_UNMATCHED: usize = 16;

/// The longest joined word compared (longer ones are not joined).
const MAX_JOINED: usize = 64;

/// The joins of two and two words are tried only with at most this many words left per side
/// (the pass is quadratic in pairs).
const MAX_FOR_TWO_AND_TWO: usize = 4;

/// The Latin words of one address that found no equal word in the other.
struct Leftover<'a> {
    words: [&'a str; MAX_UNMATCHED],
    used: [bool; MAX_UNMATCHED],
    len: usize,
}

impl<'a> Leftover<'a> {
    fn new() -> Leftover<'a> {
        Leftover {
            words: [""; MAX_UNMATCHED],
            used: [false; MAX_UNMATCHED],
            len: 0,
        }
    }

    fn push(&mut self, word: &'a str) {
        if let Some(slot) = self.words.get_mut(self.len) {
            *slot = word;
            self.len += 1;
        }
    }

    /// The words not yet matched, with their positions.
    fn free(&self) -> impl Iterator<Item = (usize, &'a str)> + '_ {
        self.words
            .iter()
            .zip(&self.used)
            .take(self.len)
            .enumerate()
            .filter(|(_, (_, used))| !**used)
            .map(|(i, (w, _))| (i, *w))
    }

    fn free_count(&self) -> usize {
        self.free().count()
    }

    fn take(&mut self, i: usize) {
        if let Some(u) = self.used.get_mut(i) {
            *u = true;
        }
    }
}

fn address_level(x: &NormalizedAddress, y: &NormalizedAddress) -> Level {
    let (hx, hy) = (x.token_hashes(), y.token_hashes());
    // Both sorted by hash: merge.
    let (mut i, mut j) = (0, 0);
    // Tokens of either side counted as in common (the numerator of Dice).
    let mut matched = 0usize;
    let (mut numbers_common, mut numbers_x, mut numbers_y) = (0usize, 0usize, 0usize);
    let (mut left_x, mut left_y) = (Leftover::new(), Leftover::new());
    let word = |a: &'_ NormalizedAddress, t: &TokenHash| -> Option<usize> {
        (!t.number
            && a.tokens
                .get(t.index as usize)
                .is_some_and(|w| !w.is_empty() && w.is_ascii()))
        .then_some(t.index as usize)
    };
    loop {
        let order = match (hx.get(i), hy.get(j)) {
            (Some(p), Some(q)) => p.hash.cmp(&q.hash),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Equal => {
                matched += 2;
                if hx.get(i).is_some_and(|t| t.number) {
                    numbers_common += 1;
                    numbers_x += 1;
                    numbers_y += 1;
                }
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                if let Some(t) = hx.get(i) {
                    if t.number {
                        numbers_x += 1;
                    } else if let Some(w) = word(x, t).and_then(|k| x.tokens.get(k)) {
                        left_x.push(w);
                    }
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                if let Some(t) = hy.get(j) {
                    if t.number {
                        numbers_y += 1;
                    } else if let Some(w) = word(y, t).and_then(|k| y.tokens.get(k)) {
                        left_y.push(w);
                    }
                }
                j += 1;
            }
        }
    }
    matched += typos(&mut left_x, &mut left_y);
    matched += joins(&mut left_x, &mut left_y);
    matched += joins(&mut left_y, &mut left_x);
    matched += two_and_two(&mut left_x, &mut left_y);
    #[allow(clippy::cast_precision_loss)]
    let dice = matched as f64 / (hx.len() + hy.len()).max(1) as f64;
    // At least 80 % of the house numbers in common (Dice), when both have some.
    let numbers_agree =
        numbers_x == 0 || numbers_y == 0 || 20 * numbers_common >= 8 * (numbers_x + numbers_y);
    if dice >= 0.8 && numbers_agree {
        Level::Exact
    } else if dice >= 0.45 {
        Level::Partial
    } else {
        Level::Disagree
    }
}

/// Words of five letters or more one typo apart (`warrumbul`/`warrumbmul`), each used once;
/// the tokens so matched on both sides.
fn typos(x: &mut Leftover<'_>, y: &mut Leftover<'_>) -> usize {
    let mut matched = 0;
    for xi in 0..x.len {
        let Some(&t) = x.words.get(xi) else { continue };
        if t.len() < 5 {
            continue;
        }
        let hit = y
            .free()
            .find(|(_, u)| u.len() >= 5 && within_one_edit(t, u))
            .map(|(k, _)| k);
        if let Some(k) = hit {
            y.take(k);
            x.take(xi);
            matched += 2;
        }
    }
    matched
}

/// `a` and `b` written together (`a` then `b`) in `buf`; `None` when too long.
fn joined<'b>(a: &str, b: &str, buf: &'b mut [u8; MAX_JOINED]) -> Option<&'b str> {
    let n = a.len() + b.len();
    let out = buf.get_mut(..n)?;
    let (head, tail) = out.split_at_mut(a.len());
    head.copy_from_slice(a.as_bytes());
    tail.copy_from_slice(b.as_bytes());
    std::str::from_utf8(out).ok()
}

/// Two words equal, or one typo apart when the shorter has five letters or more.
fn same_word(a: &str, b: &str) -> bool {
    a == b || (a.len().min(b.len()) >= 5 && within_one_edit(a, b))
}

/// A lost space: a free word of `one` that is two free words of `two` written together (in
/// either order: tokens are kept sorted, not in the order written), within one typo. The
/// tokens so matched (three per join).
fn joins(two: &mut Leftover<'_>, one: &mut Leftover<'_>) -> usize {
    let mut matched = 0;
    let mut buf = [0u8; MAX_JOINED];
    for oi in 0..one.len {
        if one.used.get(oi).copied().unwrap_or(true) {
            continue;
        }
        let Some(&w) = one.words.get(oi) else {
            continue;
        };
        // One typo falls in one of the two words: the other is then exactly the start or
        // the end of `w`. Without such a word (nearly always, for unrelated addresses) no
        // pair needs trying.
        let fits = |a: &str| a.len() < w.len() && (w.starts_with(a) || w.ends_with(a));
        if !two.free().any(|(_, a)| fits(a)) {
            continue;
        }
        let mut hit = None;
        'search: for (p, a) in two.free() {
            for (q, b) in two.free() {
                if p != q
                    && a.len() + b.len() + 1 >= w.len()
                    && a.len() + b.len() <= w.len() + 1
                    && (w.starts_with(a) || w.ends_with(b))
                    && joined(a, b, &mut buf).is_some_and(|ab| same_word(ab, w))
                {
                    hit = Some((p, q));
                    break 'search;
                }
            }
        }
        if let Some((p, q)) = hit {
            two.take(p);
            two.take(q);
            one.take(oi);
            matched += 3;
        }
    }
    matched
}

/// A moved space: two free words of each side that are the same letters written together
/// (`shenton park` / `shento mpark`), within one typo; the tokens so matched (four per
/// pair). Only with a few words left (quadratic in pairs).
fn two_and_two(x: &mut Leftover<'_>, y: &mut Leftover<'_>) -> usize {
    if x.free_count() > MAX_FOR_TWO_AND_TWO || y.free_count() > MAX_FOR_TWO_AND_TWO {
        return 0;
    }
    let mut matched = 0;
    let (mut bx, mut by) = ([0u8; MAX_JOINED], [0u8; MAX_JOINED]);
    // One typo leaves the first or the last three letters of the joined words equal.
    let ends_agree = |a: &str, b: &str, c: &str, d: &str| {
        let (ab, cd) = (a.len() + b.len(), c.len() + d.len());
        ab.abs_diff(cd) <= 1
            && ab.min(cd) >= 8
            && (a
                .bytes()
                .chain(b.bytes())
                .take(3)
                .eq(c.bytes().chain(d.bytes()).take(3))
                || b.bytes().rev().chain(a.bytes().rev()).take(3).eq(d
                    .bytes()
                    .rev()
                    .chain(c.bytes().rev())
                    .take(3)))
    };
    loop {
        let mut hit = None;
        'search: for (p, a) in x.free() {
            for (q, b) in x.free().filter(|(q, _)| *q != p) {
                for (r, c) in y.free() {
                    for (s, d) in y.free().filter(|(s, _)| *s != r) {
                        if !ends_agree(a, b, c, d) {
                            continue;
                        }
                        let (Some(ab), Some(cd)) = (joined(a, b, &mut bx), joined(c, d, &mut by))
                        else {
                            continue;
                        };
                        if same_word(ab, cd) {
                            hit = Some((p, q, r, s));
                            break 'search;
                        }
                    }
                }
            }
        }
        let Some((p, q, r, s)) = hit else {
            return matched;
        };
        x.take(p);
        x.take(q);
        y.take(r);
        y.take(s);
        matched += 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::demographics::{Demographics, PostalAddress};
    use crate::identity::normalize::normalize;

    fn level(a: &str, b: &str) -> Option<Level> {
        let p = |text: &str| {
            normalize(&Demographics {
                addresses: vec![PostalAddress {
                    text: text.into(),
                    postal_code: None,
                }],
                ..Demographics::default()
            })
        };
        compare_addresses(&p(a), &p(b))
    }

    #[test]
    fn a_lost_space_joins_two_words() {
        // FEBRL 4, rec-606: the house number differs, every word is there.
        assert_eq!(
            level(
                "7 cope place strawberry fields dover nsw",
                "7 copeplace strawberrmyfields dover nsw"
            ),
            Some(Level::Exact)
        );
        assert_eq!(
            level(
                "7 cope place strawberry fields dover nsw",
                "18 copeplace strawberrmyfields dover nsw"
            ),
            Some(Level::Partial)
        );
        // An added space: the other side joins.
        assert_eq!(
            level(
                "66 fidge street ashgrove farms salisbury vic",
                "66 fidge street ashgrov e farms salisbury vic"
            ),
            Some(Level::Exact)
        );
        assert_eq!(
            level(
                "41 disneycourt coonabarabran",
                "41 disney court coonabarabran"
            ),
            Some(Level::Exact)
        );
    }

    #[test]
    fn a_moved_space_matches_two_and_two_words() {
        assert_eq!(
            level(
                "95 leahy place crestfield shenton park",
                "95 leahy place crestfield shento mpark"
            ),
            Some(Level::Exact)
        );
    }

    #[test]
    fn words_that_only_join_into_something_else_do_not_count() {
        // `north` + `bridge` is not `northcote`; another street entirely.
        assert_eq!(
            level("12 north bridge road", "12 northcote avenue"),
            Some(Level::Disagree)
        );
        // Short words are joined exactly, never within a typo (`st` + `a` ≠ `sk`).
        assert!(!same_word("sta", "ska"));
        assert!(same_word("disneycourt", "disneycourt"));
        assert!(same_word("strawberryfields", "strawberrmyfields"));
    }

    #[test]
    fn joined_words_that_do_not_fit_are_not_joined() {
        let long = "x".repeat(40);
        let mut buf = [0u8; MAX_JOINED];
        assert_eq!(joined(&long, &long, &mut buf), None);
        assert_eq!(joined("cope", "place", &mut buf), Some("copeplace"));
    }
}
