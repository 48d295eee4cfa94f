//! Image references and digests: `host[:port]/path[:tag][@digest]`, parsed once at the edge.
//!
//! A relay only ever talks to registries it was told about, so a reference must name its
//! registry host: no Docker Hub defaulting (`ubuntu` is refused rather than guessed at).

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// Why a reference or digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

impl ParseError {
    fn new(what: &'static str, input: &str, reason: &'static str) -> Self {
        Self {
            what,
            input: input.to_owned(),
            reason,
        }
    }
}

/// Content digest, `algorithm:hex`. sha256 and sha512 are the two the OCI spec registers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Digest algorithms the OCI image spec registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part, after `algorithm:`.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    /// The tag under which the OCI 1.1 referrers fallback index and cosign artifacts of this
    /// digest live: `sha256-HEX`.
    pub fn tag_form(&self) -> String {
        self.0.replacen(':', "-", 1)
    }

    /// The referrers tag schema's tag for this digest: `sha256-HEX` (always a valid tag: a
    /// digest is lowercase hex behind a short algorithm name).
    pub fn referrers_tag(&self) -> Tag {
        Tag(self.tag_form())
    }

    /// cosign's tag for one kind of artifact about this digest: `sha256-HEX.sig`, `.att`,
    /// `.sbom`.
    pub fn cosign_tag(&self, suffix: &str) -> Tag {
        Tag(format!("{}.{suffix}", self.tag_form()))
    }

    /// A streaming hasher for this digest's algorithm.
    pub fn hasher(&self) -> Hasher {
        match self.algorithm() {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Whether `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish_matches(self)
    }
}

/// Incremental hash that is checked against an expected [`Digest`] at the end.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }

    pub fn finish_matches(self, want: &Digest) -> bool {
        &self.finish() == want
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| ParseError::new("digest", s, "expected algorithm:hex"))?;
        let want_len = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return Err(ParseError::new(
                    "digest",
                    s,
                    "algorithm must be sha256 or sha512",
                ));
            }
        };
        if hex.len() != want_len {
            return Err(ParseError::new(
                "digest",
                s,
                "wrong hex length for the algorithm",
            ));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseError::new("digest", s, "hex must be lowercase 0-9a-f"));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (distribution spec).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let ok_first = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_first || s.len() > 128 {
            return Err(ParseError::new(
                "tag",
                s,
                "must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(ParseError::new(
                "tag",
                s,
                "must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
            ));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository on a registry: `host[:port]/path`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Repository {
    /// Registry host with optional port, as written in the reference (`127.0.0.1:5000`).
    pub registry: String,
    /// Repository path below the host (`team/app`).
    pub path: String,
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

impl Repository {
    /// Parse `host[:port]/path` without tag or digest.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let r: Reference = s.parse()?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err(ParseError::new(
                "repository",
                s,
                "must not carry a tag or digest",
            ));
        }
        Ok(r.repo)
    }

    /// This repository with a tag.
    pub fn tagged(&self, tag: Tag) -> Reference {
        Reference {
            repo: self.clone(),
            tag: Some(tag),
            digest: None,
        }
    }

    /// This repository at a digest.
    pub fn at(&self, digest: Digest) -> Reference {
        Reference {
            repo: self.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

/// An image reference: a repository plus a tag, a digest, or both (`repo:tag@digest` pins the
/// digest and names the tag to set on a target).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    pub repo: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// What to ask the registry for: the digest when pinned, else the tag, else `latest`.
    pub fn manifest_ref(&self) -> ManifestRef<'_> {
        static LATEST: std::sync::LazyLock<Tag> = std::sync::LazyLock::new(|| Tag("latest".into()));
        match (&self.digest, &self.tag) {
            (Some(d), _) => ManifestRef::Digest(d),
            (None, Some(t)) => ManifestRef::Tag(t),
            (None, None) => ManifestRef::Tag(&LATEST),
        }
    }
}

/// What names a manifest in a request to a registry: a tag, or a digest. Distinct types so
/// that "children by digest, then the tag" is the compiler's to check, not a string's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRef<'a> {
    Tag(&'a Tag),
    Digest(&'a Digest),
}

impl ManifestRef<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            ManifestRef::Tag(t) => t.as_str(),
            ManifestRef::Digest(d) => d.as_str(),
        }
    }

    /// The digest the answer must hash to, when the reference is one.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            ManifestRef::Digest(d) => Some(d),
            ManifestRef::Tag(_) => None,
        }
    }
}

impl<'a> From<&'a Tag> for ManifestRef<'a> {
    fn from(t: &'a Tag) -> Self {
        ManifestRef::Tag(t)
    }
}

impl<'a> From<&'a Digest> for ManifestRef<'a> {
    fn from(d: &'a Digest) -> Self {
        ManifestRef::Digest(d)
    }
}

impl fmt::Display for ManifestRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        // An IPv6 literal is bracketed, so a ':' inside brackets is not a port separator.
        Some((n, p)) if !p.contains(']') => (n, Some(p)),
        _ => (h, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return false;
    }
    if name.starts_with('[') {
        return name.ends_with(']')
            && name[1..name.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_path_component(c: &str) -> bool {
    // distribution: [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for Reference {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |reason| ParseError::new("image reference", s, reason);
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| err("bad digest after '@'"))?,
                ),
            ),
            None => (s, None),
        };
        let (host, path_tag) = rest
            .split_once('/')
            .ok_or_else(|| err("must start with a registry host: host[:port]/path"))?;
        if !valid_host(host) {
            return Err(err("registry host is not a valid host[:port]"));
        }
        // A tag follows the last ':' after the last '/'.
        let last = path_tag.rsplit('/').next().unwrap_or(path_tag);
        let (path, tag) = match last.rsplit_once(':') {
            Some((_, t)) => {
                let path = &path_tag[..path_tag.len() - t.len() - 1];
                (path, Some(t.parse::<Tag>().map_err(|_| err("bad tag"))?))
            }
            None => (path_tag, None),
        };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(err(
                "repository path must be lowercase components [a-z0-9] joined by '/', '.', '_', '__' or '-'",
            ));
        }
        if path.len() > 255 {
            return Err(err("repository path longer than 255 characters"));
        }
        Ok(Reference {
            repo: Repository {
                registry: host.to_owned(),
                path: path.to_owned(),
            },
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_host_port_path_tag_and_digest() {
        let r: Reference = format!("127.0.0.1:5000/team/app:v1@{D}").parse().unwrap();
        assert_eq!(r.repo.registry, "127.0.0.1:5000");
        assert_eq!(r.repo.path, "team/app");
        assert_eq!(r.tag.unwrap().as_str(), "v1");
        assert_eq!(r.digest.unwrap().as_str(), D);
    }

    #[test]
    fn artifact_registry_paths_and_domain_scoped_projects_parse() {
        let r: Reference = "us-central1-docker.pkg.dev/example.com/my-project/repo/img:latest"
            .parse()
            .unwrap();
        assert_eq!(r.repo.path, "example.com/my-project/repo/img");
        let r: Reference = "[::1]:5000/a/b".parse().unwrap();
        assert_eq!(r.repo.registry, "[::1]:5000");
        assert!(r.tag.is_none());
    }

    #[test]
    fn refuses_references_without_a_host_or_with_bad_parts() {
        for bad in [
            "ubuntu",
            "host:99999/x",
            "host/UPPER",
            "host/a//b",
            "host/a:bad tag",
            "host/a@sha256:abc",
            "host/-a",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn digest_checks_algorithm_length_and_case() {
        assert!(D.parse::<Digest>().is_ok());
        assert!(D.to_uppercase().parse::<Digest>().is_err());
        assert!("md5:abcd".parse::<Digest>().is_err());
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.matches(b""));
        assert_eq!(d.tag_form().len(), 71);
    }

    #[test]
    fn display_round_trips() {
        let s = format!("reg.example:443/a/b-c.d__e:v1.2@{D}");
        assert_eq!(s.parse::<Reference>().unwrap().to_string(), s);
    }
}
