//! Progress of long offline commands (dataset builds, backfills): an indicatif bar on a
//! terminal, plain lines (at most one per quarter of the work) otherwise, so logs stay readable.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

/// Counts units of work (archive files read) towards a known total.
#[derive(Clone)]
pub struct Progress {
    what: String,
    total: u64,
    done: Arc<AtomicU64>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress report of `total` units of `what` (e.g. "archive files").
    pub fn new(what: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_message(what.to_owned());
            bar
        });
        Progress {
            what: what.to_owned(),
            total,
            done: Arc::new(AtomicU64::new(0)),
            bar,
        }
    }

    /// One more unit done.
    pub fn inc(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => {
                let step = self.total.div_ceil(4).max(1);
                if done.is_multiple_of(step) || done == self.total {
                    eprintln!("{}: {done}/{}", self.what, self.total);
                }
            }
        }
    }

    /// Ends the bar (plain mode prints nothing more).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
