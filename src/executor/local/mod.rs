//! The local executor: runs each Job's containers as child processes.
//!
//! It honours the parts of a Job that make sense on one machine:
//! `command`/`args`/`env`, init containers, `backoffLimit` (failed attempts
//! retried with a doubling pause), `activeDeadlineSeconds` (counted from the
//! first attempt's start; the job fails with `DeadlineExceeded`) and
//! `terminationGracePeriodSeconds` (SIGTERM, then SIGKILL). Images and
//! resource requests are ignored. At most `max_running` jobs run at once; the
//! rest wait as `queued`.
//!
//! Each attempt gets a fresh working folder, as each pod in a cluster gets a
//! fresh filesystem, removed when the job ends. Output of all attempts goes to
//! one log file per job.

pub mod logs;
pub mod pod;
pub mod process;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::pod::{ContainerPlan, PodPlan};
use self::process::{run_container, ContainerExit, LogSink};
use super::{
    CancelOutcome, ExecStatus, Executor, ExecutorError, JobSpec, LogOptions, LogStream,
    TerminalEvent,
};
use crate::job::{JobId, JobState, Reason};

/// Pause before the first retry; it doubles per failure, as Kubernetes'
/// 10 s back-off does, but shorter because local attempts start at once.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Maximum pause between retries.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// Maximum wait for running jobs at shutdown before the gateway exits anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(35);

/// Settings of the local executor.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Folder for working folders (`work/<id>/`) and logs (`logs/<id>.log`).
    pub data_dir: PathBuf,
    /// Jobs allowed to run at once.
    pub max_running: usize,
    /// Folders searched for programs before `PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// Pause before the first retry.
    pub retry_backoff: Duration,
}

impl LocalConfig {
    /// Returns the folders where a bare program name is looked up first: the
    /// gateway binary's folder, so `jobgate-worker` built beside it is found.
    pub fn default_bin_dirs() -> Vec<PathBuf> {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
            .into_iter()
            .collect()
    }
}

#[derive(Debug)]
struct Entry {
    status: Mutex<ExecStatus>,
    /// Cancelled by a cancel request.
    cancel: CancellationToken,
    /// Cancelled once the job is terminal.
    finished: CancellationToken,
}

impl Entry {
    fn status(&self) -> ExecStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut ExecStatus)) {
        change(
            &mut self
                .status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }
}

/// Executor that runs jobs as child processes.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LocalConfig,
    jobs: Mutex<HashMap<JobId, Arc<Entry>>>,
    slots: Arc<Semaphore>,
    events: mpsc::UnboundedSender<TerminalEvent>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

/// Outcome of one attempt.
enum AttemptEnd {
    Succeeded,
    Failed { reason: Reason, message: String },
    Cancelled,
    DeadlineExceeded,
    Shutdown,
}

impl LocalExecutor {
    /// Creates the executor; terminal events go to `events`.
    pub fn new(config: LocalConfig, events: mpsc::UnboundedSender<TerminalEvent>) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_running.max(1)));
        Self {
            inner: Arc::new(Inner {
                config,
                jobs: Mutex::new(HashMap::new()),
                slots,
                events,
                shutdown: CancellationToken::new(),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    fn entry(&self, id: JobId) -> Option<Arc<Entry>> {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
            .cloned()
    }

    fn log_path(&self, id: JobId) -> PathBuf {
        self.inner.config.data_dir.join("logs").join(format!("{id}.log"))
    }

    fn work_dir(&self, id: JobId) -> PathBuf {
        self.inner.config.data_dir.join("work").join(id.to_string())
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn submit(&self, spec: JobSpec) -> Result<(), ExecutorError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ExecutorError::Unavailable {
                why: "the gateway is shutting down".into(),
                retry_after: Some(5),
            });
        }
        let plan = PodPlan::from_job(&spec.job, &self.inner.config.bin_dirs)?;
        let log = LogSink::open(self.log_path(spec.id))
            .await
            .map_err(|source| ExecutorError::Io {
                operation: "open the job log",
                source,
            })?;
        let entry = Arc::new(Entry {
            status: Mutex::new(ExecStatus::queued()),
            cancel: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(spec.id, entry.clone());
        let span = tracing::info_span!("job", job.id = %spec.id, template = %spec.template);
        let executor = self.clone();
        self.inner.tasks.spawn(
            async move { executor.run_job(spec.id, plan, entry, log).await }.instrument(span),
        );
        Ok(())
    }

    async fn status(&self, id: JobId) -> Result<Option<ExecStatus>, ExecutorError> {
        Ok(self.entry(id).map(|entry| entry.status()))
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, ExecutorError> {
        let Some(entry) = self.entry(id) else {
            return Ok(CancelOutcome::NotFound);
        };
        let status = entry.status();
        if status.state.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished(status));
        }
        entry.cancel.cancel();
        Ok(CancelOutcome::Cancelling)
    }

    async fn logs(&self, id: JobId, options: LogOptions) -> Result<LogStream, ExecutorError> {
        let path = self.log_path(id);
        let finished = match self.entry(id) {
            Some(entry) if options.follow => Some(entry.finished.clone()),
            Some(_) => None,
            None if path.exists() => None,
            None => return Err(ExecutorError::NotFound { id }),
        };
        logs::stream(path, options.tail, finished)
            .await
            .map_err(|source| ExecutorError::Io {
                operation: "read the job log",
                source,
            })
    }

    async fn forget(&self, id: JobId) {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&id);
    }

    fn lost_job(&self) -> (Reason, String) {
        (
            Reason::GatewayRestarted,
            "the gateway stopped while this job was queued or running, and the local \
             executor's processes stop with it; submit the job again"
                .into(),
        )
    }

    async fn check(&self) -> Result<(), ExecutorError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ExecutorError::Unavailable {
                why: "the gateway is shutting down".into(),
                retry_after: None,
            });
        }
        Ok(())
    }

    async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                wait_seconds = SHUTDOWN_WAIT.as_secs(),
                "jobs did not stop in time; exiting anyway, the kernel kills what is left"
            );
        }
    }
}

impl LocalExecutor {
    async fn run_job(&self, id: JobId, plan: PodPlan, entry: Arc<Entry>, log: LogSink) {
        let end = self.run_attempts(id, &plan, &entry, &log).await;
        let (state, reason, message) = match end {
            AttemptEnd::Succeeded => (JobState::Succeeded, None, None),
            AttemptEnd::Failed { reason, message } => (JobState::Failed, Some(reason), Some(message)),
            AttemptEnd::Cancelled => (JobState::Cancelled, None, Some("cancelled by request".into())),
            AttemptEnd::DeadlineExceeded => (
                JobState::Failed,
                Some(Reason::DeadlineExceeded),
                Some(format!(
                    "job was active longer than its activeDeadlineSeconds ({} s)",
                    plan.active_deadline.unwrap_or_default().as_secs()
                )),
            ),
            AttemptEnd::Shutdown => (
                JobState::Failed,
                Some(Reason::GatewayRestarted),
                Some("the gateway shut down while this job was running; submit it again".into()),
            ),
        };
        entry.update(|status| {
            status.state = state;
            status.reason = reason;
            status.message = message;
            status.finished_at = Some(Utc::now());
        });
        let _ = tokio::fs::remove_dir_all(self.work_dir(id)).await;
        let status = entry.status();
        tracing::info!(state = %status.state, reason = status.reason.map_or("none", |r| r.as_str()), attempts = status.attempts, "job finished");
        entry.finished.cancel();
        // NB: the receiver only goes away when the gateway stops, and then
        // the startup recovery records this job instead.
        let _ = self.inner.events.send(TerminalEvent { id, status });
    }

    async fn run_attempts(
        &self,
        id: JobId,
        plan: &PodPlan,
        entry: &Entry,
        log: &LogSink,
    ) -> AttemptEnd {
        let shutdown = &self.inner.shutdown;
        let _slot = tokio::select! {
            slot = self.inner.slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return AttemptEnd::Shutdown,
            },
            () = entry.cancel.cancelled() => return AttemptEnd::Cancelled,
            () = shutdown.cancelled() => return AttemptEnd::Shutdown,
        };
        let started = tokio::time::Instant::now();
        let deadline = plan.active_deadline.map(|limit| started + limit);
        entry.update(|status| {
            status.state = JobState::Running;
            status.started_at = Some(Utc::now());
        });
        tracing::info!("job started");

        let mut failures: u32 = 0;
        loop {
            let attempt = failures + 1;
            entry.update(|status| status.attempts = attempt);
            let stop = CancellationToken::new();
            let cwd = self.work_dir(id).join(format!("attempt-{attempt}"));
            let run = run_pod(plan, cwd, log, &stop, attempt);
            tokio::pin!(run);
            let sleep_until_deadline = sleep_until(deadline);
            tokio::pin!(sleep_until_deadline);
            let interrupted = tokio::select! {
                result = &mut run => {
                    match result {
                        Ok(()) => return AttemptEnd::Succeeded,
                        Err((reason, message)) => {
                            failures += 1;
                            if failures > plan.backoff_limit {
                                let message = format!("{message} (attempt {attempt} of {})", plan.backoff_limit + 1);
                                return AttemptEnd::Failed { reason, message };
                            }
                            tracing::info!(attempt, %reason, %message, "attempt failed; retrying");
                            None
                        }
                    }
                }
                () = entry.cancel.cancelled() => Some(AttemptEnd::Cancelled),
                () = &mut sleep_until_deadline => Some(AttemptEnd::DeadlineExceeded),
                () = shutdown.cancelled() => Some(AttemptEnd::Shutdown),
            };
            if let Some(end) = interrupted {
                stop.cancel();
                let _ = run.await;
                return end;
            }
            let pause = self
                .inner
                .config
                .retry_backoff
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_RETRY_BACKOFF);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = entry.cancel.cancelled() => return AttemptEnd::Cancelled,
                () = &mut sleep_until_deadline => return AttemptEnd::DeadlineExceeded,
                () = shutdown.cancelled() => return AttemptEnd::Shutdown,
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs one attempt: init containers in order, then the containers side by
/// side. Returns the failure reason and message of the first failing container.
async fn run_pod(
    plan: &PodPlan,
    cwd: PathBuf,
    log: &LogSink,
    stop: &CancellationToken,
    attempt: u32,
) -> Result<(), (Reason, String)> {
    tokio::fs::create_dir_all(&cwd)
        .await
        .map_err(|e| (Reason::StartError, format!("creating the working folder failed: {e}")))?;
    log.write(format!("[jobgate: attempt {attempt} started]\n").as_bytes())
        .await;
    for container in &plan.init_containers {
        run_one(container, &cwd, log, stop, plan.grace).await?;
        if stop.is_cancelled() {
            return Ok(());
        }
    }
    let results = futures::future::join_all(
        plan.containers
            .iter()
            .map(|container| run_one(container, &cwd, log, stop, plan.grace)),
    )
    .await;
    results.into_iter().collect()
}

async fn run_one(
    container: &ContainerPlan,
    cwd: &std::path::Path,
    log: &LogSink,
    stop: &CancellationToken,
    grace: Duration,
) -> Result<(), (Reason, String)> {
    let name = &container.name;
    let Some(command) = container.command(cwd) else {
        return Err((
            Reason::StartError,
            format!(
                "container {name:?}: executable {:?} not found next to the gateway binary or on PATH",
                container.program_name
            ),
        ));
    };
    let exit = run_container(&command, log, stop, grace)
        .await
        .map_err(|e| {
            (
                Reason::StartError,
                format!("container {name:?}: starting {:?} failed: {e}", container.program_name),
            )
        })?;
    if exit.success() || stop.is_cancelled() {
        return Ok(());
    }
    Err((Reason::Error, failure_message(name, &exit)))
}

fn failure_message(container: &str, exit: &ContainerExit) -> String {
    let mut message = format!("container {container:?} failed with {}", exit.describe());
    if !exit.stderr_tail.is_empty() {
        message.push_str("; last stderr lines:\n");
        message.push_str(&exit.stderr_tail.join("\n"));
    }
    message
}
