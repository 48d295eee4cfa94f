//! Getting one blob into the target repositories that lack it, as cheaply as the registries
//! allow: skip what is there, mount what the same registry already holds, and otherwise read
//! the source once and stream it into every target that needs it, verifying size and digest on
//! the way.
//!
//! Within one run a blob is uploaded at most once per target registry: the first repository to
//! need it there claims it and uploads; every other repository on that registry waits for the
//! claim and mounts from it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc, watch};

use super::progress::{Progress, Stats};
use crate::manifest::Descriptor;
use crate::reference::Digest;
use crate::registry::error::RegistryError;
use crate::registry::{Mount, RepoClient};

/// Chunks buffered per target between the source reader and an upload. With the chunk held
/// back for verification, the reader runs two chunks ahead of the writer: enough to keep both
/// sockets busy (measured: same throughput as deeper queues), and memory stays bounded
/// whatever the blob size. A chunk is what one socket read returned: up to ~400 KiB once
/// hyper's adaptive buffer has grown.
const CHANNEL_DEPTH: usize = 1;
/// Blobs at least this big stream under [`LARGE_STREAMS`] as well as `--jobs`: from about
/// 1 MiB on, a stream's socket reads fill hyper's buffer and it grows to its ~400 KiB cap.
pub const LARGE_BLOB: u64 = 1 << 20;
/// Large blobs streamed at once. One stream already fills a registry's upload path (measured:
/// ~300 MB/s per stream against a local registry), while each stream in flight holds a few
/// hundred KiB of socket-read buffers; more parallel big streams only add memory. Small blobs
/// are latency-bound and keep the full `--jobs` concurrency.
pub const LARGE_STREAMS: usize = 2;

/// What happened to a blob for one target repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobAction {
    /// The target already had it.
    Skipped,
    /// The registry mounted it from another repository.
    Mounted,
    /// Its bytes were streamed from the source.
    Copied,
}

enum Slot {
    /// A repository on this host is uploading it now; `done` turns `Some(ok)` when finished.
    Uploading {
        holder: String,
        done: watch::Receiver<Option<bool>>,
    },
    /// Repositories on this host known to hold it.
    Present(HashSet<String>),
}

/// Which blobs each target registry holds, or is receiving, in this run.
#[derive(Default)]
pub struct BlobTracker {
    slots: Mutex<HashMap<(String, Digest), Slot>>,
}

enum Plan {
    Skip,
    MountFrom(String),
    Wait {
        holder: String,
        done: watch::Receiver<Option<bool>>,
    },
    /// We claimed the upload for this host: tell waiters how it went.
    Claimed(watch::Sender<Option<bool>>),
    /// Same registry as the source: mount from the source repository.
    MountFromSource,
}

impl BlobTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Digest), Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known_present(&self, host: &str, repo: &str, digest: &Digest) -> bool {
        matches!(self.lock().get(&(host.to_owned(), digest.clone())), Some(Slot::Present(r)) if r.contains(repo))
    }

    fn mark_present(&self, host: &str, repo: &str, digest: &Digest) {
        let mut slots = self.lock();
        let key = (host.to_owned(), digest.clone());
        match slots.get_mut(&key) {
            Some(Slot::Present(repos)) => {
                repos.insert(repo.to_owned());
            }
            // An upload in flight elsewhere keeps its slot: its waiters need its outcome.
            Some(Slot::Uploading { .. }) => {}
            None => {
                slots.insert(key, Slot::Present(HashSet::from([repo.to_owned()])));
            }
        }
    }

    /// After a claimed upload: record the outcome, or free the claim so another may try.
    fn settle(&self, host: &str, repo: &str, digest: &Digest, ok: bool) {
        let mut slots = self.lock();
        let key = (host.to_owned(), digest.clone());
        if ok {
            slots.insert(key, Slot::Present(HashSet::from([repo.to_owned()])));
        } else if matches!(slots.get(&key), Some(Slot::Uploading { holder, .. }) if holder == repo)
        {
            slots.remove(&key);
        }
    }

    /// Decide, atomically per host, how `target` gets the blob.
    fn plan(&self, source: &RepoClient, target: &RepoClient, digest: &Digest) -> Plan {
        if target.registry() == source.registry() {
            return Plan::MountFromSource;
        }
        let mut slots = self.lock();
        let key = (target.registry().to_owned(), digest.clone());
        match slots.get(&key) {
            Some(Slot::Present(repos)) => match repos.iter().next() {
                Some(_) if repos.contains(target.path()) => Plan::Skip,
                Some(from) => Plan::MountFrom(from.clone()),
                None => Plan::Skip,
            },
            Some(Slot::Uploading { holder, done })
                if done.has_changed().is_ok() && done.borrow().is_none() =>
            {
                Plan::Wait {
                    holder: holder.clone(),
                    done: done.clone(),
                }
            }
            _ => {
                let (tx, rx) = watch::channel(None);
                slots.insert(
                    key,
                    Slot::Uploading {
                        holder: target.path().to_owned(),
                        done: rx,
                    },
                );
                Plan::Claimed(tx)
            }
        }
    }
}

/// Everything a blob transfer needs from the run it belongs to.
#[derive(Clone)]
pub struct BlobContext {
    pub tracker: Arc<BlobTracker>,
    pub jobs: Arc<Semaphore>,
    /// Bounds large streams: see [`LARGE_STREAMS`].
    pub large: Arc<Semaphore>,
    pub stats: Arc<Stats>,
    pub progress: Progress,
}

/// A target waiting for the source stream: where to upload, and the session a 202 mount
/// answer may already have opened.
struct Sink {
    index: usize,
    target: RepoClient,
    session: Option<String>,
    claim: Option<watch::Sender<Option<bool>>>,
}

/// Bring `blob` into every repository of `targets`. One result per target, in order.
pub async fn ensure_blob(
    ctx: &BlobContext,
    source: &RepoClient,
    blob: &Descriptor,
    targets: &[RepoClient],
) -> Vec<Result<BlobAction, RegistryError>> {
    let mut results: Vec<Option<Result<BlobAction, RegistryError>>> = vec![None; targets.len()];
    let mut waiters = Vec::new();
    {
        let Ok(_permit) = ctx.jobs.acquire().await else {
            return filled(results, targets, &blob.digest);
        };
        // Phase 1: what each target needs, asked concurrently.
        let checks = futures_util::future::join_all(targets.iter().map(|t| async move {
            if ctx
                .tracker
                .known_present(t.registry(), t.path(), &blob.digest)
            {
                return Ok(true);
            }
            t.blob_exists(&blob.digest).await
        }))
        .await;
        let mut sinks = Vec::new();
        let mut mounts = Vec::new();
        for (i, (t, exists)) in targets.iter().zip(checks).enumerate() {
            match exists {
                Err(e) => results[i] = Some(Err(e)),
                Ok(true) => {
                    ctx.tracker
                        .mark_present(t.registry(), t.path(), &blob.digest);
                    results[i] = Some(Ok(BlobAction::Skipped));
                }
                Ok(false) => match ctx.tracker.plan(source, t, &blob.digest) {
                    Plan::Skip => results[i] = Some(Ok(BlobAction::Skipped)),
                    Plan::MountFrom(from) => mounts.push((i, from)),
                    Plan::MountFromSource => mounts.push((i, source.path().to_owned())),
                    Plan::Wait { holder, done } => waiters.push((i, holder, done)),
                    Plan::Claimed(tx) => sinks.push(Sink {
                        index: i,
                        target: t.clone(),
                        session: None,
                        claim: Some(tx),
                    }),
                },
            }
        }
        // Phase 2: mounts, then one source read for everything that must be streamed.
        for (i, from) in mounts {
            let t = &targets[i];
            match t.mount_blob(&blob.digest, &from).await {
                Ok(Mount::Mounted) => {
                    ctx.tracker
                        .mark_present(t.registry(), t.path(), &blob.digest);
                    ctx.stats.mounted(blob, t);
                    results[i] = Some(Ok(BlobAction::Mounted));
                }
                // 202: the registry declined to mount (another project, no access to `from`)
                // and opened an upload instead; use it rather than leave it dangling.
                Ok(Mount::Upload(session)) => sinks.push(Sink {
                    index: i,
                    target: t.clone(),
                    session: Some(session),
                    claim: None,
                }),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !sinks.is_empty() {
            for (i, r) in stream_with_retries(ctx, source, blob, sinks).await {
                results[i] = Some(r);
            }
        }
    }
    // Phase 3: repositories that waited for another repository's upload on their registry.
    for (i, holder, mut done) in waiters {
        let t = &targets[i];
        let ok = matches!(
            done.wait_for(|v| v.is_some()).await.map(|v| *v),
            Ok(Some(true))
        );
        let Ok(_permit) = ctx.jobs.acquire().await else {
            break;
        };
        results[i] = Some(if ok && holder == t.path() {
            Ok(BlobAction::Skipped)
        } else if ok {
            match t.mount_blob(&blob.digest, &holder).await {
                Ok(Mount::Mounted) => {
                    ctx.tracker
                        .mark_present(t.registry(), t.path(), &blob.digest);
                    ctx.stats.mounted(blob, t);
                    Ok(BlobAction::Mounted)
                }
                Ok(Mount::Upload(session)) => single(ctx, source, blob, t, Some(session)).await,
                Err(e) => Err(e),
            }
        } else {
            single(ctx, source, blob, t, None).await
        });
    }
    filled(results, targets, &blob.digest)
}

/// One result per target from slots the phases above fill. A slot nothing filled is a
/// bookkeeping slip of the engine: it surfaces as an error, never as a blob in place.
fn filled<T>(
    slots: Vec<Option<Result<T, RegistryError>>>,
    targets: &[RepoClient],
    digest: &Digest,
) -> Vec<Result<T, RegistryError>> {
    slots
        .into_iter()
        .zip(targets)
        .map(|(r, t)| r.unwrap_or_else(|| Err(unrecorded(t, digest))))
        .collect()
}

fn unrecorded(target: &RepoClient, digest: &Digest) -> RegistryError {
    RegistryError::Internal {
        op: target.op("PUT", format!("blob {digest}")),
        detail: "no result was recorded for this target".into(),
    }
}

async fn single(
    ctx: &BlobContext,
    source: &RepoClient,
    blob: &Descriptor,
    target: &RepoClient,
    session: Option<String>,
) -> Result<BlobAction, RegistryError> {
    let sink = Sink {
        index: 0,
        target: target.clone(),
        session,
        claim: None,
    };
    let mut out = stream_with_retries(ctx, source, blob, vec![sink]).await;
    out.pop()
        .map(|(_, r)| r)
        .unwrap_or_else(|| Err(unrecorded(target, &blob.digest)))
}

/// Stream the blob into every sink, retrying the whole transfer (a fresh source GET and fresh
/// upload sessions) for the sinks that failed in a way a retry can fix.
async fn stream_with_retries(
    ctx: &BlobContext,
    source: &RepoClient,
    blob: &Descriptor,
    sinks: Vec<Sink>,
) -> Vec<(usize, Result<BlobAction, RegistryError>)> {
    let _large = if blob.size >= LARGE_BLOB {
        ctx.large.acquire().await.ok()
    } else {
        None
    };
    let done: Mutex<Vec<(usize, Result<BlobAction, RegistryError>)>> = Mutex::new(Vec::new());
    let pending = Mutex::new(sinks);
    // Bytes that fail their digest once may have been damaged on the way (a flipped bit past
    // TCP's weak checksum, a proxy's bug): the source gets one more read before the blob is
    // called corrupt. A second mismatch is the source's content, and final.
    let reread = std::sync::atomic::AtomicBool::new(false);
    let outcome = source
        .retrying(|_| async {
            let sinks: Vec<Sink> =
                std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
            let results = stream_once(ctx, source, blob, &sinks).await;
            let mut retry_err = None;
            let mut again = Vec::new();
            let mut reading_again = false;
            for (mut sink, r) in sinks.into_iter().zip(results) {
                let damaged = matches!(&r, Err(RegistryError::Content { op, .. }) if op.method == "GET");
                match r {
                    Err(e) if damaged && !reread.load(Ordering::Relaxed) => {
                        tracing::warn!(error = %e, "source bytes failed verification: reading them again");
                        retry_err.get_or_insert(RegistryError::Transport {
                            op: e.op().clone(),
                            detail: format!("reading again after a damaged read ({e})"),
                        });
                        sink.session = None;
                        again.push(sink);
                        reading_again = true;
                    }
                    Err(e) if e.is_retryable() => {
                        retry_err.get_or_insert(e);
                        // The old session is gone with the failed attempt.
                        sink.session = None;
                        again.push(sink);
                    }
                    r => finish_sink(ctx, blob, sink, r.map(|()| BlobAction::Copied), &done),
                }
            }
            if reading_again {
                reread.store(true, Ordering::Relaxed);
            }
            *pending.lock().unwrap_or_else(|p| p.into_inner()) = again;
            match retry_err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
        .await;
    if let Err(e) = outcome {
        for sink in std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner())) {
            finish_sink(ctx, blob, sink, Err(e.clone()), &done);
        }
    }
    done.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn finish_sink(
    ctx: &BlobContext,
    blob: &Descriptor,
    sink: Sink,
    r: Result<BlobAction, RegistryError>,
    done: &Mutex<Vec<(usize, Result<BlobAction, RegistryError>)>>,
) {
    let t = &sink.target;
    let ok = r.is_ok();
    if sink.claim.is_some() {
        ctx.tracker.settle(t.registry(), t.path(), &blob.digest, ok);
    } else if ok {
        ctx.tracker
            .mark_present(t.registry(), t.path(), &blob.digest);
    }
    if let Some(tx) = sink.claim {
        let _ = tx.send(Some(ok));
    }
    if matches!(r, Ok(BlobAction::Copied)) {
        ctx.stats.copied(blob, t);
    }
    done.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((sink.index, r));
}

/// One attempt: open (or reuse) an upload session per sink, GET the source once, and feed
/// every upload from that one stream. The last chunk is held back until size and digest are
/// verified, so a registry never receives a complete body for bad content: on a mismatch the
/// uploads are aborted mid-body and their sessions deleted.
async fn stream_once(
    ctx: &BlobContext,
    source: &RepoClient,
    blob: &Descriptor,
    sinks: &[Sink],
) -> Vec<Result<(), RegistryError>> {
    let digest = &blob.digest;
    let mut results: Vec<Option<Result<(), RegistryError>>> = vec![None; sinks.len()];
    let mut sessions: Vec<Option<String>> = Vec::with_capacity(sinks.len());
    for (i, s) in sinks.iter().enumerate() {
        match &s.session {
            Some(sess) => sessions.push(Some(sess.clone())),
            None => match s.target.start_upload(digest).await {
                Ok(sess) => sessions.push(Some(sess)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    sessions.push(None);
                }
            },
        }
    }
    let cancel_all = |sessions: Vec<Option<String>>| async move {
        for (s, sess) in sinks.iter().zip(sessions) {
            if let Some(sess) = sess {
                s.target.cancel_upload(&sess).await;
            }
        }
    };
    let targets: Vec<RepoClient> = sinks.iter().map(|s| s.target.clone()).collect();
    if sessions.iter().all(Option::is_none) {
        return filled(results, &targets, digest);
    }
    let resp = match source.open_blob(digest).await {
        Ok(r) => r,
        Err(e) => {
            cancel_all(sessions).await;
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(e.clone())))
                .collect();
        }
    };
    let src_op = source.op("GET", format!("blob {digest}"));
    if let Some(n) = resp.content_length()
        && n != blob.size
    {
        cancel_all(sessions).await;
        let e = RegistryError::Content {
            op: src_op,
            detail: format!("source sends {n} bytes, descriptor says {}", blob.size),
        };
        return results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(e.clone())))
            .collect();
    }

    // One upload task per sink, fed by a bounded channel.
    let mut feeds: Vec<Option<mpsc::Sender<Result<Bytes, std::io::Error>>>> = Vec::new();
    let mut uploads = Vec::new();
    for (s, sess) in sinks.iter().zip(&sessions) {
        match sess {
            Some(sess) => {
                let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
                let body =
                    reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
                        rx.recv().await.map(|item| (item, rx))
                    }));
                let target = s.target.clone();
                let sess = sess.clone();
                let d = digest.clone();
                let size = blob.size;
                uploads.push(Some(tokio::spawn(async move {
                    let r = target.put_upload(&sess, &d, size, body).await;
                    if r.is_err() {
                        target.cancel_upload(&sess).await;
                    }
                    r
                })));
                feeds.push(Some(tx));
            }
            None => {
                uploads.push(None);
                feeds.push(None);
            }
        }
    }

    let bar = ctx.progress.blob(digest, blob.size);
    let mut hasher = digest.hasher();
    let mut read: u64 = 0;
    let mut held: Option<Bytes> = None;
    let mut source_err: Option<RegistryError> = None;
    let mut stream = resp.bytes_stream();
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                source_err = Some(crate::registry::transport(&src_op, &e));
                break;
            }
        };
        read += chunk.len() as u64;
        if read > blob.size {
            source_err = Some(RegistryError::Content {
                op: src_op.clone(),
                detail: format!("more than the {} bytes the descriptor says", blob.size),
            });
            break;
        }
        hasher.update(&chunk);
        bar.inc(chunk.len() as u64);
        if let Some(prev) = held.replace(chunk)
            && !feed(&mut feeds, prev).await
        {
            break; // every upload has failed: stop reading
        }
    }
    drop(stream);
    if source_err.is_none() && feeds.iter().any(Option::is_some) {
        if read != blob.size {
            source_err = Some(RegistryError::Content {
                op: src_op.clone(),
                detail: format!("source sent {read} bytes, descriptor says {}", blob.size),
            });
        } else {
            let got = std::mem::replace(&mut hasher, digest.hasher()).finish();
            if &got != digest {
                source_err = Some(RegistryError::Content {
                    op: src_op.clone(),
                    detail: format!("bytes hash to {got}"),
                });
            }
        }
    }
    match &source_err {
        None => {
            if let Some(last) = held {
                feed(&mut feeds, last).await;
            }
        }
        Some(_) => {
            for tx in feeds.iter().flatten() {
                let _ = tx
                    .send(Err(std::io::Error::other(
                        "source blob failed verification",
                    )))
                    .await;
            }
        }
    }
    drop(feeds);
    bar.finish();
    ctx.stats
        .read_bytes(if source_err.is_none() { read } else { 0 });

    for (i, up) in uploads.into_iter().enumerate() {
        let Some(up) = up else { continue };
        let r = match up.await {
            Ok(r) => r,
            Err(join) => Err(RegistryError::Transport {
                op: sinks[i].target.op("PUT", format!("blob {digest}")),
                detail: format!("upload task failed: {join}"),
            }),
        };
        results[i] = Some(match (&source_err, r) {
            (Some(e), _) => Err(e.clone()),
            (None, r) => r,
        });
    }
    filled(results, &targets, digest)
}

/// Send a chunk to every live upload; an upload whose receiver is gone has failed and is
/// dropped. Returns whether any upload is still live.
async fn feed(
    feeds: &mut [Option<mpsc::Sender<Result<Bytes, std::io::Error>>>],
    chunk: Bytes,
) -> bool {
    let mut live = false;
    for slot in feeds.iter_mut() {
        if let Some(tx) = slot {
            if tx.send(Ok(chunk.clone())).await.is_err() {
                *slot = None;
            } else {
                live = true;
            }
        }
    }
    live
}
