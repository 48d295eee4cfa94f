//! Bounded reads of the response bodies the relay holds whole in memory: error documents,
//! listings, token answers, API pages. Their size is for the server to say, and a broken or
//! hostile one could otherwise make a single request buffer whatever it sends. Blob bodies are
//! streamed and never pass through here.

use std::fmt;

use bytes::{Bytes, BytesMut};

/// Error bodies are read only for their error codes or message, which take well under 1 KiB
/// (`{"errors":[..]}`, Google's `{"error":{..}}`); 64 KiB still holds a proxy's HTML error page,
/// and keeps what every failing request may buffer small.
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// One page of a listing (tags, catalog, referrers, Artifact Registry images). A page of 1000
/// tags with the manifest map Google's registries add is about half a MiB, and a registry may
/// ignore the page size asked for and send everything at once: 16 MiB holds some 30 000 such
/// tags, and is still an amount every worker can afford to buffer at once.
pub const MAX_LISTING_BYTES: usize = 16 << 20;

/// A token service's answer: a JSON object around a token of a few KiB (a JWT, a Google access
/// token). 1 MiB is far past any real one.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;

/// Why a body could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body stopped arriving: connection reset, read timeout.
    #[error("reading the body: {}", super::error_chain(.0))]
    Read(reqwest::Error),
    /// The server sent, or announced, more than `limit` bytes; nothing past the limit was read.
    #[error("the body is larger than the limit of {}", Size(*.limit))]
    TooLarge { limit: usize },
}

/// The whole body of `resp`, or an error as soon as it is known to exceed `limit` bytes: from
/// `Content-Length` before anything is read, else once the bytes read pass the limit.
pub async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // Bounded by `limit` just above; a body without Content-Length grows as it arrives.
    let mut body = BytesMut::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A limit as people write it: `64 KiB`, `16 MiB`, else in bytes.
struct Size(usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering `/sized` with a Content-Length and `/streamed` without one (chunked),
    /// both with `n` bytes.
    async fn server(n: usize) -> String {
        use axum::body::Body;
        let app = axum::Router::new()
            .route(
                "/sized",
                axum::routing::get(move || async move { vec![b'x'; n] }),
            )
            .route(
                "/streamed",
                axum::routing::get(move || async move {
                    let chunks = (0..n.div_ceil(1000)).map(move |i| {
                        Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1000.min(n - i * 1000)]))
                    });
                    Body::from_stream(futures_util::stream::iter(chunks))
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_and_longer_ones_refused_with_or_without_a_length() {
        let base = server(5000).await;
        let http = reqwest::Client::new();
        for path in ["sized", "streamed"] {
            let get = || http.get(format!("{base}/{path}")).send();
            let body = read_capped(get().await.unwrap(), 5000).await.unwrap();
            assert_eq!(body.len(), 5000, "{path}");
            let e = read_capped(get().await.unwrap(), 4999).await.unwrap_err();
            assert!(
                matches!(e, BodyError::TooLarge { limit: 4999 }),
                "{path}: {e}"
            );
        }
    }

    #[test]
    fn oversized_bodies_name_the_limit() {
        assert_eq!(
            BodyError::TooLarge {
                limit: MAX_ERROR_BODY_BYTES
            }
            .to_string(),
            "the body is larger than the limit of 64 KiB"
        );
        assert_eq!(Size(1000).to_string(), "1000 bytes");
    }
}
