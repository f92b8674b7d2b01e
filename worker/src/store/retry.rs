//! Retries of whole store operations while the storage is unreachable or overloaded.
//!
//! The S3 client already retries single requests a few times. This layer sits
//! on top, for the writes that decide a job's outcome (outputs and
//! `result.json`) and for the reads of its request and inputs. It retries an
//! operation that failed with a transient error (see
//! [`StoreError::is_transient`]) with capped exponential backoff until a total
//! time runs out, so that a storage outage of a few minutes does not fail a
//! task by itself. Other errors, such as a missing object or denied access,
//! are returned at once.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::StoreError;
use crate::progress::error_chain;

/// Environment variable that sets [`RetryPolicy::max_time`] in whole seconds, where 0 disables retries.
pub const ENV_RETRY_SECONDS: &str = "JOBGATE_STORE_RETRY_SECONDS";
/// Default [`RetryPolicy::max_time`]: 10 minutes, longer than a typical restart
/// or failover of an object store, shorter than the deadline of most jobs.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(600);
/// Delay before the first retry, which doubles per failure up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// Maximum delay between two retries.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Time budget and backoff for retrying a store operation after transient errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Time from the first attempt after which no new attempt starts. An attempt
    /// that is running then still finishes, so an operation can take longer by
    /// the duration of one attempt.
    pub max_time: Duration,
    /// Delay before the first retry.
    pub first_delay: Duration,
    /// Maximum delay between two retries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::with_max_time(DEFAULT_MAX_TIME)
    }
}

impl RetryPolicy {
    /// Creates a policy with the default backoff and the given total time.
    pub fn with_max_time(max_time: Duration) -> RetryPolicy {
        RetryPolicy {
            max_time,
            first_delay: FIRST_DELAY,
            max_delay: MAX_DELAY,
        }
    }

    /// Creates a policy whose total time is `JOBGATE_STORE_RETRY_SECONDS`, or the default when unset.
    pub fn from_env() -> Result<RetryPolicy, StoreError> {
        match std::env::var(ENV_RETRY_SECONDS) {
            Ok(value) if !value.trim().is_empty() => {
                let seconds = parse_seconds(&value)?;
                Ok(RetryPolicy::with_max_time(Duration::from_secs(seconds)))
            }
            _ => Ok(RetryPolicy::default()),
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not
    /// transient, or the policy's time runs out.
    ///
    /// `operation` and `key` only name the work in logs and in the error.
    /// Each retry is logged at debug level, and giving up at error level.
    pub async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut delay = self.first_delay;
        let mut attempts: u32 = 0;

        loop {
            attempts += 1;
            let error = match attempt().await {
                Ok(value) => {
                    if attempts > 1 {
                        tracing::info!(store.key = %key, operation, attempts, "store operation succeeded after retries");
                    }
                    return Ok(value);
                }
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };

            let elapsed = started.elapsed();
            if elapsed + delay > self.max_time {
                tracing::error!(
                    store.key = %key,
                    operation,
                    attempts,
                    elapsed_seconds = elapsed.as_secs(),
                    error = %error_chain(&error),
                    "giving up on a store operation after transient errors"
                );
                return Err(StoreError::RetriesExhausted {
                    operation,
                    key: key.to_owned(),
                    attempts,
                    seconds: elapsed.as_secs(),
                    source: Box::new(error),
                });
            }

            tracing::debug!(
                store.key = %key,
                operation,
                attempt = attempts,
                retry_in_ms = delay.as_millis() as u64,
                error = %error_chain(&error),
                "store operation failed with a transient error; will retry"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.max_delay);
        }
    }
}

fn parse_seconds(value: &str) -> Result<u64, StoreError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| StoreError::InvalidSetting {
            name: ENV_RETRY_SECONDS,
            value: value.to_owned(),
            reason: "expected a whole number of seconds, such as 600; 0 disables retries".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn transient_error() -> StoreError {
        StoreError::S3 {
            operation: "put",
            key: "k".into(),
            location: "s3://bucket/k".into(),
            detail: "HTTP 503 SlowDown: Please reduce your request rate.".into(),
            transient: true,
        }
    }

    fn fast_policy(max_time: Duration) -> RetryPolicy {
        RetryPolicy {
            max_time,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        }
    }

    #[test]
    fn parse_seconds_rejects_non_numbers() {
        assert_eq!(parse_seconds(" 30 ").unwrap(), 30);
        let error = parse_seconds("10m").unwrap_err();
        assert!(error.to_string().contains(ENV_RETRY_SECONDS), "{error}");
    }

    #[tokio::test]
    async fn retry_recovers_after_transient_errors() {
        let calls = Cell::new(0);
        let result = fast_policy(Duration::from_secs(5))
            .run("put", "k", || {
                calls.set(calls.get() + 1);
                let call = calls.get();
                async move {
                    if call < 3 {
                        Err(transient_error())
                    } else {
                        Ok(call)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn retry_skips_permanent_errors() {
        let calls = Cell::new(0);
        let result: Result<(), _> = fast_policy(Duration::from_secs(5))
            .run("get", "k", || {
                calls.set(calls.get() + 1);
                async { Err(StoreError::NotFound { key: "k".into() }) }
            })
            .await;
        assert!(result.unwrap_err().is_not_found());
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn retry_gives_up_after_max_time() {
        let calls = Cell::new(0);
        let started = std::time::Instant::now();
        let result: Result<(), _> = fast_policy(Duration::from_millis(200))
            .run("put", "k", || {
                calls.set(calls.get() + 1);
                async { Err(transient_error()) }
            })
            .await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, StoreError::RetriesExhausted { .. }),
            "{error:?}"
        );
        assert!(calls.get() >= 3, "only {} attempts", calls.get());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn retry_zero_time_attempts_once() {
        let calls = Cell::new(0);
        let result: Result<(), _> = fast_policy(Duration::ZERO)
            .run("put", "k", || {
                calls.set(calls.get() + 1);
                async { Err(transient_error()) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }
}
