//! A throttled progress reporter that writes `jobs/<id>/progress.json`.
//!
//! Reporting only updates an in-memory value under a short lock, so it never
//! waits for storage and can be called from any thread, including rayon workers. A background tokio task
//! writes the latest value at most once per [`WRITE_INTERVAL`]; values
//! reported in between are replaced, not queued. A failed write is logged and
//! retried with exponential backoff, and never fails the task.
//! [`Progress::flush`] writes the latest value at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::protocol::{job_key, ProgressDoc, PROGRESS_FILE};
use crate::store::{Store, StoreError};

/// Minimum time between two background writes of `progress.json`: often enough
/// for a person watching, rare enough that a storage request per second per job
/// stays cheap.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// First delay before retrying a failed background write; it doubles per failure.
const RETRY_BACKOFF_START: Duration = Duration::from_secs(1);
/// Maximum delay between retries of a failed background write.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Attempts that [`Progress::flush`] makes before it gives up.
const FLUSH_ATTEMPTS: u32 = 3;
/// Delay between the attempts of [`Progress::flush`].
const FLUSH_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The progress fields that a task sets; the write time is added on write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressState {
    /// Completion in percent, from 0 to 100.
    pub percent: f64,
    /// Human-readable description of the current step.
    pub message: Option<String>,
    /// Machine-readable name of the current stage.
    pub stage: Option<String>,
    /// Items done so far.
    pub done: Option<u64>,
    /// Total items, when known.
    pub total: Option<u64>,
}

impl ProgressState {
    fn to_doc(&self) -> ProgressDoc {
        ProgressDoc {
            percent: self.percent,
            message: self.message.clone(),
            stage: self.stage.clone(),
            done: self.done,
            total: self.total,
            updated_at: Utc::now(),
        }
    }
}

/// Clamps a percentage into 0..=100; NaN becomes 0.
fn clamp_percent(percent: f64) -> f64 {
    if percent.is_nan() {
        0.0
    } else {
        percent.clamp(0.0, 100.0)
    }
}

/// A cloneable handle that reports a job's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    state: Arc<watch::Sender<ProgressState>>,
    flush_requests: mpsc::UnboundedSender<oneshot::Sender<Result<(), StoreError>>>,
    writes: Arc<AtomicU64>,
}

impl Progress {
    /// Starts the background writer for a job's `progress.json` on the current tokio runtime.
    pub fn start(store: Store, job_id: &str) -> Progress {
        Progress::start_with_interval(store, job_id, WRITE_INTERVAL)
    }

    /// Starts the background writer with another minimum time between writes.
    pub fn start_with_interval(store: Store, job_id: &str, interval: Duration) -> Progress {
        let (state, changes) = watch::channel(ProgressState::default());
        let (flush_requests, flush_receiver) = mpsc::unbounded_channel();
        let writes = Arc::new(AtomicU64::new(0));

        let writer = Writer {
            store,
            key: job_key(job_id, PROGRESS_FILE),
            interval,
            changes,
            flush_receiver,
            writes: writes.clone(),
        };
        tokio::spawn(writer.run());

        Progress {
            state: Arc::new(state),
            flush_requests,
            writes,
        }
    }

    /// Changes any fields of the progress in one step.
    pub fn update(&self, change: impl FnOnce(&mut ProgressState)) {
        self.state.send_modify(|state| {
            change(state);
            state.percent = clamp_percent(state.percent);
        });
    }

    /// Sets the percent (clamped to 0..=100) and the message.
    pub fn report(&self, percent: f64, message: impl Into<String>) {
        let message = message.into();
        self.update(|state| {
            state.percent = percent;
            state.message = Some(message);
        });
    }

    /// Sets the done and total counts, the percent derived from them, and the message.
    pub fn report_items(&self, done: u64, total: u64, message: impl Into<String>) {
        let message = message.into();
        let percent = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        self.update(|state| {
            state.percent = percent;
            state.done = Some(done);
            state.total = Some(total);
            state.message = Some(message);
        });
    }

    /// Sets the stage name, or clears it with `None`.
    pub fn set_stage(&self, stage: Option<&str>) {
        let stage = stage.map(str::to_owned);
        self.update(|state| state.stage = stage);
    }

    /// Returns a copy of the latest reported progress.
    pub fn current(&self) -> ProgressState {
        self.state.borrow().clone()
    }

    /// Returns how many times `progress.json` has been written.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Writes the latest progress now and waits for the write.
    ///
    /// A write that is already running finishes first, so an older value never
    /// replaces the flushed one. Failed attempts are retried a few times; the
    /// last error is returned, and the caller decides whether it matters.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, response) = oneshot::channel();
        if self.flush_requests.send(reply).is_err() {
            // The writer only stops when the runtime shuts down.
            return Ok(());
        }
        response.await.unwrap_or(Ok(()))
    }
}

/// The background task that owns the writes of `progress.json`.
struct Writer {
    store: Store,
    key: String,
    interval: Duration,
    changes: watch::Receiver<ProgressState>,
    flush_receiver: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), StoreError>>>,
    writes: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self) {
        // The first report is written at once, then at most one per interval.
        let mut next_write = Instant::now();
        let mut pending = false;
        let mut backoff = RETRY_BACKOFF_START;
        let mut failures: u32 = 0;

        loop {
            tokio::select! {
                biased;

                request = self.flush_receiver.recv() => {
                    let Some(reply) = request else { break };
                    let result = self.flush().await;
                    if result.is_ok() {
                        pending = false;
                        failures = 0;
                        backoff = RETRY_BACKOFF_START;
                    }
                    next_write = Instant::now() + self.interval;
                    // The caller may have stopped waiting, which is fine.
                    let _ = reply.send(result);
                }

                changed = self.changes.changed(), if !pending => {
                    if changed.is_err() {
                        break;
                    }
                    pending = true;
                }

                _ = tokio::time::sleep_until(next_write), if pending => {
                    match self.write_latest().await {
                        Ok(()) => {
                            pending = false;
                            failures = 0;
                            backoff = RETRY_BACKOFF_START;
                            next_write = Instant::now() + self.interval;
                        }
                        Err(error) => {
                            failures += 1;
                            tracing::warn!(
                                s3.key = %self.key,
                                attempt = failures,
                                retry_in_ms = backoff.as_millis() as u64,
                                error = %error_chain(&error),
                                "failed to write progress; will retry"
                            );
                            // `pending` stays set, so the retry writes the latest value.
                            next_write = Instant::now() + backoff;
                            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                        }
                    }
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match self.write_latest().await {
                Ok(()) => return Ok(()),
                Err(error) if attempt < FLUSH_ATTEMPTS => {
                    tracing::warn!(
                        s3.key = %self.key,
                        attempt,
                        error = %error_chain(&error),
                        "failed to flush progress; will retry"
                    );
                    attempt += 1;
                    tokio::time::sleep(FLUSH_RETRY_DELAY).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn write_latest(&mut self) -> Result<(), StoreError> {
        let doc = self.changes.borrow_and_update().to_doc();
        // Serializing a struct of plain fields cannot fail.
        let bytes = serde_json::to_vec_pretty(&doc).expect("ProgressDoc serializes");
        self.store.put(&self.key, bytes).await?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Formats an error with its chain of sources, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from_url(&format!("file://{}", dir.path().display())).unwrap();
        (dir, store)
    }

    async fn read_progress(store: &Store) -> ProgressDoc {
        let bytes = store.get("jobs/j/progress.json").await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn percent_clamping_handles_extremes() {
        assert_eq!(clamp_percent(-5.0), 0.0);
        assert_eq!(clamp_percent(150.0), 100.0);
        assert_eq!(clamp_percent(f64::NAN), 0.0);
        assert_eq!(clamp_percent(42.5), 42.5);
    }

    #[tokio::test]
    async fn throttle_drops_intermediate_updates() {
        let (_dir, store) = temp_store();
        let progress = Progress::start(store.clone(), "j");

        let started = std::time::Instant::now();
        for step in 0..=1000 {
            progress.report(step as f64 / 10.0, format!("step {step}"));
            if step % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        let elapsed = started.elapsed();
        // Wait for the background writer to catch up with the last value.
        tokio::time::sleep(WRITE_INTERVAL + Duration::from_millis(300)).await;

        let writes = progress.write_count();
        let max_writes = elapsed.as_secs() + 3;
        assert!(writes >= 1, "no write happened");
        assert!(
            writes <= max_writes,
            "{writes} writes in {elapsed:?}, expected at most {max_writes}"
        );
        let doc = read_progress(&store).await;
        assert_eq!(doc.percent, 100.0);
        assert_eq!(doc.message.as_deref(), Some("step 1000"));
    }

    #[tokio::test]
    async fn flush_writes_latest_at_once() {
        let (_dir, store) = temp_store();
        let progress = Progress::start(store.clone(), "j");
        progress.report(10.0, "first");
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.report_items(3, 4, "third of four");

        progress.flush().await.unwrap();

        let doc = read_progress(&store).await;
        assert_eq!(doc.percent, 75.0);
        assert_eq!(doc.done, Some(3));
        assert_eq!(doc.total, Some(4));
        assert_eq!(doc.message.as_deref(), Some("third of four"));
    }

    #[tokio::test]
    async fn failed_write_retried_later() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the `jobs` folder should be makes every write fail.
        std::fs::write(dir.path().join("jobs"), b"").unwrap();
        let store = Store::from_url(&format!("file://{}", dir.path().display())).unwrap();
        let progress = Progress::start_with_interval(store.clone(), "j", Duration::from_millis(50));

        progress.report(50.0, "halfway");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(progress.write_count(), 0);

        std::fs::remove_file(dir.path().join("jobs")).unwrap();
        progress.report(60.0, "later");
        tokio::time::sleep(RETRY_BACKOFF_START * 2 + Duration::from_millis(500)).await;

        assert!(progress.write_count() >= 1, "the retry never wrote");
        let doc = read_progress(&store).await;
        assert_eq!(doc.percent, 60.0);
    }
}
