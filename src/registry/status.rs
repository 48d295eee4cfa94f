//! What an HTTP status says about trying again: shared by every client of the relay, with no
//! other part of the registry layer below it.

/// Whether an HTTP status says that the same request, sent again later, can succeed without
/// anyone changing anything: 408 and 429 (the server was busy or slow), and 5xx (it failed on its
/// own side). 401/403 are not: they need someone to grant access first. Every client of the
/// relay (registries, token services, Google APIs) decides retries with this one function, so a
/// status cannot be retried by one and given up on by another.
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..=599).contains(&status)
}

/// The answers by which a server says it is over its limit (Artifact Registry's quota is
/// 429; a registry behind a load balancer sheds with 503): they pace the host, and their
/// `Retry-After` pauses it.
pub fn asks_to_slow_down(status: u16) -> bool {
    matches!(status, 429 | 503)
}
