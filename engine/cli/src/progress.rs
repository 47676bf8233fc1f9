//! Progress of long commands on stderr (`keys rotate`, `export`, reprocessing a selection).
//! Drawn only when stderr is a terminal: in a file, a pipe or journald nothing is drawn, and the
//! commands print their one-line summaries as before.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar of `total` steps: `what`, the bar, position/total, a message, the time left.
pub fn bar(total: u64, what: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), target());
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.into());
    pb
}

/// A count of what is done, with no total known: `what`, a spinner, the count, the rate.
pub fn counter(what: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix}: {pos} ({elapsed}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_prefix(what.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A spinner for one long step whose progress cannot be counted (a single transaction).
pub fn spinner(what: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(what.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness's stderr is captured (not a terminal): nothing is drawn, and the bars
    /// still count.
    #[test]
    fn off_a_terminal_the_bars_are_hidden_and_still_count() {
        let pb = bar(10, "t");
        pb.inc(3);
        assert_eq!(pb.position(), 3);
        if !std::io::stderr().is_terminal() {
            assert!(pb.is_hidden());
        }
        pb.finish_and_clear();
        let c = counter("c");
        c.inc(2);
        assert_eq!(c.position(), 2);
        c.finish_and_clear();
    }
}
