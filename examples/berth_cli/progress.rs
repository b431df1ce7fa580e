//! Renders the library's progress callbacks as indicatif bars: one bar per blob while it
//! moves, finished bars cleared, and a one-line summary per blob kept in the scrollback.
//! Bars draw to stderr and hide themselves when stderr is not a terminal.

use std::collections::HashMap;
use std::sync::Mutex;

use berth::image::progress::{Progress, ProgressEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Below this size a blob gets no bar of its own, only its summary line.
const BAR_MIN: u64 = 256 * 1024;

/// An indicatif renderer for [`Progress`].
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    style: ProgressStyle,
    quiet: bool,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl Bars {
    /// A renderer; `quiet` prints nothing at all.
    pub fn new(quiet: bool) -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:>8} {msg:20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            style,
            quiet,
        }
    }
}

fn short(item: &str) -> String {
    match item.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => item.to_owned(),
    }
}

impl Progress for Bars {
    fn on_progress(&self, e: &ProgressEvent<'_>) {
        if self.quiet {
            return;
        }
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        if e.finished {
            if let Some(bar) = bars.remove(e.item) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
            let _ = self.multi.println(format!(
                "{:>8} {} {} bytes done",
                e.kind,
                short(e.item),
                e.done
            ));
            return;
        }
        let total = e.total.unwrap_or(0);
        if total < BAR_MIN {
            return;
        }
        let bar = bars.entry(e.item.to_owned()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(self.style.clone());
            bar.set_prefix(e.kind.to_owned());
            bar.set_message(short(e.item));
            bar
        });
        bar.set_position(e.done);
    }
}
