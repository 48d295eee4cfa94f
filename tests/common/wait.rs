//! Waiting for a condition instead of for a while: a fixed sleep is either too short on a busy
//! machine (the test fails for nothing) or longer than needed everywhere else.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it returns `Ok`, and returns that value. Past `within`, panics with
/// `what` and the last `Err`, which should describe what was seen instead.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_polling(POLL, within, what, check).await
}

/// [`eventually`], polling `every` (for a condition that holds only briefly).
pub async fn eventually_polling<T, F, Fut>(
    every: Duration,
    within: Duration,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}; last seen: {last}");
        }
        tokio::time::sleep(every).await;
    }
}
