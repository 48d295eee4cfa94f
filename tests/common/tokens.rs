//! Push tokens signed as Google signs them (RS256 with a `kid`), with RSA keys generated here.
//! The key set that lists [`GOOGLE_KEY`] is served by [`super::google::FakeGoogle`].

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// What Cloud Run IAM puts in place of the signature of a token it has verified (spelled out
/// here rather than imported, so the harness does not lean on the code under test).
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// Google's signing key, listed in the fake JWKS.
pub static GOOGLE_KEY: LazyLock<TestKey> = LazyLock::new(|| TestKey::generate("google-key-1"));

/// Someone else's key, never listed: tokens it signs are forgeries.
pub static OTHER_KEY: LazyLock<TestKey> = LazyLock::new(|| TestKey::generate("other-key"));

/// An RSA-2048 key pair that signs tokens and shows itself as a JWK.
pub struct TestKey {
    /// The key id written into token headers and the JWK.
    pub kid: String,
    encoding: EncodingKey,
    /// Modulus and exponent, base64url, as a JWK carries them.
    n: String,
    e: String,
}

impl TestKey {
    /// A fresh key pair named `kid` (takes a moment: hold it in a `LazyLock`).
    pub fn generate(kid: &str) -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let public = pair.public_key();
        TestKey {
            kid: kid.to_owned(),
            // jsonwebtoken's aws-lc signer wants PKCS#1 (RSAPrivateKey); aws-lc-rs exports only
            // PKCS#8, which wraps the PKCS#1 key in an OCTET STRING.
            encoding: EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(pkcs8.as_ref())),
            n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }
    }

    /// The JWK as Google's https://www.googleapis.com/oauth2/v3/certs lists it.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// An RS256 token over `claims`, naming this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs with this key but names `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// The token as Cloud Run IAM forwards it after verifying: header and claims intact,
    /// signature replaced by [`SIGNATURE_REMOVED`].
    pub fn stripped(&self, claims: &Value) -> String {
        let signed = self.sign(claims);
        let (message, _signature) = signed.rsplit_once('.').unwrap();
        format!("{message}.{SIGNATURE_REMOVED}")
    }
}

/// One DER element: (tag, contents, what follows).
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, 2 + n)
    };
    (tag, &der[start..start + len], &der[start + len..])
}

/// PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING } (RFC 5208).
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = der_element(pkcs8);
    let (_, _version, rest) = der_element(info);
    let (_, _algorithm, rest) = der_element(rest);
    let (tag, private_key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
    private_key.to_vec()
}

/// Seconds since the epoch, as token time claims count.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a Pub/Sub push token for `email` and `audience`, issued a minute ago and
/// valid for an hour.
pub fn push_claims(email: &str, audience: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "108246189154284763427",
        "sub": "108246189154284763427",
        "email": email,
        "email_verified": true,
        "iat": now - 60,
        "exp": now + 3540,
    })
}

/// `claims` with `field` set to `value`.
pub fn with_claim(mut claims: Value, field: &str, value: impl Into<Value>) -> Value {
    claims[field] = value.into();
    claims
}

/// The `Authorization` header value that carries `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Fails the test when `text` (an error message, a response body, a log) contains `token` or
/// any of its dot-separated parts longer than 8 characters: a refusal must not echo secrets.
pub fn assert_does_not_echo(text: &str, token: &str) {
    let parts = std::iter::once(token).chain(token.split('.'));
    for part in parts.filter(|p| p.len() > 8) {
        assert!(!text.contains(part), "{text:?} echoes the token");
    }
}
