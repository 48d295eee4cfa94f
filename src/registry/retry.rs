//! Retries with exponential backoff and full jitter, one pause shared per registry host: when a
//! registry says "slow down" (429, 503, `Retry-After`), every worker talking to it waits, rather
//! than each one discovering the limit on its own.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use super::error::RegistryError;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// First backoff; doubles each attempt.
    pub base_delay: Duration,
    /// Longest computed backoff.
    pub max_delay: Duration,
    /// Longest wait a `Retry-After` can impose; a registry asking for more is treated as asking
    /// for this much, so one answer cannot park the relay past Pub/Sub's ack deadline.
    pub max_retry_after: Duration,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// A registry host's shared pause.
#[derive(Debug, Default)]
pub struct Backoff {
    paused_until: std::sync::Mutex<Option<Instant>>,
}

impl Backoff {
    /// Wait out a pause set after this host said "slow down".
    pub async fn wait(&self) {
        let until = self.paused_until.lock().ok().and_then(|g| *g);
        // A pause long over is not waited for: a sleep until a past instant still waits for
        // the timer's next millisecond tick, on every request.
        if let Some(t) = until.filter(|t| *t > Instant::now()) {
            tokio::time::sleep_until(t.into()).await;
        }
    }

    /// Whether a pause is in force now.
    pub fn is_paused(&self) -> bool {
        self.paused_until
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t > Instant::now())
    }

    /// Hold every request to this host for `d` (extends, never shortens, a pause).
    pub fn pause(&self, d: Duration) {
        if let Ok(mut g) = self.paused_until.lock() {
            let until = Instant::now() + d;
            if g.is_none_or(|cur| cur < until) {
                *g = Some(until);
            }
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, err: &RegistryError) -> Duration {
        if let Some(ra) = err.retry_after() {
            return ra.min(self.max_retry_after);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        // Full jitter: spreads workers that failed together so they do not return together.
        exp.mul_f64(fastrand::f64())
    }

    /// Run `op` until it succeeds, fails for good, or the budget is spent. `op` is the whole
    /// unit of work (a blob transfer re-opens its source stream each time). The per-host pause
    /// is applied by the client itself, to the host that answered 429/503 with `Retry-After`;
    /// this loop only sleeps its own backoff between attempts.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    attempt += 1;
                    if !e.is_retryable() || attempt >= self.max_attempts {
                        return Err(e);
                    }
                    let d = self.delay(attempt - 1, &e);
                    if start.elapsed() + d > self.max_elapsed {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, delay_ms = d.as_millis() as u64, "retrying");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`.
pub fn parse_retry_after(v: &str, cap: Duration) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::Op;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(s: u16, retry_after: Option<Duration>) -> RegistryError {
        RegistryError::Status {
            op: Op {
                method: "GET",
                registry: "r".into(),
                repository: "a".into(),
                object: "manifest v1".into(),
            },
            status: s,
            codes: Box::new([]),
            retry_after,
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates_and_is_capped() {
        let cap = Duration::from_secs(60);
        assert_eq!(parse_retry_after("3", cap), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("9999", cap), Some(cap));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&soon, cap).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon", cap), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_until_success_honouring_retry_after() {
        let policy = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let t0 = tokio::time::Instant::now();
        let v = policy
            .run(|_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(status(429, Some(Duration::from_secs(2))))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(t0.elapsed() >= Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_pause_holds_every_worker_until_it_ends() {
        let backoff = Backoff::default();
        backoff.pause(Duration::from_secs(3));
        backoff.pause(Duration::from_secs(1)); // a shorter pause does not cut the longer one
        let t0 = tokio::time::Instant::now();
        backoff.wait().await;
        assert!(t0.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried_and_attempts_are_bounded() {
        let policy = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let e = policy
            .run(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(status(403, None))
            })
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(403));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        policy
            .run(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(status(503, None))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), policy.max_attempts);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_token_service_is_retried_and_a_refusing_one_is_not() {
        use crate::registry::auth::AuthError;
        let token_error = |status| RegistryError::Auth {
            op: Op {
                method: "GET",
                registry: "r".into(),
                repository: "a".into(),
                object: "manifest v1".into(),
            },
            auth: Box::new(AuthError::Status {
                service: "token service https://auth.example/token".into(),
                status,
                hint: None,
            }),
        };
        let policy = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let v = policy
            .run(|_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(token_error(503))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 3));
        calls.store(0, Ordering::SeqCst);
        let e = policy
            .run(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(token_error(401))
            })
            .await
            .unwrap_err();
        assert!(e.is_denied(), "{e}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
