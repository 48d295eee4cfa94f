//! The copy engine: from a source image to target repositories, the job `gcrane cp` does.
//!
//! For each request: resolve the source digest; skip targets whose tag already resolves to it;
//! read the manifest tree (index, children, referrers); bring every blob into every target
//! ([`blobs`]); then push child manifests by digest and the root last, once, under its tag, so
//! a tag never points at content a target does not fully hold.

pub mod blobs;
pub mod progress;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::future::{BoxFuture, join_all};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;

use crate::manifest::{Contents, Descriptor, Manifest, PlatformFilter};
use crate::reference::{Digest, ManifestRef, Reference, Tag};
use crate::registry::error::RegistryError;
use crate::registry::settings::ConfigError;
use crate::registry::{Registries, RepoClient};
use blobs::{BlobAction, BlobContext, BlobTracker, ensure_blob};
use progress::{Progress, Stats};

/// Index nesting deeper than this is refused: real images nest one level, and a bound keeps a
/// malicious registry from leading the relay in circles.
const MAX_DEPTH: usize = 4;
/// Cosign stores signatures, attestations and SBOMs under tags derived from the subject digest.
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Concurrent blob transfers (and image copies) at most.
    pub jobs: usize,
    /// Copy only these platforms of an index (the index is re-encoded: new digest).
    pub platforms: Vec<PlatformFilter>,
    /// Also copy referrers (OCI 1.1 and cosign-style tags) of every copied manifest.
    pub referrers: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: 8,
            platforms: Vec::new(),
            referrers: false,
        }
    }
}

/// One source image and the targets it goes to.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub source: Reference,
    pub targets: Vec<Reference>,
    /// Write a target's tag only if the source tag still resolves to the copied digest when
    /// the content is in place (re-read then). At-least-once, unordered deliveries then
    /// converge on the source's current state and never move a tag backwards.
    pub guard_tag: bool,
}

impl CopyRequest {
    /// A plain copy: the tag is written unconditionally.
    pub fn new(source: Reference, targets: Vec<Reference>) -> Self {
        CopyRequest {
            source,
            targets,
            guard_tag: false,
        }
    }
}

/// Why a copy to one target failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("registry settings: {0}")]
    Config(String),
    #[error("source {0} does not exist")]
    SourceNotFound(Reference),
    #[error("{target}: pinned digest differs from the source's {source_digest}")]
    DigestMismatch {
        target: Reference,
        source_digest: Digest,
    },
    #[error("source {source_ref}: {reason}")]
    Source {
        source_ref: Reference,
        reason: String,
    },
    /// The engine lost track of a target's result: a bug, reported as one instead of being
    /// taken for success.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ConfigError> for CopyError {
    fn from(e: ConfigError) -> Self {
        CopyError::Config(e.to_string())
    }
}

impl CopyError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CopyError::Registry(e) if e.is_retryable())
    }
}

/// What happened at one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetOutcome {
    /// Content and tag were written.
    Copied,
    /// The target already resolved to the source digest: nothing was written.
    AlreadyPresent,
    /// The content was copied but the tag was left alone: the source tag has moved on since
    /// (to `now`, or was deleted). A later event for the newer digest sets it.
    TagSuperseded { now: Option<Digest> },
}

/// The result of one [`CopyRequest`].
#[derive(Debug)]
pub struct CopyReport {
    pub source: Reference,
    /// The digest copied (after `--platform` filtering, when it applied).
    pub digest: Option<Digest>,
    /// Set when `--platform` dropped children: the index digest differs from the source's.
    pub filtered_from: Option<Digest>,
    pub targets: Vec<(Reference, Result<TargetOutcome, CopyError>)>,
}

impl CopyReport {
    pub fn ok(&self) -> bool {
        self.targets.iter().all(|(_, r)| r.is_ok())
    }
}

/// A manifest and, for an index, its children.
#[derive(Debug)]
struct Node {
    manifest: Manifest,
    children: Vec<Node>,
}

impl Node {
    /// Every manifest below and including this one, children before parents.
    fn post_order<'a>(&'a self, out: &mut Vec<&'a Manifest>) {
        for c in &self.children {
            c.post_order(out);
        }
        out.push(&self.manifest);
    }

    fn blobs<'a>(&'a self, out: &mut Vec<&'a Descriptor>) {
        match &self.manifest.contents {
            Contents::Image { blobs } => out.extend(blobs),
            Contents::Index { .. } => self.children.iter().for_each(|c| c.blobs(out)),
        }
    }
}

/// A target's client and what its manifest HEAD answered.
type TargetHead = (RepoClient, Option<crate::registry::ManifestHead>);

/// A manifest that refers to a copied one, and the tag it lives under, if any.
#[derive(Debug)]
struct Referrer {
    node: Node,
    tag: Option<Tag>,
}

/// The copy engine: shared registries, a bound on concurrent transfers, and what this run has
/// already put where.
pub struct Engine {
    registries: Arc<Registries>,
    opts: CopyOptions,
    blob_ctx: BlobContext,
}

impl Engine {
    pub fn new(registries: Arc<Registries>, opts: CopyOptions, progress: Progress) -> Self {
        let blob_ctx = BlobContext {
            tracker: Arc::new(BlobTracker::default()),
            jobs: Arc::new(Semaphore::new(opts.jobs.max(1))),
            large: Arc::new(Semaphore::new(blobs::LARGE_STREAMS)),
            stats: Arc::new(Stats::default()),
            progress,
        };
        Engine {
            registries,
            opts,
            blob_ctx,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.blob_ctx.stats
    }

    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// Copy many requests concurrently, sharing blob deduplication and mounts across them.
    pub async fn copy_all(&self, requests: Vec<CopyRequest>) -> Vec<CopyReport> {
        futures_util::stream::iter(requests.into_iter().map(|r| self.copy(r)))
            .buffered(self.opts.jobs.max(1))
            .collect()
            .await
    }

    /// Copy one source image to its targets. Never fails as a whole: each target has its result.
    pub async fn copy(&self, req: CopyRequest) -> CopyReport {
        let mut report = CopyReport {
            source: req.source.clone(),
            digest: None,
            filtered_from: None,
            targets: Vec::new(),
        };
        let fail_all = |report: &mut CopyReport, e: CopyError| {
            report.targets = req
                .targets
                .iter()
                .map(|t| (t.clone(), Err(e.clone())))
                .collect();
        };
        let source = match self.registries.repo(&req.source.repo) {
            Ok(s) => s,
            Err(e) => {
                fail_all(&mut report, e.into());
                return report;
            }
        };
        // The targets' tags are asked about while the source is: one round trip, not two.
        let src_ref = &req.source;
        let early_heads = join_all(req.targets.iter().map(|t| async move {
            match target_tag(src_ref, t) {
                Some(_) => Some(self.head_target(src_ref, t, None).await),
                None => None,
            }
        }));
        let (resolved, early) =
            futures_util::future::join(self.resolve_source(&source, &req.source), early_heads)
                .await;
        let (digest, mut root) = match resolved {
            Ok(v) => v,
            Err(e) => {
                fail_all(&mut report, e);
                return report;
            }
        };
        let mut digest = digest;
        if !self.opts.platforms.is_empty() {
            match self
                .filtered_root(&source, &req.source, &digest, root.take())
                .await
            {
                Ok(Some(m)) => {
                    tracing::warn!(
                        source = %req.source,
                        "--platform keeps {} of the index: the copied index has digest {} instead of the source's {}",
                        platforms_text(&self.opts.platforms), m.digest, digest
                    );
                    report.filtered_from = Some(digest.clone());
                    digest = m.digest.clone();
                    root = Some(m);
                }
                Ok(None) => {}
                Err(e) => {
                    fail_all(&mut report, e);
                    return report;
                }
            }
        }
        report.digest = Some(digest.clone());

        // Which targets lack the image: one manifest HEAD each.
        let checks = join_all(
            req.targets
                .iter()
                .zip(early)
                .map(|(t, early)| self.check_target(&req.source, t, &digest, early)),
        )
        .await;
        let mut pending = Vec::new();
        let mut results: Vec<Option<Result<TargetOutcome, CopyError>>> =
            vec![None; req.targets.len()];
        for (i, c) in checks.into_iter().enumerate() {
            match c {
                Ok(Some(client)) => pending.push((i, client)),
                Ok(None) => results[i] = Some(Ok(TargetOutcome::AlreadyPresent)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !pending.is_empty() {
            match self
                .read_tree(&source, &digest, root, report.filtered_from.is_some())
                .await
            {
                Err(e) => {
                    for (i, _) in &pending {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
                Ok((node, referrers)) => {
                    let targets: Vec<RepoClient> = pending.iter().map(|(_, c)| c.clone()).collect();
                    let source_digest = report
                        .filtered_from
                        .clone()
                        .unwrap_or_else(|| digest.clone());
                    let outcomes = self
                        .write_targets(
                            &source,
                            &source_digest,
                            &node,
                            &referrers,
                            &req,
                            &pending,
                            &targets,
                        )
                        .await;
                    for ((i, _), r) in pending.iter().zip(outcomes) {
                        results[*i] = Some(r);
                    }
                }
            }
        }
        report.targets = req
            .targets
            .iter()
            .cloned()
            .zip(results.into_iter().map(|r| {
                r.unwrap_or_else(|| Err(CopyError::Internal("no result for this target".into())))
            }))
            .collect();
        report
    }

    /// The source digest, with the manifest when it had to be fetched to learn it.
    async fn resolve_source(
        &self,
        source: &RepoClient,
        reference: &Reference,
    ) -> Result<(Digest, Option<Manifest>), CopyError> {
        if let Some(d) = &reference.digest {
            return Ok((d.clone(), None));
        }
        // One GET, not a HEAD and then a GET: the copy needs the manifest anyway, and its
        // bytes give the digest (checked against Docker-Content-Digest when sent).
        match source.get_manifest(reference.manifest_ref()).await {
            Ok(m) => Ok((m.digest.clone(), Some(m))),
            Err(e) if e.is_not_found() => Err(CopyError::SourceNotFound(reference.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// With `--platform`, the source index reduced to the selected children; `None` when the
    /// source is a single image (nothing to filter).
    async fn filtered_root(
        &self,
        source: &RepoClient,
        reference: &Reference,
        digest: &Digest,
        root: Option<Manifest>,
    ) -> Result<Option<Manifest>, CopyError> {
        let root = match root {
            Some(m) => m,
            None => source.get_manifest(digest).await?,
        };
        if !root.is_index() {
            return Ok(None);
        }
        let platforms = &self.opts.platforms;
        let filtered = root
            .filter_index(|c| PlatformFilter::keeps(platforms, c))
            .map_err(|e| CopyError::Source {
                source_ref: reference.clone(),
                reason: e.to_string(),
            })?;
        if matches!(&filtered.contents, Contents::Index { manifests } if manifests.is_empty()) {
            return Err(CopyError::Source {
                source_ref: reference.clone(),
                reason: format!("no child matches --platform {}", platforms_text(platforms)),
            });
        }
        Ok(Some(filtered))
    }

    /// `Some(client)` when the target needs the image, `None` when its tag (or digest) already
    /// resolves to `digest`.
    async fn check_target(
        &self,
        source: &Reference,
        target: &Reference,
        digest: &Digest,
        early: Option<Result<TargetHead, CopyError>>,
    ) -> Result<Option<RepoClient>, CopyError> {
        if let Some(pinned) = &target.digest
            && pinned != digest
        {
            return Err(CopyError::DigestMismatch {
                target: target.clone(),
                source_digest: digest.clone(),
            });
        }
        let (client, head) = match early {
            Some(asked) => asked?,
            None => self.head_target(source, target, Some(digest)).await?,
        };
        match head {
            Some(h) if h.digest.as_ref() == Some(digest) => Ok(None),
            _ => Ok(Some(client)),
        }
    }

    /// HEAD the target's tag, or (without one) the digest being copied.
    async fn head_target(
        &self,
        source: &Reference,
        target: &Reference,
        digest: Option<&Digest>,
    ) -> Result<TargetHead, CopyError> {
        let client = self.registries.repo(&target.repo)?;
        let tag = target_tag(source, target);
        let reference = match (&tag, digest) {
            (Some(t), _) => ManifestRef::Tag(t),
            (None, Some(d)) => ManifestRef::Digest(d),
            (None, None) => unreachable!("an untagged target is asked by digest"),
        };
        let head = client.head_manifest(reference).await?;
        Ok((client, head))
    }

    /// Fetch the manifest tree below `digest`, and its referrers when asked for.
    async fn read_tree(
        &self,
        source: &RepoClient,
        digest: &Digest,
        root: Option<Manifest>,
        filtered: bool,
    ) -> Result<(Node, Vec<Referrer>), CopyError> {
        let root = match root {
            Some(m) => m,
            None => source.get_manifest(digest).await?,
        };
        let node = fetch_children(source.clone(), root, 0).await?;
        let mut referrers = Vec::new();
        if self.opts.referrers {
            let mut subjects = Vec::new();
            node.post_order(&mut subjects);
            // A filtered index is new: nothing can refer to it yet.
            if filtered {
                subjects.pop();
            }
            let mut seen = HashSet::new();
            for m in subjects {
                for r in find_referrers(source, &m.digest).await? {
                    if seen.insert((r.node.manifest.digest.clone(), r.tag.clone())) {
                        referrers.push(r);
                    }
                }
            }
        }
        Ok((node, referrers))
    }

    /// Blobs into every pending target, then manifests children-first, then the tag, then
    /// referrers. One result per pending target; a failing target does not stop the others.
    #[allow(clippy::too_many_arguments)]
    async fn write_targets(
        &self,
        source: &RepoClient,
        source_digest: &Digest,
        node: &Node,
        referrers: &[Referrer],
        req: &CopyRequest,
        pending: &[(usize, RepoClient)],
        targets: &[RepoClient],
    ) -> Vec<Result<TargetOutcome, CopyError>> {
        let mut all = Vec::new();
        node.blobs(&mut all);
        for r in referrers {
            r.node.blobs(&mut all);
        }
        let mut seen = HashSet::new();
        all.retain(|d| seen.insert(d.digest.clone()));
        // Largest first, so the last stream to finish is a short one; among blobs of one size
        // class (a power of two) each copy takes an order of its own: other processes copying
        // the same image at the same moment (one delivery reaching several instances) then
        // work on different blobs first, and find many of the others' already present when
        // their turn for them comes.
        all.sort_by_cached_key(|d| {
            (
                std::cmp::Reverse(64 - d.size.leading_zeros()),
                fastrand::u64(..),
            )
        });

        let blob_results = join_all(
            all.iter()
                .map(|b| ensure_blob(&self.blob_ctx, source, b, targets)),
        )
        .await;
        let mut failed: HashMap<usize, CopyError> = HashMap::new();
        for per_target in blob_results {
            for (k, r) in per_target.into_iter().enumerate() {
                match r {
                    Ok(BlobAction::Skipped) => self.blob_ctx.stats.skipped(),
                    Ok(_) => {}
                    Err(e) => {
                        failed.entry(k).or_insert(CopyError::Registry(e));
                    }
                }
            }
        }
        join_all(pending.iter().enumerate().map(|(k, (i, client))| {
            let blob_error = failed.remove(&k);
            let target = &req.targets[*i];
            async move {
                if let Some(e) = blob_error {
                    return Err(e);
                }
                // Children by digest, then the root once: under its tag when there is one
                // (every manifest PUT counts against the registry's write quota).
                let Some(tag) = target_tag(&req.source, target) else {
                    self.push_manifests(client, node, Indexing::IfUnlisted).await?;
                    return self.push_referrers(client, referrers, target, node).await;
                };
                self.push_children(client, node).await?;
                let guard = req.source.tag.as_ref().filter(|_| req.guard_tag);
                // Asked before every attempt of the tag PUT: a retry after a 429 or a reset
                // must not write what the source has moved away from meanwhile.
                let moved = || async {
                    let Some(source_tag) = guard else { return Ok(None) };
                    let now = source.head_manifest(source_tag).await?.and_then(|h| h.digest);
                    Ok((now.as_ref() != Some(source_digest)).then_some(now))
                };
                let superseded = self
                    .put_root(node, || client.put_manifest_unless(tag, &node.manifest, &moved), client)
                    .await?;
                self.blob_ctx.stats.manifest_pushed();
                if let Some(now) = superseded {
                    // The content still goes in, by digest: "copied, tag left alone".
                    self.put_root(node, || client.put_manifest_by_digest(&node.manifest), client)
                        .await?;
                    tracing::info!(target = %target, now = ?now, "source tag moved on: tag left alone");
                    return Ok(TargetOutcome::TagSuperseded { now });
                }
                self.push_referrers(client, referrers, target, node).await
            }
        }))
        .await
    }

    /// After the image: its referrers (signatures, attestations, SBOMs), by digest and under
    /// their cosign or referrers-index tags.
    async fn push_referrers(
        &self,
        client: &RepoClient,
        referrers: &[Referrer],
        target: &Reference,
        node: &Node,
    ) -> Result<TargetOutcome, CopyError> {
        // A source without the referrers API brings its own referrers tag index (pushed last):
        // the target gets that, not one rebuilt a referrer at a time.
        let tag_index = node.manifest.digest.referrers_tag();
        let indexing = if referrers.iter().any(|r| r.tag.as_ref() == Some(&tag_index)) {
            Indexing::Brought
        } else {
            Indexing::IfUnlisted
        };
        for r in referrers {
            self.push_manifests(client, &r.node, indexing).await?;
            if let Some(tag) = &r.tag {
                client.put_manifest(tag, &r.node.manifest).await?;
                self.blob_ctx.stats.manifest_pushed();
            }
        }
        tracing::info!(target = %target, digest = %node.manifest.digest, "copied");
        Ok(TargetOutcome::Copied)
    }

    /// Push a manifest tree by digest, children first.
    fn push_manifests<'a>(
        &'a self,
        client: &'a RepoClient,
        node: &'a Node,
        indexing: Indexing,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            self.push_children(client, node).await?;
            let m = &node.manifest;
            let indexed = self
                .put_root(node, || client.put_manifest_by_digest(m), client)
                .await?;
            self.blob_ctx.stats.manifest_pushed();
            // A registry that does not answer `OCI-Subject` keeps no referrers list of its
            // own: without the referrers tag index, `oras discover` and `cosign tree` would
            // not find this referrer there.
            if let (Some(subject), false, Indexing::IfUnlisted) = (&m.subject, indexed, indexing) {
                client.index_referrer(&subject.digest, m).await?;
            }
            Ok(())
        }
        .boxed()
    }

    /// Push the children of an index (each a tree of its own), by digest, at once: they do
    /// not depend on each other, and one after another costs a round trip each.
    async fn push_children(&self, client: &RepoClient, node: &Node) -> Result<(), CopyError> {
        futures_util::future::try_join_all(
            node.children
                .iter()
                .map(|c| self.push_manifests(client, c, Indexing::IfUnlisted)),
        )
        .await
        .map(|_| ())
    }

    /// PUT `node`'s own manifest with `put`, its children being in place. An index the registry
    /// refuses with MANIFEST_BLOB_UNKNOWN (children lost since they were pushed, or not yet
    /// visible) gets its children pushed again, once.
    async fn put_root<T, F, Fut>(
        &self,
        node: &Node,
        put: F,
        client: &RepoClient,
    ) -> Result<T, CopyError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let m = &node.manifest;
        let v = match put().await {
            Ok(v) => v,
            Err(e)
                if m.is_index()
                    && (e.has_code("MANIFEST_BLOB_UNKNOWN") || e.has_code("MANIFEST_UNKNOWN")) =>
            {
                tracing::warn!(error = %e, "target lost children of the index; pushing them again");
                for c in &node.children {
                    client.put_manifest_by_digest(&c.manifest).await?;
                }
                put().await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(v)
    }
}

/// Whether a referrer pushed to a registry without the referrers API is added to the
/// target's referrers tag index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Indexing {
    /// Yes, unless the registry said it lists referrers itself (`OCI-Subject`).
    IfUnlisted,
    /// No: the copy brings the source's own index, written after the referrers.
    Brought,
}

/// The tag to set on a target: its own, else the source's.
fn target_tag<'a>(source: &'a Reference, target: &'a Reference) -> Option<&'a Tag> {
    target.tag.as_ref().or(source.tag.as_ref())
}

fn platforms_text(p: &[PlatformFilter]) -> String {
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn fetch_children(
    source: RepoClient,
    manifest: Manifest,
    depth: usize,
) -> BoxFuture<'static, Result<Node, CopyError>> {
    async move {
        let Contents::Index { manifests } = &manifest.contents else {
            return Ok(Node {
                manifest,
                children: Vec::new(),
            });
        };
        if depth >= MAX_DEPTH {
            return Err(CopyError::Source {
                source_ref: source.repository().at(manifest.digest.clone()),
                reason: format!("indexes nested deeper than {MAX_DEPTH} levels"),
            });
        }
        let mut seen = HashSet::new();
        let wanted: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| seen.insert(d.digest.clone()))
            .collect();
        let children = futures_util::future::try_join_all(wanted.into_iter().map(|d| {
            let source = source.clone();
            let digest = d.digest.clone();
            async move {
                let m = source.get_manifest(&digest).await?;
                fetch_children(source, m, depth + 1).await
            }
        }))
        .await?;
        Ok(Node { manifest, children })
    }
    .boxed()
}

/// What refers to `subject` in the source: OCI 1.1 referrers (the API, or the `sha256-HEX`
/// fallback tag when the API answers 404) and cosign's `sha256-HEX.{sig,att,sbom}` tags.
async fn find_referrers(source: &RepoClient, subject: &Digest) -> Result<Vec<Referrer>, CopyError> {
    let mut out = Vec::new();
    let found = source.find_referrers(subject).await?;
    if let Some(index) = found.tag_index {
        out.push(Referrer {
            node: Node {
                manifest: index,
                children: Vec::new(),
            },
            tag: Some(subject.referrers_tag()),
        });
    }
    let descriptors = found.descriptors;
    for d in descriptors {
        let m = source.get_manifest(&d.digest).await?;
        let node = fetch_children(source.clone(), m, 1).await?;
        out.push(Referrer { node, tag: None });
    }
    for suffix in COSIGN_SUFFIXES {
        let tag = subject.cosign_tag(suffix);
        if source.head_manifest(&tag).await?.is_some() {
            let m = source.get_manifest(&tag).await?;
            let node = fetch_children(source.clone(), m, 1).await?;
            out.push(Referrer {
                node,
                tag: Some(tag),
            });
        }
    }
    // The fallback index lists referrers: push it after them.
    out.sort_by_key(|r| r.tag.as_ref().is_some_and(|t| !t.as_str().contains('.')));
    Ok(out)
}
