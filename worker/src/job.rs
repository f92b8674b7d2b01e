//! The [`Job`] handle: a worker's parameters, progress, outputs and result.
//!
//! A worker's life with this SDK:
//!
//! 1. [`Job::from_env`] reads `JOBGATE_JOB_ID`, `JOBGATE_STORE` and
//!    `JOBGATE_STORE_RETRY_SECONDS`, loads `jobs/<id>/request.json` and starts
//!    the progress writer.
//! 2. [`Job::parameters`] deserializes the request's parameters into the
//!    task's own struct.
//! 3. The task reports through [`Job::progress`] and writes outputs with
//!    [`Job::write_output`] or [`Job::write_output_file`].
//! 4. [`Job::finish`] writes `result.json` after every output, or
//!    [`Job::stop`] records why the job ended without one.
//!
//! Reads of the request and inputs and writes of outputs and the result are
//! retried after transient store errors under the job's [`RetryPolicy`], so a
//! storage outage shorter than its time does not fail the task. Progress
//! writes have their own retries in the background.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::progress::{error_chain, Progress};
use crate::protocol::{
    job_key, output_key, validate_output_name, OutputDoc, RequestDoc, ResultDoc, ENV_JOB_ID,
    ENV_STORE, REQUEST_FILE, RESULT_FILE,
};
use crate::store::{RetryPolicy, Store, StoreError};

/// Errors of the job handle.
#[derive(Debug, Error)]
pub enum JobError {
    /// A required environment variable is not set.
    #[error("environment variable {name} is not set; the gateway sets it for every job")]
    MissingEnv {
        /// The variable's name.
        name: &'static str,
    },
    /// The store URL or a store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `request.json` is not a valid request document.
    #[error("invalid request document {key:?}")]
    InvalidRequest {
        /// The key of the request document.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The parameters do not fit the task's parameter type.
    #[error("invalid parameter {field}: {message}")]
    InvalidParameters {
        /// Path of the offending field, such as `sizes[2]`, or `.` for the whole object.
        field: String,
        /// Reason the value was rejected.
        message: String,
    },
    /// An output name is not a single safe path segment.
    #[error("invalid output name: {reason}")]
    InvalidOutputName {
        /// Reason the name was rejected.
        reason: String,
    },
    /// The job was stopped, so it takes no more outputs and no result.
    #[error("the job was stopped; no outputs or result are written after a stop")]
    Stopped,
    /// `finish` was called twice.
    #[error("the job already finished")]
    AlreadyFinished,
}

/// Life-cycle phase of a job, behind a lock so that `finish` and `stop` exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Finished,
    Stopped,
}

/// Result of [`Job::stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The job was running and is now stopped without a result.
    Stopped,
    /// The job had already written its result, so the stop changed nothing.
    AlreadyFinished,
}

/// A running job: a cheap, cloneable handle shared by every part of a worker.
#[derive(Debug, Clone)]
pub struct Job {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: String,
    store: Store,
    retry: RetryPolicy,
    request: RequestDoc,
    progress: Progress,
    outputs: std::sync::Mutex<Vec<OutputDoc>>,
    phase: Mutex<Phase>,
}

impl Job {
    /// Opens the job named by `JOBGATE_JOB_ID` in the store named by
    /// `JOBGATE_STORE`, retrying for `JOBGATE_STORE_RETRY_SECONDS`.
    pub async fn from_env() -> Result<Job, JobError> {
        let id = read_env(ENV_JOB_ID)?;
        let store = Store::from_url(&read_env(ENV_STORE)?)?;
        let retry = RetryPolicy::from_env()?;
        Job::open_with_retry(store, &id, retry).await
    }

    /// Opens a job in a store with the default [`RetryPolicy`]: loads its
    /// request and starts its progress writer.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn open(store: Store, id: &str) -> Result<Job, JobError> {
        Job::open_with_retry(store, id, RetryPolicy::default()).await
    }

    /// Opens a job in a store with a retry policy for its reads and writes.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn open_with_retry(
        store: Store,
        id: &str,
        retry: RetryPolicy,
    ) -> Result<Job, JobError> {
        let key = job_key(id, REQUEST_FILE);
        let bytes = retry.run("get", &key, || store.get(&key)).await?;
        let request: RequestDoc = serde_json::from_slice(&bytes)
            .map_err(|source| JobError::InvalidRequest { key, source })?;

        let progress = Progress::start(store.clone(), id);
        Ok(Job {
            inner: Arc::new(Inner {
                id: id.to_owned(),
                store,
                retry,
                request,
                progress,
                outputs: std::sync::Mutex::new(Vec::new()),
                phase: Mutex::new(Phase::Running),
            }),
        })
    }

    /// Returns the job id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Returns the store that contains the job's documents and inputs.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Returns the request record that the gateway wrote at submit.
    pub fn request(&self) -> &RequestDoc {
        &self.inner.request
    }

    /// Deserializes the request's parameters into the task's parameter type.
    pub fn parameters<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_path_to_error::deserialize(&self.inner.request.parameters).map_err(|error| {
            JobError::InvalidParameters {
                field: error.path().to_string(),
                message: error.inner().to_string(),
            }
        })
    }

    /// Returns a handle to the job's progress reporter.
    pub fn progress(&self) -> &Progress {
        &self.inner.progress
    }

    /// Returns the policy for retrying store operations after transient errors.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// Downloads an input object, such as an upload, into a local file and returns its size.
    pub async fn fetch_input(&self, key: &str, path: &Path) -> Result<u64, JobError> {
        let store = &self.inner.store;
        let size = self
            .inner
            .retry
            .run("get", key, || store.get_to_file(key, path))
            .await?;
        Ok(size)
    }

    /// Writes an output from memory; the content type follows the name's extension.
    pub async fn write_output(
        &self,
        name: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<OutputDoc, JobError> {
        self.check_output_name(name)?;
        self.check_running().await?;
        let bytes: Bytes = bytes.into();
        let size = bytes.len() as u64;
        let key = output_key(&self.inner.id, name);
        let store = &self.inner.store;
        self.inner
            .retry
            .run("put", &key, || store.put(&key, bytes.clone()))
            .await?;
        Ok(self.record_output(name, size))
    }

    /// Copies a local file into an output without reading it into memory.
    pub async fn write_output_file(&self, name: &str, path: &Path) -> Result<OutputDoc, JobError> {
        self.check_output_name(name)?;
        self.check_running().await?;
        let key = output_key(&self.inner.id, name);
        let store = &self.inner.store;
        let size = self
            .inner
            .retry
            .run("put", &key, || store.put_file(&key, path))
            .await?;
        Ok(self.record_output(name, size))
    }

    /// Returns the outputs written so far.
    pub fn outputs(&self) -> Vec<OutputDoc> {
        self.lock_outputs().clone()
    }

    /// Completes the job: flushes progress at 100 percent, then writes `result.json`.
    ///
    /// The result is written last, after every output, so its presence means the
    /// outputs are complete. A failed progress flush is logged and does not stop
    /// the result from being written.
    pub async fn finish(&self, summary: serde_json::Value) -> Result<ResultDoc, JobError> {
        let mut phase = self.inner.phase.lock().await;
        match *phase {
            Phase::Running => {}
            Phase::Finished => return Err(JobError::AlreadyFinished),
            Phase::Stopped => return Err(JobError::Stopped),
        }

        self.inner.progress.update(|state| {
            state.percent = 100.0;
            state.message = Some("finished".into());
        });
        if let Err(error) = self.inner.progress.flush().await {
            tracing::warn!(job.id = %self.inner.id, error = %error_chain(&error), "failed to write final progress");
        }

        let result = ResultDoc {
            summary,
            outputs: self.outputs(),
            finished_at: Utc::now(),
        };
        // Serializing a struct of plain fields and JSON values cannot fail.
        let bytes = Bytes::from(serde_json::to_vec_pretty(&result).expect("ResultDoc serializes"));
        let key = job_key(&self.inner.id, RESULT_FILE);
        let store = &self.inner.store;
        self.inner
            .retry
            .run("put", &key, || store.put(&key, bytes.clone()))
            .await?;
        *phase = Phase::Finished;
        Ok(result)
    }

    /// Ends the job without a result: writes the message as the last progress.
    ///
    /// Use it when the worker was stopped by a signal or failed. Outputs and
    /// `finish` are rejected afterwards. When `finish` already wrote the result,
    /// nothing changes and [`StopOutcome::AlreadyFinished`] is returned.
    pub async fn stop(&self, message: &str) -> StopOutcome {
        let mut phase = self.inner.phase.lock().await;
        if *phase == Phase::Finished {
            return StopOutcome::AlreadyFinished;
        }
        *phase = Phase::Stopped;

        let message = message.to_owned();
        self.inner
            .progress
            .update(|state| state.message = Some(message));
        if let Err(error) = self.inner.progress.flush().await {
            tracing::warn!(job.id = %self.inner.id, error = %error_chain(&error), "failed to write last progress");
        }
        StopOutcome::Stopped
    }

    fn check_output_name(&self, name: &str) -> Result<(), JobError> {
        validate_output_name(name).map_err(|reason| JobError::InvalidOutputName { reason })
    }

    async fn check_running(&self) -> Result<(), JobError> {
        match *self.inner.phase.lock().await {
            Phase::Running => Ok(()),
            Phase::Finished => Err(JobError::AlreadyFinished),
            Phase::Stopped => Err(JobError::Stopped),
        }
    }

    /// Adds an output to the list; writing a name again replaces the earlier entry,
    /// as it replaced the object.
    fn record_output(&self, name: &str, size: u64) -> OutputDoc {
        let doc = OutputDoc {
            name: name.to_owned(),
            size,
            content_type: content_type_of(name),
        };
        let mut outputs = self.lock_outputs();
        match outputs.iter_mut().find(|output| output.name == name) {
            Some(existing) => *existing = doc.clone(),
            None => outputs.push(doc.clone()),
        }
        doc
    }

    fn lock_outputs(&self) -> std::sync::MutexGuard<'_, Vec<OutputDoc>> {
        // The list is only pushed to under the lock, so a panic elsewhere cannot
        // leave it half-updated.
        self.inner
            .outputs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns the MIME type for a file name's extension, or `application/octet-stream`.
pub fn content_type_of(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

fn read_env(name: &'static str) -> Result<String, JobError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(JobError::MissingEnv { name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProgressDoc;

    async fn job_in_temp_store(parameters: serde_json::Value) -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from_url(&format!("file://{}", dir.path().display())).unwrap();
        let request = RequestDoc {
            id: "j".into(),
            template: "test".into(),
            parameters,
            labels: Default::default(),
            created_at: Utc::now(),
        };
        store
            .put("jobs/j/request.json", serde_json::to_vec(&request).unwrap())
            .await
            .unwrap();
        let job = Job::open(store, "j").await.unwrap();
        (dir, job)
    }

    #[test]
    fn content_type_follows_extension() {
        assert_eq!(content_type_of("a-256.jpg"), "image/jpeg");
        assert_eq!(content_type_of("a.webp"), "image/webp");
        assert_eq!(content_type_of("a.gz"), "application/gzip");
        assert_eq!(content_type_of("noextension"), "application/octet-stream");
    }

    #[tokio::test]
    async fn parameters_error_names_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Params {
            quality: u8,
        }
        let (_dir, job) = job_in_temp_store(serde_json::json!({"quality": "high"})).await;
        let error = job.parameters::<Params>().unwrap_err();
        assert!(error.to_string().contains("quality"), "{error}");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[tokio::test]
    async fn finish_writes_result_with_outputs() {
        let (dir, job) = job_in_temp_store(serde_json::json!({})).await;
        job.write_output("a.txt", b"hello".to_vec()).await.unwrap();
        job.write_output("a.txt", b"hello!".to_vec()).await.unwrap();

        job.finish(serde_json::json!({"n": 1})).await.unwrap();

        let result: ResultDoc =
            serde_json::from_slice(&std::fs::read(dir.path().join("jobs/j/result.json")).unwrap())
                .unwrap();
        assert_eq!(result.outputs.len(), 1);
        assert_eq!(result.outputs[0].size, 6);
        assert_eq!(result.outputs[0].content_type, "text/plain");
        assert_eq!(result.summary["n"], 1);
        let progress: ProgressDoc = serde_json::from_slice(
            &std::fs::read(dir.path().join("jobs/j/progress.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(progress.percent, 100.0);
    }

    #[tokio::test]
    async fn output_name_with_slash_rejected() {
        let (_dir, job) = job_in_temp_store(serde_json::json!({})).await;
        let error = job.write_output("../x", b"x".to_vec()).await.unwrap_err();
        assert!(
            matches!(error, JobError::InvalidOutputName { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn stop_blocks_later_finish() {
        let (dir, job) = job_in_temp_store(serde_json::json!({})).await;
        assert_eq!(job.stop("stopped by SIGTERM").await, StopOutcome::Stopped);

        let error = job.finish(serde_json::json!({})).await.unwrap_err();
        assert!(matches!(error, JobError::Stopped), "{error}");
        assert!(!dir.path().join("jobs/j/result.json").exists());
    }

    #[tokio::test]
    async fn stop_after_finish_changes_nothing() {
        let (_dir, job) = job_in_temp_store(serde_json::json!({})).await;
        job.finish(serde_json::json!({})).await.unwrap();
        assert_eq!(job.stop("late").await, StopOutcome::AlreadyFinished);
    }
}
