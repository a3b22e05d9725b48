//! Progress bars of the long CLI operations (`intercom log replicate`, `intercom subnet
//! rebuild`): drawn on stderr only when it is a terminal, so pipes, files and tests see
//! nothing but the command's JSON output.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use intercom_log::SharedReplica;
use tokio::task::JoinHandle;

/// A bar labelled `what`, or `None` when stderr is not a terminal.
pub fn bar(what: &'static str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    Some(bar)
}

/// Shows a replica's download (blocks held of the log's length) until dropped.
pub struct ReplicaProgress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Drop for ReplicaProgress {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// Tracks `replica` on a terminal (10 updates a second); `None` when not on one.
pub fn track_replica(replica: &SharedReplica, what: &'static str) -> Option<ReplicaProgress> {
    let bar = bar(what)?;
    let replica = replica.clone();
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            let (length, held) = replica.with(|r| (r.log().length(), r.log().contiguous_length()));
            shown.set_length(length);
            shown.set_position(held);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some(ReplicaProgress { bar, task })
}
