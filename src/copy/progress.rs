//! Counting and showing what a copy run does: progress bars on a terminal, log lines
//! otherwise, and the numbers for the closing summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::manifest::Descriptor;
use crate::reference::Digest;
use crate::registry::RepoClient;

/// Counters of one run.
#[derive(Debug, Default)]
pub struct Stats {
    pub blobs_copied: AtomicU64,
    pub blobs_skipped: AtomicU64,
    pub blobs_mounted: AtomicU64,
    /// Bytes read from sources and verified.
    pub bytes: AtomicU64,
    pub manifests_pushed: AtomicU64,
}

impl Stats {
    pub fn copied(&self, blob: &Descriptor, to: &RepoClient) {
        self.blobs_copied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(blob = %blob.digest, size = blob.size, target = %to.repository(), "blob copied");
    }
    pub fn mounted(&self, blob: &Descriptor, to: &RepoClient) {
        self.blobs_mounted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(blob = %blob.digest, target = %to.repository(), "blob mounted");
    }
    pub fn skipped(&self) {
        self.blobs_skipped.fetch_add(1, Ordering::Relaxed);
    }
    pub fn read_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn manifest_pushed(&self) {
        self.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    }

    /// `blobs: 3 copied, 1 skipped, 0 mounted; 12.3 MB in 1.20 s (10.3 MB/s)`
    pub fn summary(&self, elapsed: Duration) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            bytes as f64 / secs / 1e6
        } else {
            0.0
        };
        format!(
            "blobs: {} copied, {} skipped, {} mounted; manifests pushed: {}; {:.1} MB in {:.2} s ({:.1} MB/s)",
            self.blobs_copied.load(Ordering::Relaxed),
            self.blobs_skipped.load(Ordering::Relaxed),
            self.blobs_mounted.load(Ordering::Relaxed),
            self.manifests_pushed.load(Ordering::Relaxed),
            bytes as f64 / 1e6,
            secs,
            rate
        )
    }
}

/// Where progress goes.
#[derive(Clone)]
pub enum Progress {
    /// Bars on a terminal: one per blob in flight and one for the total.
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
    },
    /// One log line per finished blob.
    Lines,
    /// Nothing (the service, `--quiet`).
    Silent,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn for_terminal(quiet: bool) -> Progress {
        if quiet {
            return Progress::Silent;
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress::Lines;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "total {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress::Bars { multi, total }
    }

    /// Start showing one blob transfer.
    pub fn blob(&self, digest: &Digest, size: u64) -> BlobBar {
        match self {
            Progress::Bars { multi, total } => {
                total.inc_length(size);
                let bar = multi.insert_before(total, ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(short(digest));
                BlobBar::Bar {
                    bar,
                    total: total.clone(),
                }
            }
            Progress::Lines => BlobBar::Line {
                digest: digest.clone(),
                size,
                seen: Arc::new(AtomicU64::new(0)),
            },
            Progress::Silent => BlobBar::Silent,
        }
    }

    /// Remove the bars before the summary is printed.
    pub fn clear(&self) {
        if let Progress::Bars { multi, total } = self {
            total.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

fn short(d: &Digest) -> String {
    let h = d.hex();
    h[..h.len().min(12)].to_owned()
}

/// One blob's share of the progress display.
pub enum BlobBar {
    Bar {
        bar: ProgressBar,
        total: ProgressBar,
    },
    Line {
        digest: Digest,
        size: u64,
        seen: Arc<AtomicU64>,
    },
    Silent,
}

impl BlobBar {
    pub fn inc(&self, n: u64) {
        match self {
            BlobBar::Bar { bar, total } => {
                bar.inc(n);
                total.inc(n);
            }
            BlobBar::Line { seen, .. } => {
                seen.fetch_add(n, Ordering::Relaxed);
            }
            BlobBar::Silent => {}
        }
    }

    pub fn finish(&self) {
        match self {
            BlobBar::Bar { bar, .. } => bar.finish_and_clear(),
            BlobBar::Line { digest, size, seen } => {
                let got = seen.load(Ordering::Relaxed);
                if got == *size {
                    tracing::info!("blob {digest}: {size} bytes streamed");
                } else {
                    tracing::info!("blob {digest}: stopped after {got} of {size} bytes");
                }
            }
            BlobBar::Silent => {}
        }
    }
}
