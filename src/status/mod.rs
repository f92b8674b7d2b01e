//! Joining executor state, worker progress and results into the job view.
//!
//! The view of a job comes from, in order: the executor's state joined with
//! `progress.json` and `result.json`, while the executor knows the job; then
//! its `status.json` record, written once it was terminal; and for a job that
//! neither knows, a failed view with the executor's "lost job" reason. Store reads go through [`cache::DocCache`].

pub mod cache;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use jobgate_worker::protocol::{self, ProgressDoc, RequestDoc, ResultDoc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use self::cache::{DocCache, Read, Ttl};
pub use self::view::{JobView, Output, Progress};
use crate::executor::{ExecStatus, Executor, ExecutorError};
use crate::job::{JobId, JobState};
use crate::store::{ObjectStore, StoreError};

/// Default time a progress document is served from the cache: polling
/// clients see changes within a second, and the store sees one read a second.
pub const DEFAULT_PROGRESS_TTL: Duration = Duration::from_secs(1);
/// Default time documents that no longer change are cached (request records,
/// results and final records).
pub const DEFAULT_FINAL_TTL: Duration = Duration::from_secs(600);

/// Characters escaped in an output name in a URL path: all but RFC 3986's
/// unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Settings of the status reader.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Cache time of documents that change while a job runs.
    pub progress_ttl: Duration,
    /// Cache time of documents that never change once written.
    pub final_ttl: Duration,
    /// Base URL put in front of download links, such as
    /// `https://jobs.example.com`; links are relative paths when empty.
    pub public_url: String,
    /// Lifetime of presigned download URLs.
    pub presign_expiry: Duration,
}

/// Errors of building a view.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The store could not be read.
    #[error("reading job documents failed")]
    Store(#[source] Arc<StoreError>),
    /// The executor could not be asked.
    #[error("reading the job state failed")]
    Executor(#[source] ExecutorError),
    /// A stored document is not valid JSON of the expected shape.
    #[error("stored document {key} is invalid: {reason}")]
    Corrupt {
        /// Key of the document.
        key: String,
        /// Parse error.
        reason: String,
    },
}

/// Builds job views from the executor and the store.
#[derive(Clone)]
pub struct StatusReader {
    docs: DocCache,
    store: Arc<dyn ObjectStore>,
    executor: Arc<dyn Executor>,
    config: StatusConfig,
}

impl StatusReader {
    /// Creates a reader.
    pub fn new(store: Arc<dyn ObjectStore>, executor: Arc<dyn Executor>, config: StatusConfig) -> Self {
        Self {
            docs: DocCache::new(store.clone()),
            store,
            executor,
            config,
        }
    }

    /// Returns the settings.
    pub fn config(&self) -> &StatusConfig {
        &self.config
    }

    fn immutable_ttl(&self) -> Ttl {
        Ttl {
            found: self.config.final_ttl,
            missing: self.config.progress_ttl,
        }
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        ttl: Ttl,
    ) -> Result<Option<T>, StatusError> {
        let Some(bytes) = self.docs.get(key, ttl).await.map_err(StatusError::Store)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StatusError::Corrupt {
                key: key.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Caches a request record the gateway just wrote.
    pub async fn remember_request(&self, id: JobId, bytes: Bytes) {
        let key = protocol::job_key(&id.to_string(), protocol::REQUEST_FILE);
        self.docs.insert(&key, bytes, self.config.final_ttl).await;
    }

    /// Forgets a request record after a failed submit.
    pub async fn forget_request(&self, id: JobId) {
        let key = protocol::job_key(&id.to_string(), protocol::REQUEST_FILE);
        self.docs.invalidate(&key).await;
    }

    /// Caches a final record the gateway just wrote.
    pub async fn remember_final(&self, id: JobId, bytes: Bytes) {
        let key = protocol::job_key(&id.to_string(), protocol::STATUS_FILE);
        self.docs.insert(&key, bytes, self.config.final_ttl).await;
    }

    /// Returns a job's request record.
    pub async fn request(&self, id: JobId) -> Result<Option<RequestDoc>, StatusError> {
        let key = protocol::job_key(&id.to_string(), protocol::REQUEST_FILE);
        self.read(&key, self.immutable_ttl()).await
    }

    /// Returns a job's final record, if it has one.
    pub async fn final_record(&self, id: JobId) -> Result<Option<JobView>, StatusError> {
        let key = protocol::job_key(&id.to_string(), protocol::STATUS_FILE);
        let view: Option<JobView> = self.read(&key, self.immutable_ttl()).await?;
        match view {
            Some(view) => Ok(Some(self.with_urls(view).await)),
            None => Ok(None),
        }
    }

    /// Returns the current view of a job, or `None` if no such job exists.
    pub async fn view(&self, id: JobId) -> Result<Option<JobView>, StatusError> {
        let Some(request) = self.request(id).await? else {
            return Ok(None);
        };
        // The executor knows every job it still runs, so a live job needs no
        // read of its final record, and views keep working while the store
        // is down.
        if let Some(status) = self.executor.status(id).await.map_err(StatusError::Executor)? {
            return self.build(request, status, false).await.map(Some);
        }
        if let Some(view) = self.final_record(id).await? {
            return Ok(Some(view));
        }
        let status = if self.within_visibility_grace(&request) {
            ExecStatus {
                state: JobState::Queued,
                reason: None,
                message: Some("submitted; the executor does not show the job yet".into()),
                started_at: None,
                finished_at: None,
                attempts: 0,
            }
        } else {
            self.lost_status(&request)
        };
        self.build(request, status, false).await.map(Some)
    }

    /// Returns true while a job unknown to the executor may still appear in
    /// it, as a job another replica just created does.
    pub fn within_visibility_grace(&self, request: &RequestDoc) -> bool {
        let grace = chrono::Duration::from_std(self.executor.visibility_grace()).unwrap_or_default();
        Utc::now() - request.created_at < grace
    }

    /// Builds the view to record once a job is terminal, reading progress and
    /// results fresh from the store.
    pub async fn final_view(&self, request: RequestDoc, status: ExecStatus) -> Result<JobView, StatusError> {
        self.build(request, status, true).await
    }

    /// Returns the status of a job that neither the store's final record nor
    /// the executor knows.
    pub fn lost_status(&self, request: &RequestDoc) -> ExecStatus {
        let (reason, message) = self.executor.lost_job();
        ExecStatus {
            state: JobState::Failed,
            reason: Some(reason),
            message: Some(message),
            started_at: None,
            finished_at: Some(request.created_at.max(Utc::now())),
            attempts: 0,
        }
    }

    async fn build(&self, request: RequestDoc, status: ExecStatus, fresh: bool) -> Result<JobView, StatusError> {
        let id = request.id.clone();
        let progress_key = protocol::job_key(&id, protocol::PROGRESS_FILE);
        let result_key = protocol::job_key(&id, protocol::RESULT_FILE);
        if fresh {
            self.docs.invalidate(&progress_key).await;
            self.docs.invalidate(&result_key).await;
        }
        let progress_ttl = Ttl {
            found: self.config.progress_ttl,
            missing: self.config.progress_ttl,
        };
        // During a storage outage the view keeps the last progress read,
        // marked stale; the job's state comes from the executor regardless.
        let mut stale = false;
        let progress_bytes = match self.docs.get_or_stale(&progress_key, progress_ttl).await {
            Ok(Read::Fresh(bytes)) => bytes,
            Ok(Read::Stale(bytes)) => {
                stale = true;
                Some(bytes)
            }
            Err(error) => {
                tracing::debug!(job.id = %id, s3.key = %progress_key, error = %error, "progress unavailable");
                stale = true;
                None
            }
        };
        let progress = progress_bytes
            .and_then(|bytes| serde_json::from_slice::<ProgressDoc>(&bytes).ok())
            .map(Progress::from);
        let mut outputs = Vec::new();
        let mut summary = None;
        if status.state == JobState::Succeeded {
            match self.read::<ResultDoc>(&result_key, self.immutable_ttl()).await {
                Ok(Some(result)) => {
                    for doc in result.outputs {
                        outputs.push(self.with_output_urls(&id, Output::from_doc(doc)).await);
                    }
                    summary = Some(result.summary);
                }
                Ok(None) => {}
                // The final record must not be written without results, so
                // the error goes up; a live view shows the job without them.
                Err(error) if fresh => return Err(error),
                Err(error) => {
                    tracing::debug!(job.id = %id, error = %error, "results unavailable");
                    stale = true;
                }
            }
        }
        let eta_seconds = if status.state == JobState::Running {
            view::estimate_eta(status.started_at, progress.as_ref(), Utc::now())
        } else {
            None
        };
        let uuid = id.parse().map_err(|_| StatusError::Corrupt {
            key: protocol::job_key(&id, protocol::REQUEST_FILE),
            reason: "the id is not a UUID".into(),
        })?;
        Ok(JobView {
            id: uuid,
            template: request.template,
            parameters: request.parameters,
            labels: request.labels,
            state: status.state,
            reason: status.reason,
            message: status.message,
            progress,
            eta_seconds,
            created_at: request.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            attempts: status.attempts,
            outputs,
            stale,
            summary,
        })
    }

    /// Rewrites download links, which depend on configuration and expire,
    /// so they are never taken from a stored record.
    async fn with_urls(&self, mut view: JobView) -> JobView {
        let id = view.id.to_string();
        let outputs = std::mem::take(&mut view.outputs);
        for output in outputs {
            view.outputs.push(self.with_output_urls(&id, output).await);
        }
        view
    }

    /// Sets an output's gateway link and, where the store can sign one, its
    /// presigned storage link.
    async fn with_output_urls(&self, id: &str, mut output: Output) -> Output {
        output.gateway_url = self.gateway_url(id, &output.name);
        let key = protocol::output_key(id, &output.name);
        output.url = match self.store.presign_get(&key, self.config.presign_expiry).await {
            Ok(Some(url)) => url,
            Ok(None) => output.gateway_url.clone(),
            Err(error) => {
                tracing::debug!(job.id = %id, s3.key = %key, error = %error, "presigning failed; linking through the gateway");
                output.gateway_url.clone()
            }
        };
        output
    }

    /// Returns the gateway's download link of an output.
    pub fn gateway_url(&self, id: &str, name: &str) -> String {
        format!(
            "{}/v1/jobs/{id}/outputs/{}",
            self.config.public_url.trim_end_matches('/'),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }
}
