//! Bounded exponential backoff with full jitter for transient cloud errors, and the pacing of
//! dataset metadata writes (BigQuery allows 5 per dataset per 10 s).

use super::CloudError;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Backoff settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap on one delay.
    pub max: Duration,
    /// Attempts in all, the first included.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            attempts: 6,
        }
    }
}

impl Backoff {
    /// The delay before retry `n` (1-based): uniformly random up to `initial · 2^(n-1)`, capped.
    pub fn delay(&self, n: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(fastrand::f64().max(0.1))
    }
}

/// Runs `call` until it succeeds, fails with an error that is not retryable, or the attempts are
/// used up. Retries are logged.
pub async fn with_retry<T, F, Fut>(backoff: &Backoff, operation: &str, mut call: F) -> Result<T, CloudError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CloudError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < backoff.attempts => {
                let delay = backoff.delay(attempt);
                tracing::warn!(operation, attempt, delay_ms = delay.as_millis() as u64, error = %e, "transient error; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Spaces writes to the same key: at most `max` in any `window`.
#[derive(Debug)]
pub struct Pacer {
    window: Duration,
    max: usize,
    writes: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for Pacer {
    /// Four writes per dataset per 10 s: under BigQuery's five.
    fn default() -> Self {
        Pacer::new(4, Duration::from_secs(10))
    }
}

impl Pacer {
    /// At most `max` writes per key in any `window`.
    pub fn new(max: usize, window: Duration) -> Pacer {
        Pacer {
            window,
            max: max.max(1),
            writes: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a write to `key` is allowed, and records it.
    pub async fn acquire(&self, key: &str) {
        loop {
            let wait = {
                let mut writes = self.writes.lock().await;
                let q = writes.entry(key.to_string()).or_default();
                let now = Instant::now();
                while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    q.pop_front();
                }
                if q.len() < self.max {
                    q.push_back(now);
                    return;
                }
                self.window - now.duration_since(*q.front().expect("queue is full"))
            };
            tracing::debug!(key, wait_ms = wait.as_millis() as u64, "pacing dataset write");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacer_allows_max_writes_per_window() {
        let pacer = Pacer::new(4, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..4 {
            pacer.acquire("p.d").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        pacer.acquire("p.d").await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        pacer.acquire("p.other").await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(10),
            "other datasets are not held up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_transient_errors() {
        let transient = || CloudError::Api {
            api: "bigquery",
            operation: "x".into(),
            status: 503,
            reason: String::new(),
            message: String::new(),
        };
        let mut calls = 0;
        let r: Result<u32, _> = with_retry(&Backoff::default(), "x", || {
            calls += 1;
            let fail = calls < 3;
            async move { if fail { Err(transient()) } else { Ok(7) } }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<u32, _> = with_retry(&Backoff::default(), "x", || {
            calls += 1;
            async {
                Err(CloudError::Api {
                    api: "bigquery",
                    operation: "x".into(),
                    status: 400,
                    reason: "invalid".into(),
                    message: String::new(),
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "terminal errors are not retried");

        let mut calls = 0;
        let r: Result<u32, _> = with_retry(
            &Backoff {
                attempts: 3,
                ..Backoff::default()
            },
            "x",
            || {
                calls += 1;
                async { Err(transient()) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3, "attempts are bounded");
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 10,
        };
        for _ in 0..50 {
            assert!(b.delay(1) <= Duration::from_millis(100));
            assert!(b.delay(3) <= Duration::from_millis(400));
            assert!(b.delay(9) <= Duration::from_secs(1));
        }
    }
}
