// Every test binary does `mod common;` and compiles its own copy of this
// module, but each binary uses a different subset of it. Without these
// allows, `cargo clippy --all-targets -- -D warnings` would fail on every
// helper (or re-export) that one particular binary happens not to use.
#![allow(dead_code, unused_imports)]

//! Shared integration-test harness for `image-relay`.
//!
//! Pieces:
//! - [`registry`]: a real `docker-registry` (CNCF distribution 2.8) process on a
//!   free 127.0.0.1 port with temp filesystem storage, optionally behind
//!   htpasswd basic auth; it can be stopped and restarted on the same port.
//! - [`proxy`]: a streaming loopback reverse proxy that records requests and
//!   injects faults (429, 503, corrupt bytes, refused writes, redirects,
//!   refused chunked uploads).
//! - [`seed`]: pushes blobs/manifests with plain reqwest, reads them back,
//!   and wraps `skopeo inspect --raw` as an independent oracle.
//! - [`images`]: deterministic content and manifest builders (Docker v2 s2,
//!   OCI, indexes, manifest lists, cosign signatures, OCI 1.1 artifacts).
//!
//! - [`tls`]: a throwaway CA and server certificates for TLS registries.
//! - [`google`]: the only fakes: the Google APIs (metadata server, IAM Credentials,
//!   Container Analysis, the push-token JWKS), on one loopback port; [`tokens`] signs push
//!   tokens with the key that JWKS lists.
//! - [`service`]: the real `image-relay serve` binary as a subprocess, and deliveries shaped
//!   as Google sends them; [`app`]: the same router in process, for tests about one request
//!   that need no process (no signal, no reload); [`logs`] captures its log events.
//! - [`wait`]: poll a condition with a deadline instead of sleeping.
//!
//! Everything listens on 127.0.0.1 only.
//!
//! Speed note: test builds are unoptimized, and an unoptimized `sha2`
//! hashes ~30 MB/s (300 MB: ~10 s, for the harness and the relay alike).
//! `[profile.dev.package.sha2] opt-level = 3` in Cargo.toml brings that to
//! ~1.7 GB/s. `seed::stream_blob_digest` also caches digests per process.

pub mod app;
pub mod cosign;
pub mod google;
pub mod images;
pub mod logs;
pub mod proxy;
pub mod registry;
pub mod seed;
pub mod service;
pub mod tls;
pub mod tokens;
pub mod wait;

pub use images::*;
pub use proxy::{Fault, Injected, Matcher, Proxy, RecordedRequest};
pub use registry::Registry;
pub use seed::{RawManifest, SeedError, Seeder, skopeo_inspect_raw};

use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::time::Duration;

/// `sha256:<hex>` of `bytes`, the digest form registries use.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Run a test body with a deadline so a hung registry/proxy/relay fails the
/// test with a message instead of hanging CI until its global timeout.
pub async fn with_timeout<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("test body did not finish within {secs}s"))
}

/// The value of `series` (a metric's name and labels, exactly as `/metrics` exposes them) in a
/// scrape; `None` when the scrape does not list it.
pub fn counter(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}
