//! The Kubernetes executor: runs each job as a `batch/v1` Job and reads its
//! state from reflectors on Jobs and Pods, so a status request makes no API
//! call.
//!
//! - Submit creates `jobgate-<id>` in the configured namespace. API errors
//!   become clear responses: 403 names the missing permission, 422 means the
//!   template renders an invalid Job, timeouts, 429 and 5xx are retryable.
//!   The client does not retry by itself, so a caller gets 503 at once
//!   rather than waiting through the client's backoff.
//! - A create whose outcome is unknown (a timeout, a 5xx) may still succeed
//!   later. Such Jobs are deleted when they appear, because their caller
//!   received an error.
//! - State comes from [`state::observe`]. A pod that cannot be pulled or
//!   scheduled for longer than the stuck timeout fails the job with that
//!   reason, and the Job is deleted.
//! - Cancel deletes the Job with background propagation and reports the job
//!   `cancelled` at once, so the state survives the deletion.
//! - Terminal jobs are reported once per gateway process; several replicas
//!   may each report a job, and recording it twice is harmless.

mod api;
pub mod preflight;
pub mod state;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvFromSource, Pod, SecretEnvSource};
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use self::api::api_error;
use self::state::observe;
use super::{
    CancelOutcome, ExecStatus, Executor, ExecutorError, JobSpec, LogOptions, LogStream,
    TerminalEvent,
};
use crate::decorate::ID_LABEL;
use crate::job::{JobId, JobState, Reason};

/// How long a log follower waits for the job's container to start.
const FOLLOW_START_WAIT: Duration = Duration::from_secs(60);

/// Settings of the Kubernetes executor.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Kubeconfig file; in-cluster credentials or `KUBECONFIG` when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Jobs (and of the template ConfigMaps).
    pub namespace: String,
    /// Service account the Jobs' pods run as; the namespace default when `None`.
    pub service_account: Option<String>,
    /// Secret whose keys become environment variables of every container,
    /// such as the workers' S3 credentials.
    pub worker_secret: Option<String>,
    /// Time a pod may stay unpullable, unschedulable or without its
    /// ConfigMaps or Secrets before the job fails.
    pub stuck_timeout: Duration,
    /// Time a create, delete or log request may take.
    pub request_timeout: Duration,
}

/// Builds a client from a kubeconfig file, or from the environment.
pub async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {} is invalid: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no cluster credentials found (in-cluster or KUBECONFIG): {e}"))?,
    };
    // Without the client's own retries (429, 503 and 504, up to 15 times
    // with backoff), a submit that meets an overloaded API server returns
    // 503 with Retry-After at once instead of holding the caller's request.
    // Watches back off and resume by themselves.
    let mut config = config;
    config.default_retry = false;
    Client::try_from(config).map_err(|e| format!("cannot build the Kubernetes client: {e}"))
}

/// Executor that runs jobs as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubernetesExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: KubernetesConfig,
    jobs_api: Api<Job>,
    pods_api: Api<Pod>,
    jobs: Store<Job>,
    pods: Store<Pod>,
    events: mpsc::UnboundedSender<TerminalEvent>,
    /// Final statuses the cluster can no longer show: cancelled jobs and
    /// jobs failed for being stuck, whose Jobs were deleted.
    decided: Mutex<HashMap<JobId, ExecStatus>>,
    /// Jobs already reported terminal by this process.
    reported: Mutex<HashSet<JobId>>,
    /// Jobs created by this process that the reflector has not shown yet,
    /// so that a status request right after submit does not find nothing.
    created: Mutex<HashMap<JobId, Arc<Job>>>,
    /// Jobs whose create failed with an unknown outcome, with when it
    /// failed: if their Job appears, it is deleted, not followed.
    abandoned: Mutex<HashMap<JobId, std::time::Instant>>,
    /// Terminal Jobs whose pods the watch has not shown final yet, with when
    /// the Job was first seen terminal.
    settling: Mutex<HashMap<JobId, std::time::Instant>>,
    shutdown: CancellationToken,
}

fn job_name(id: JobId) -> String {
    id.k8s_name()
}

fn job_id(job: &Job) -> Option<JobId> {
    job.metadata.labels.as_ref()?.get(ID_LABEL)?.parse().ok()
}

impl KubernetesExecutor {
    /// Starts the reflectors and waits for their first list. Terminal events
    /// go to `events`.
    pub async fn start(
        client: Client,
        config: KubernetesConfig,
        events: mpsc::UnboundedSender<TerminalEvent>,
        shutdown: CancellationToken,
    ) -> Result<Self, ExecutorError> {
        let jobs_api: Api<Job> = Api::namespaced(client.clone(), &config.namespace);
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
        let selector = watcher::Config::default().labels(ID_LABEL);
        let (jobs, jobs_writer) = reflector::store();
        let (pods, pods_writer) = reflector::store();
        let job_stream = reflector::reflector(jobs_writer, watcher(jobs_api.clone(), selector.clone()))
            .default_backoff()
            .applied_objects();
        let pod_stream = reflector::reflector(pods_writer, watcher(pods_api.clone(), selector))
            .default_backoff()
            .touched_objects();
        let executor = Self {
            inner: Arc::new(Inner {
                config,
                jobs_api,
                pods_api,
                jobs,
                pods,
                events,
                decided: Mutex::new(HashMap::new()),
                reported: Mutex::new(HashSet::new()),
                created: Mutex::new(HashMap::new()),
                abandoned: Mutex::new(HashMap::new()),
                settling: Mutex::new(HashMap::new()),
                shutdown: shutdown.clone(),
            }),
        };
        // Once the watch shows a Job, its snapshot from the create is stale:
        // the Job may change or be deleted, by this replica or another.
        executor.spawn_watch(job_stream, "jobs", |executor, job: &Job| {
            if let Some(id) = job_id(job) {
                executor.inner.created.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
            }
        });
        executor.spawn_watch(pod_stream, "pods", |_, _: &Pod| {});
        let ready = async {
            executor.inner.jobs.wait_until_ready().await.ok();
            executor.inner.pods.wait_until_ready().await.ok();
        };
        if tokio::time::timeout(Duration::from_secs(30), ready).await.is_err() {
            return Err(ExecutorError::Unavailable {
                why: "the Job and Pod watches did not complete their first list within 30 s".into(),
                retry_after: None,
            });
        }
        let sweeper = executor.clone();
        tokio::spawn(async move { sweeper.sweep_loop().await });
        Ok(executor)
    }

    fn spawn_watch<S, K>(&self, stream: S, kind: &'static str, on_object: impl Fn(&Self, &K) + Send + 'static)
    where
        S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
        K: Send + 'static,
    {
        let executor = self.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    () = executor.inner.shutdown.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(object)) => {
                            on_object(&executor, &object);
                            executor.report_terminal_jobs();
                        }
                        // The watcher relists by itself after errors; these
                        // are retried, so they are only worth a debug line.
                        Some(Err(error)) => tracing::debug!(%error, kind, "watch error; retrying"),
                        None => return,
                    },
                }
            }
        });
    }

    fn pods_of(&self, id: JobId) -> Vec<Arc<Pod>> {
        let id = id.to_string();
        self.inner
            .pods
            .state_filter(|pod| pod.metadata.labels.as_ref().and_then(|l| l.get(ID_LABEL)) == Some(&id))
    }

    /// Returns the newest pod of a job whose containers have started, so
    /// that it has logs.
    fn latest_started_pod(&self, id: JobId) -> Option<String> {
        let mut pods = self.pods_of(id);
        pods.retain(|pod| {
            let status = pod.status.as_ref();
            let phase_done = matches!(status.and_then(|s| s.phase.as_deref()), Some("Running" | "Succeeded" | "Failed"));
            let started = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.state.as_ref().is_some_and(|state| state.running.is_some() || state.terminated.is_some()));
            phase_done || started
        });
        pods.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        pods.last().and_then(|pod| pod.metadata.name.clone())
    }

    fn cached_job(&self, id: JobId) -> Option<Arc<Job>> {
        let mut created = self
            .inner
            .created
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match self
            .inner
            .jobs
            .get(&ObjectRef::new(&job_name(id)).within(&self.inner.config.namespace))
        {
            Some(job) => {
                created.remove(&id);
                Some(job)
            }
            None => created.get(&id).cloned(),
        }
    }

    fn status_of(&self, id: JobId, job: &Job) -> (ExecStatus, Option<state::Stuck>) {
        let pods = self.pods_of(id);
        let pod_refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let observed = observe(job, &pod_refs);
        let status = job.status.clone().unwrap_or_default();
        let finished_at = if observed.state.is_terminal() {
            status.completion_time.as_ref().map(state::to_chrono).or_else(|| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .filter(|c| c.status == "True" && (c.type_ == "Failed" || c.type_ == "Complete"))
                    .filter_map(|c| c.last_transition_time.as_ref().map(state::to_chrono))
                    .max()
                    .or_else(|| Some(Utc::now()))
            })
        } else {
            None
        };
        let attempts = (status.active.unwrap_or(0) + status.failed.unwrap_or(0) + status.succeeded.unwrap_or(0)).max(0) as u32;
        (
            ExecStatus {
                state: observed.state,
                reason: observed.reason,
                message: observed.message,
                started_at: state::first_container_start(&pod_refs),
                finished_at,
                attempts: attempts.max(pods.len() as u32),
            },
            observed.stuck,
        )
    }

    fn decided(&self, id: JobId) -> Option<ExecStatus> {
        self.inner
            .decided
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
            .cloned()
    }

    fn decide(&self, id: JobId, status: ExecStatus) {
        self.inner
            .decided
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, status.clone());
        self.report(id, status);
    }

    /// Sends the terminal event of a job once.
    fn report(&self, id: JobId, status: ExecStatus) {
        let first = self
            .inner
            .reported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id);
        if first {
            tracing::info!(job.id = %id, state = %status.state, reason = status.reason.map_or("none", |r| r.as_str()), "job finished");
            let _ = self.inner.events.send(TerminalEvent { id, status });
        }
    }

}
#[async_trait]
impl Executor for KubernetesExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn submit(&self, spec: JobSpec) -> Result<(), ExecutorError> {
        let mut job = spec.job;
        let namespace = self.inner.config.namespace.clone();
        job.metadata.namespace = Some(namespace.clone());
        if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            if let Some(account) = &self.inner.config.service_account {
                pod.service_account_name = Some(account.clone());
            }
            if let Some(secret) = &self.inner.config.worker_secret {
                for container in pod.containers.iter_mut().chain(pod.init_containers.iter_mut().flatten()) {
                    container.env_from.get_or_insert_with(Vec::new).push(EnvFromSource {
                        secret_ref: Some(SecretEnvSource {
                            name: secret.clone(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        match self.within_timeout(self.inner.jobs_api.create(&PostParams::default(), &job)).await {
            Ok(Ok(created)) => {
                tracing::info!(job.id = %spec.id, k8s.namespace = %namespace, "Job created");
                self.inner
                    .created
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(spec.id, Arc::new(created));
                // The watch may have shown the Job before the create
                // returned; cached_job then drops the snapshot.
                self.cached_job(spec.id);
                Ok(())
            }
            // The name contains the job's unique id, so an existing Job is this
            // job's own.
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(()),
            Ok(Err(error)) => {
                // A 4xx is the server's final word; after a 5xx or a broken
                // connection the Job may exist all the same.
                if !matches!(&error, kube::Error::Api(status) if status.code < 500) {
                    self.abandon(spec.id);
                }
                Err(api_error(error, &namespace))
            }
            Err(timeout) => {
                self.abandon(spec.id);
                Err(timeout)
            }
        }
    }

    async fn status(&self, id: JobId) -> Result<Option<ExecStatus>, ExecutorError> {
        if let Some(status) = self.decided(id) {
            return Ok(Some(status));
        }
        Ok(self.cached_job(id).map(|job| self.status_of(id, &job).0))
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, ExecutorError> {
        let Some(mut status) = self.status(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if status.state.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished(status));
        }
        match self.within_timeout(self.inner.jobs_api.delete(&job_name(id), &DeleteParams::background())).await? {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => return Err(api_error(error, &self.inner.config.namespace)),
        }
        status.state = JobState::Cancelled;
        status.reason = None;
        status.message = Some("cancelled by request".into());
        status.finished_at = Some(Utc::now());
        self.decide(id, status);
        Ok(CancelOutcome::Cancelling)
    }

    async fn logs(&self, id: JobId, options: LogOptions) -> Result<LogStream, ExecutorError> {
        // A follow request right after submit waits for the container to
        // start rather than failing.
        let deadline = tokio::time::Instant::now() + FOLLOW_START_WAIT;
        let name = loop {
            if let Some(name) = self.latest_started_pod(id) {
                break name;
            }
            let finished = self.status(id).await?.is_none_or(|status| status.state.is_terminal());
            if !options.follow || finished {
                // No container has started, so there are no logs yet; or
                // the pods are gone with the Job.
                return Ok(Box::pin(futures::stream::empty()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecutorError::Unavailable {
                    why: format!(
                        "the job's container has not started within {} s; follow its state and ask again",
                        FOLLOW_START_WAIT.as_secs()
                    ),
                    retry_after: Some(10),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let params = LogParams {
            follow: options.follow,
            tail_lines: options.tail.map(|t| t as i64),
            ..Default::default()
        };
        let reader = match self.within_timeout(self.inner.pods_api.log_stream(&name, &params)).await? {
            Ok(reader) => reader,
            // The pod is gone, so its logs are too.
            Err(kube::Error::Api(status)) if status.code == 404 => return Err(ExecutorError::NotFound { id }),
            // The kubelet returns 400 while the container has not started.
            Err(kube::Error::Api(status)) if status.code == 400 => {
                return Err(ExecutorError::Unavailable {
                    why: format!("the job's container has no logs yet: {}", status.message),
                    retry_after: Some(2),
                })
            }
            Err(error) => return Err(api_error(error, &self.inner.config.namespace)),
        };
        let stream = tokio_util::io::ReaderStream::new(reader.compat()).map_err(std::io::Error::other);
        Ok(Box::pin(stream))
    }

    async fn forget(&self, id: JobId) {
        self.inner
            .created
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&id);
        self.inner
            .decided
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&id);
        self.inner
            .settling
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&id);
    }

    fn visibility_grace(&self) -> Duration {
        // A watch shows a new Job within a second in a healthy cluster; a
        // minute leaves room for a watch that is reconnecting.
        Duration::from_secs(60)
    }

    fn lost_job(&self) -> (Reason, String) {
        (
            Reason::JobDeleted,
            "the Job was deleted from the cluster before the gateway recorded its result".into(),
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
        // Jobs keep running in the cluster; another replica, or this one
        // after a restart, follows them from the cluster and the store.
        self.inner.shutdown.cancel();
    }
}
