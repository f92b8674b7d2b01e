//! Executors run rendered Jobs and report their state.
//!
//! [`Executor`] is the one interface; [`local::LocalExecutor`] runs a Job's
//! containers as child processes on this machine. An executor reports each
//! job's [`ExecStatus`] on request and sends a [`TerminalEvent`] when a job
//! finishes, so that the gateway can record the final view in the store.

pub mod kubernetes;
pub mod local;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use k8s_openapi::api::batch::v1::Job;

use crate::job::{JobId, JobState, Reason};

/// A rendered job, ready to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job id.
    pub id: JobId,
    /// Template name.
    pub template: String,
    /// The decorated `batch/v1` Job.
    pub job: Job,
}

/// A job's state as the executor reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecStatus {
    /// Lifecycle state.
    pub state: JobState,
    /// Reason the job failed or is stuck.
    pub reason: Option<Reason>,
    /// Human-readable detail for `reason`.
    pub message: Option<String>,
    /// Start of the first attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// Time the job reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts started so far.
    pub attempts: u32,
}

impl ExecStatus {
    /// Status of a job that was accepted and waits to run.
    pub fn queued() -> Self {
        Self {
            state: JobState::Queued,
            reason: None,
            message: None,
            started_at: None,
            finished_at: None,
            attempts: 0,
        }
    }
}

/// Sent once when a job reaches a terminal state.
#[derive(Debug, Clone)]
pub struct TerminalEvent {
    /// The job.
    pub id: JobId,
    /// Its final status.
    pub status: ExecStatus,
}

/// Outcome of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job was queued or running and is being stopped.
    Cancelling,
    /// The job had already finished; nothing changed.
    AlreadyFinished(ExecStatus),
    /// The executor does not know the job.
    NotFound,
}

/// Options of a log request.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Only the last `tail` lines; all lines when `None`.
    pub tail: Option<usize>,
    /// Keep streaming new lines until the job finishes.
    pub follow: bool,
}

/// A stream of log bytes.
pub type LogStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Errors of executor operations.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The rendered Job cannot run on this executor; an operator must fix the template.
    #[error("job cannot run on the {executor} executor: {why}")]
    Unrunnable {
        /// Executor name.
        executor: &'static str,
        /// Problem in the manifest and its fix.
        why: String,
    },
    /// The executor cannot take work right now; the caller may retry.
    #[error("executor unavailable: {why}")]
    Unavailable {
        /// Unavailable dependency and cause.
        why: String,
        /// Seconds after which a retry may succeed.
        retry_after: Option<u64>,
    },
    /// The job is not known.
    #[error("job {id} not found in the executor")]
    NotFound {
        /// Job id.
        id: JobId,
    },
    /// An I/O operation of the executor failed.
    #[error("executor {operation} failed")]
    Io {
        /// Operation that failed.
        operation: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs jobs and reports their state.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Returns the executor's name for logs and errors, such as `local`.
    fn name(&self) -> &'static str;

    /// Starts a job. On error nothing of the job remains in the executor.
    async fn submit(&self, spec: JobSpec) -> Result<(), ExecutorError>;

    /// Returns the current status of a job, or `None` when the executor does
    /// not know it (never submitted here, or already forgotten).
    async fn status(&self, id: JobId) -> Result<Option<ExecStatus>, ExecutorError>;

    /// Asks a job to stop.
    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, ExecutorError>;

    /// Streams a job's container logs.
    async fn logs(&self, id: JobId, options: LogOptions) -> Result<LogStream, ExecutorError>;

    /// Drops what the executor keeps of a finished job, once the gateway has
    /// recorded its final view.
    async fn forget(&self, id: JobId);

    /// Returns the reason and message for a job that the store lists as
    /// unfinished but the executor does not know.
    fn lost_job(&self) -> (Reason, String);

    /// Returns how long after its submission a job may be unknown to this
    /// executor without being lost. Another replica may have created it,
    /// and this one's watch not shown it yet; until then it is queued.
    fn visibility_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Checks that the executor can take work.
    async fn check(&self) -> Result<(), ExecutorError>;

    /// Stops every running job and waits for them to end, within the
    /// executor's own grace period.
    async fn shutdown(&self);
}
