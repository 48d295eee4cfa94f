//! Several `image-relay serve` processes on the same real registries, sharing nothing else, as
//! Cloud Run runs them: deliveries of one tag's moves land on different instances, tag writes
//! are slowed or throttled by a fault proxy, and the targets must still end on the source's
//! state, with no tag ever pointing at content a target lacks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::service::*;
use common::wait::eventually_polling;
use common::*;
use serde_json::Value;

const NO_AUTH: &[&str] = &["--push-auth", "none"];

async fn digest_of(host: &str, repo: &str, reference: &str) -> Option<String> {
    Seeder::new(host, None)
        .get_manifest_raw(repo, reference)
        .await
        .and_then(|m| m.digest)
}

fn outcome(body: &Value) -> &str {
    body["targets"][0]["outcome"].as_str().unwrap_or("")
}

/// A source, a target behind a fault proxy, and two instances relaying the source's
/// `releases/` to the target's `partner/`.
struct TwoInstances {
    src: Registry,
    dst: Registry,
    proxy: Proxy,
    a: Service,
    b: Service,
}

impl TwoInstances {
    async fn start(extra: &str) -> TwoInstances {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let proxy = Proxy::start(&dst.host(), Fault::None).await;
        let rules = rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", proxy.host())],
            extra,
        );
        let a = Service::start(&rules, NO_AUTH).await;
        let b = Service::start(&rules, NO_AUTH).await;
        TwoInstances {
            src,
            dst,
            proxy,
            a,
            b,
        }
    }

    /// The source repository the tests push to, as events name it.
    fn repo(&self) -> String {
        format!("{}/releases/app", self.src.host())
    }
}

/// Two instances; the tag moves X -> Y at the source while instance A's write of X is slowed
/// by `fault` at the target. B copies Y; A's write must not leave the target on X.
async fn tag_moves_while_one_instance_writes(fault: Injected) {
    let pair = TwoInstances::start("").await;
    let repo = pair.repo();
    let TwoInstances {
        src,
        dst,
        proxy,
        a,
        b,
    } = pair;
    let s = Seeder::for_registry(&src);
    let x = s
        .push_random_image("releases/app", Some("v1"), Format::Oci, 1)
        .await;
    let y = s
        .push_random_image("releases/app", None, Format::Oci, 2)
        .await;
    let slowed = proxy.arm(Matcher::tag_put(), fault, 1);
    let insert = |d: &str, id: &str| {
        deliver(
            Form::PubSubPush,
            &notification("INSERT", &repo, Some(d), Some("v1")),
            id,
        )
    };
    let (on_a, on_b) = (
        insert(&x.manifest.digest, "x"),
        insert(&y.manifest.digest, "y"),
    );
    let first = a.post(&on_a);
    let second = async {
        // A has sent its tag write of X, and it is being slowed: now the source moves on.
        proxy.wait_hits(slowed, 1).await;
        s.push_pushed("releases/app", Some("v1"), &y.manifest).await;
        b.post(&on_b).await
    };
    let ((status_a, body_a, _), (status_b, body_b, _)) = tokio::join!(first, second);
    assert_eq!(status_b, 200, "{body_b}\n{}", b.log());
    assert_eq!(outcome(&body_b), "copied", "{body_b}");
    assert_eq!(status_a, 200, "{body_a}\n{}", a.log());
    assert_eq!(
        digest_of(&dst.host(), "partner/app", "v1").await.as_deref(),
        Some(y.manifest.digest.as_str()),
        "the target must end on the source's digest\nA: {body_a}\n{}",
        a.log()
    );
}

#[tokio::test]
async fn a_tag_write_slowed_in_transit_is_followed_by_the_source_and_corrected() {
    with_timeout(
        120,
        tag_moves_while_one_instance_writes(Injected::Hold(Duration::from_secs(3))),
    )
    .await;
}

#[tokio::test]
async fn a_tag_write_retried_after_429_checks_the_source_again_before_it_is_sent() {
    with_timeout(
        120,
        tag_moves_while_one_instance_writes(Injected::Answer {
            status: 429,
            retry_after: Some("3".into()),
        }),
    )
    .await;
}

#[tokio::test]
async fn a_tag_delete_that_lands_after_a_repush_is_undone_by_restoring_the_tag() {
    with_timeout(120, async {
        let pair = TwoInstances::start("on_delete = \"propagate\"").await;
        let repo = pair.repo();
        let TwoInstances {
            src,
            dst,
            proxy,
            a,
            b,
        } = pair;
        let s = Seeder::for_registry(&src);
        let x = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 3)
            .await;
        let insert = deliver(
            Form::PubSubPush,
            &notification("INSERT", &repo, Some(&x.manifest.digest), Some("v1")),
            "i1",
        );
        assert_eq!(a.post(&insert).await.0, 200);
        // The source deletes v1 (distribution deletes the manifest), and A's delete at the
        // target is slow; meanwhile v1 is pushed again and B finds the target in place.
        s.delete_manifest("releases/app", &x.manifest.digest).await;
        let slowed = proxy.arm(
            Matcher::new(Method::DELETE, "/manifests/sha256:"),
            Injected::Hold(Duration::from_secs(3)),
            1,
        );
        let delete = deliver(
            Form::PubSubPush,
            &notification("DELETE", &repo, None, Some("v1")),
            "d1",
        );
        let first = a.post(&delete);
        let second = async {
            proxy.wait_hits(slowed, 1).await;
            s.push_pushed("releases/app", Some("v1"), &x.manifest).await;
            let again = deliver(
                Form::PubSubPush,
                &notification("INSERT", &repo, Some(&x.manifest.digest), Some("v1")),
                "i2",
            );
            b.post(&again).await
        };
        let ((status_a, body_a, _), (status_b, body_b, _)) = tokio::join!(first, second);
        assert_eq!(status_b, 200, "{body_b}");
        assert_eq!(status_a, 200, "{body_a}\n{}", a.log());
        assert_eq!(
            outcome(&body_a),
            "copied",
            "A restores the tag it deleted: {body_a}"
        );
        assert_eq!(
            digest_of(&dst.host(), "partner/app", "v1").await.as_deref(),
            Some(x.manifest.digest.as_str())
        );
    })
    .await;
}

/// Blob uploads a target received into `repo`: monolithic `PUT`s that completed a session.
fn uploads(proxy: &Proxy, repo: &str) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path.starts_with(&format!("/v2/{repo}/blobs/uploads/"))
                && r.status == 201
        })
        .count()
}

#[tokio::test]
async fn one_delivery_reaching_three_instances_is_copied_right_without_every_blob_thrice() {
    with_timeout(180, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let proxy = Proxy::start(&dst.host(), Fault::None).await;
        let s = Seeder::for_registry(&src);
        let rules = rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", proxy.host())],
            "",
        );
        let instances = [
            Service::start(&rules, NO_AUTH).await,
            Service::start(&rules, NO_AUTH).await,
            Service::start(&rules, NO_AUTH).await,
        ];
        // Two images of 20 layers and a config: one delivered to all three at once, one to
        // the second and third while the first is copying it (a redelivery after the ack
        // deadline passed mid-copy).
        for (name, staggered) in [("at-once", false), ("staggered", true)] {
            let layers: Vec<Layer> = (0..20)
                .map(|i| Layer::random_tar(700 + i + 100 * u64::from(staggered), 256 << 10))
                .collect();
            let path = format!("releases/{name}");
            let img = s
                .push_image(&path, Some("v1"), Format::Oci, &Platform::linux_amd64(), &layers)
                .await;
            let blobs = layers.len() + 1;
            let n = notification(
                "INSERT",
                &format!("{}/{path}", src.host()),
                Some(&img.manifest.digest),
                Some("v1"),
            );
            let d = deliver(Form::PubSubPush, &n, name);
            let target = format!("partner/{name}");
            let later = async {
                if staggered {
                    // Polled often: the first copy must still be under way when the others start.
                    eventually_polling(
                        Duration::from_millis(2),
                        Duration::from_secs(60),
                        "the first instance uploads 4 blobs",
                        || async {
                            match uploads(&proxy, &target) {
                                n if n >= 4 => Ok(()),
                                n => Err(format!("{n} uploads")),
                            }
                        },
                    )
                    .await;
                }
                futures_util::future::join(instances[1].post(&d), instances[2].post(&d)).await
            };
            let (first, (second, third)) = futures_util::future::join(instances[0].post(&d), later).await;
            for (status, body, _) in [first, second, third] {
                assert_eq!(status, 200, "{body}");
            }
            let uploaded = uploads(&proxy, &target);
            println!(
                "{name}: {uploaded} blob uploads for {blobs} blobs ({} would be every blob once per instance)",
                3 * blobs
            );
            let got = Seeder::for_registry(&dst).get_manifest_raw(&target, "v1").await;
            assert_eq!(got.map(|m| m.bytes), Some(img.manifest.bytes.clone()));
            for b in img.layers.iter().chain([&img.config]) {
                assert!(Seeder::for_registry(&dst).blob_exists(&target, &b.digest).await);
            }
            // Each instance takes the blobs in an order of its own and asks about each one
            // when its turn comes, so the instances share the work instead of each doing all
            // of it. Measured: 35-47 at once and 32-37 staggered, against 58-63 and 23-42 when every
            // instance took the blobs in the manifest's order (docs/design.md).
            assert!(
                uploaded >= blobs && uploaded <= 54,
                "{name}: {uploaded} uploads for {blobs} blobs"
            );
        }
    })
    .await;
}

// The scenario: three instances, two targets behind fault proxies, tags moving and deleted at
// the source while their deliveries arrive shuffled, duplicated and spread over the
// instances, a sync running beside them, and a watcher reading the targets all along.

/// A tag of the scenario and the images it moves between. `v9`'s images are its own, so
/// deleting it at a target that can only delete manifests takes no other tag along.
struct TagPlan {
    repo: &'static str,
    tag: &'static str,
    pool: usize,
    deletable: bool,
}

const TAGS: [TagPlan; 5] = [
    TagPlan {
        repo: "app",
        tag: "v1",
        pool: 0,
        deletable: false,
    },
    TagPlan {
        repo: "app",
        tag: "latest",
        pool: 0,
        deletable: false,
    },
    TagPlan {
        repo: "app",
        tag: "v9",
        pool: 1,
        deletable: true,
    },
    TagPlan {
        repo: "tool",
        tag: "v1",
        pool: 2,
        deletable: false,
    },
    TagPlan {
        repo: "tool",
        tag: "latest",
        pool: 2,
        deletable: false,
    },
];

/// Images in each pool: a mix of single images and two-platform indexes.
const POOL: usize = 4;

/// How long a deleted tag may stay listed without its manifest.
const LISTING_CATCHES_UP: Duration = Duration::from_secs(2);

/// Reads a target registry while others write to it. distribution's filesystem storage
/// rewrites a tag's link file in place, so a read racing a tag write can get a 500: such
/// answers are read again, and only what persists counts.
struct Watcher {
    http: reqwest::Client,
    base: String,
}

enum Read {
    Found(Vec<u8>),
    Missing,
}

impl Watcher {
    fn new(registry: &Registry) -> Watcher {
        Watcher {
            http: reqwest::Client::new(),
            base: registry.url(),
        }
    }

    async fn read(&self, method: reqwest::Method, path: &str) -> Result<Read, String> {
        let mut last = String::new();
        for _ in 0..40 {
            let resp = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("accept", media::MANIFEST_ACCEPT)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    return Ok(Read::Found(
                        r.bytes().await.map_err(|e| e.to_string())?.to_vec(),
                    ));
                }
                Ok(r) if r.status() == 404 => return Ok(Read::Missing),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{method} {path}: {last}, again and again"))
    }

    async fn tags(&self, repo: &str) -> Result<Vec<String>, String> {
        Ok(
            match self
                .read(reqwest::Method::GET, &format!("/v2/{repo}/tags/list"))
                .await?
            {
                Read::Missing => Vec::new(),
                Read::Found(b) => {
                    serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string())?["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                }
            },
        )
    }

    async fn manifest(&self, repo: &str, reference: &str) -> Result<Option<Value>, String> {
        Ok(
            match self
                .read(
                    reqwest::Method::GET,
                    &format!("/v2/{repo}/manifests/{reference}"),
                )
                .await?
            {
                Read::Missing => None,
                Read::Found(b) => Some(serde_json::from_slice(&b).map_err(|e| e.to_string())?),
            },
        )
    }

    async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, String> {
        Ok(matches!(
            self.read(reqwest::Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
                .await?,
            Read::Found(_)
        ))
    }

    /// Every tag of a target repository points at a manifest it holds whose blobs (and, for
    /// an index, children) it holds too; each violation is described.
    async fn check(&self, repo: &str) -> Vec<String> {
        match self.check_inner(repo).await {
            Ok(bad) => bad,
            Err(e) => vec![format!("{repo}: {e}")],
        }
    }

    async fn check_inner(&self, repo: &str) -> Result<Vec<String>, String> {
        let mut bad = Vec::new();
        for tag in self.tags(repo).await? {
            let Some(m) = self.manifest(repo, &tag).await? else {
                // Listed, then gone: a delete in between is fine once the listing catches up
                // (or the tag is back); still listed without a manifest after that is not.
                let deadline = Instant::now() + LISTING_CATCHES_UP;
                loop {
                    if !self.tags(repo).await?.contains(&tag)
                        || self.manifest(repo, &tag).await?.is_some()
                    {
                        break;
                    }
                    if Instant::now() >= deadline {
                        bad.push(format!(
                            "{repo}:{tag} is listed but its manifest is missing for {LISTING_CATCHES_UP:?}"
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            };
            let mut images = Vec::new();
            if let Some(children) = m["manifests"].as_array() {
                for c in children {
                    let d = c["digest"].as_str().unwrap_or("");
                    match self.manifest(repo, d).await? {
                        Some(child) => images.push(child),
                        None => bad.push(format!("{repo}:{tag} lists child {d}, which is missing")),
                    }
                }
            } else {
                images.push(m);
            }
            for image in images {
                let blobs = image["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(std::iter::once(&image["config"]));
                for b in blobs {
                    let d = b["digest"].as_str().unwrap_or("");
                    if !self.has_blob(repo, d).await? {
                        bad.push(format!("{repo}:{tag} needs blob {d}, which is missing"));
                    }
                }
            }
        }
        Ok(bad)
    }
}

/// Deliver as Pub/Sub does: to any instance, again after every non-2xx, until acknowledged.
async fn deliver_until_acked(
    instances: &[Service],
    d: &Delivery,
    mut rng: fastrand::Rng,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..60 {
        let i = rng.usize(..instances.len());
        let (status, body, _) = instances[i].post(d).await;
        if (200..300).contains(&status) {
            return Ok(());
        }
        last = format!("{status} {body}");
        tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
    }
    Err(format!("never acknowledged; last answer: {last}"))
}

async fn scenario(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let src = Registry::start().await;
    let targets = [Registry::start().await, Registry::start().await];
    let proxies = [
        Proxy::start(&targets[0].host(), Fault::None).await,
        Proxy::start(&targets[1].host(), Fault::None).await,
    ];
    let prefixes = ["partner", "prod"];
    let s = Seeder::for_registry(&src);
    let rules = format!(
        "[[rule]]\nname = \"releases\"\nsource = \"{}/releases\"\nimages = [\".*\"]\n\
         tags = ['v[0-9]+', \"latest\"]\non_delete = \"propagate\"\ntargets = [\"{}/{}\", \"{}/{}\"]\n\n\
         [registry.\"{}\"]\nauth = \"none\"\n[registry.\"{}\"]\nauth = \"none\"\n[registry.\"{}\"]\nauth = \"none\"\n",
        src.host(),
        proxies[0].host(),
        prefixes[0],
        proxies[1].host(),
        prefixes[1],
        src.host(),
        proxies[0].host(),
        proxies[1].host(),
    );
    let instances = Arc::new(vec![
        Service::start(&rules, NO_AUTH).await,
        Service::start(&rules, NO_AUTH).await,
        Service::start(&rules, NO_AUTH).await,
    ]);

    // Image pools, pushed by digest; tags are set by the history below.
    let mut pools: Vec<Vec<Pushed>> = Vec::new();
    for (p, repo) in ["app", "app", "tool"].iter().enumerate() {
        let mut pool = Vec::new();
        for k in 0..POOL {
            let seed = 1000 * (p as u64 + 1) + k as u64 + 10 * seed;
            let path = format!("releases/{repo}");
            let m = if k % 2 == 0 {
                s.push_random_image(&path, None, Format::Oci, seed)
                    .await
                    .manifest
            } else {
                let platforms = [
                    Platform::linux_amd64(),
                    Platform::new("linux", "arm64", Some("v8")),
                ];
                s.push_index(&path, None, Format::Oci, seed, &platforms)
                    .await
                    .manifest
            };
            pool.push(m);
        }
        pools.push(pool);
    }

    // The watcher: every target, all along.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let watchers: Vec<Watcher> = targets.iter().map(Watcher::new).collect();
        tokio::spawn(async move {
            let mut bad = Vec::new();
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (w, prefix) in watchers.iter().zip(prefixes) {
                    for repo in ["app", "tool"] {
                        bad.extend(w.check(&format!("{prefix}/{repo}")).await);
                    }
                }
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (bad, rounds)
        })
    };

    // The history: each step changes one tag at the source, and its event is delivered once
    // or twice, later, to any instance, while faults are armed at random on the targets.
    let mut current: Vec<Option<usize>> = vec![None; TAGS.len()];
    let mut deliveries = Vec::new();
    let steps = 24;
    let sync_at = rng.usize(4..steps - 4);
    for step in 0..steps {
        if rng.bool() {
            let p = &proxies[rng.usize(..2)];
            // Mostly slowed and throttled tag writes: they are what can land out of order.
            let fault = match rng.u8(..6) {
                0..=2 => (
                    Matcher::tag_put(),
                    Injected::Hold(Duration::from_millis(rng.u64(800..3000))),
                ),
                3 | 4 => (
                    Matcher::tag_put(),
                    Injected::Answer {
                        status: 429,
                        retry_after: Some(rng.u8(1..3).to_string()),
                    },
                ),
                _ => (
                    Matcher {
                        method: None,
                        path_contains: "/v2/".into(),
                        tags_only: false,
                    },
                    Injected::Answer {
                        status: 503,
                        retry_after: None,
                    },
                ),
            };
            p.arm(fault.0, fault.1, 1);
        }
        let t = rng.usize(..TAGS.len());
        let plan = &TAGS[t];
        let path = format!("releases/{}", plan.repo);
        let repo = format!("{}/{path}", src.host());
        let notification = if plan.deletable && current[t].is_some() && rng.bool() {
            let k = current[t].take().unwrap();
            s.delete_manifest(&path, &pools[plan.pool][k].digest).await;
            notification("DELETE", &repo, None, Some(plan.tag))
        } else {
            let k = loop {
                let k = rng.usize(..POOL);
                if Some(k) != current[t] {
                    break k;
                }
            };
            let m = &pools[plan.pool][k];
            s.push_pushed(&path, Some(plan.tag), m).await;
            current[t] = Some(k);
            notification("INSERT", &repo, Some(&m.digest), Some(plan.tag))
        };
        for copy in 0..1 + usize::from(rng.u8(..3) == 0) {
            let d = deliver(Form::PubSubPush, &notification, &format!("s{step}-{copy}"));
            let instances = instances.clone();
            let delay = Duration::from_millis(rng.u64(0..1500));
            let rng = fastrand::Rng::with_seed(rng.u64(..));
            deliveries.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                deliver_until_acked(&instances, &d, rng).await
            }));
        }
        if step == sync_at {
            let svc = instances.clone();
            let i = rng.usize(..3);
            deliveries.push(tokio::spawn(async move {
                let resp = svc[i]
                    .http
                    .post(svc[i].url("/sync"))
                    .body("{}")
                    .send()
                    .await
                    .map_err(|e| format!("sync: {e}"))?;
                // A sync meeting injected faults reports them; it must still answer.
                let _ = resp.bytes().await;
                Ok(())
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(50..400))).await;
    }
    for d in deliveries {
        d.await
            .expect("delivery task")
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (bad, rounds) = watcher.await.expect("watcher");
    assert!(rounds > 3, "the watcher ran {rounds} rounds");
    assert!(
        bad.is_empty(),
        "seed {seed}: the watcher saw a target tag without its content:\n{}",
        bad.join("\n")
    );

    for plan in &TAGS {
        let path = format!("releases/{}", plan.repo);
        let want = digest_of(&src.host(), &path, plan.tag).await;
        for (t, prefix) in targets.iter().zip(prefixes) {
            let got = digest_of(&t.host(), &format!("{prefix}/{}", plan.repo), plan.tag).await;
            assert_eq!(
                got,
                want,
                "seed {seed}: {prefix}/{}:{} differs from the source\n{}",
                plan.repo,
                plan.tag,
                instances
                    .iter()
                    .map(|i| i.log())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
        }
    }
}

/// Seeds 1 to 3 by default, at once; for soaking a change, more of them:
/// `IMAGE_RELAY_SEEDS=4-40 cargo test --test instances three_instances`. Seeds run three at a
/// time, as in CI.
#[tokio::test]
async fn three_instances_converge_on_the_source_through_faults() {
    let range = std::env::var("IMAGE_RELAY_SEEDS").unwrap_or_else(|_| "1-3".into());
    let (from, to) = range.split_once('-').expect("IMAGE_RELAY_SEEDS=FROM-TO");
    let seeds: Vec<u64> = (from.parse().unwrap()..=to.parse().unwrap()).collect();
    for chunk in seeds.chunks(3) {
        futures_util::future::join_all(chunk.iter().map(|&s| with_timeout(240, scenario(s)))).await;
    }
}
