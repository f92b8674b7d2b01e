//! The gateway's operations, independent of HTTP: submit, view, list,
//! cancel, logs, uploads and outputs, plus recording final job views.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use jobgate_worker::protocol::{self, RequestDoc, ResultDoc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::catalog::{Catalog, CatalogError, FieldError};
use crate::decorate;
use crate::executor::{CancelOutcome, Executor, ExecutorError, JobSpec, LogOptions, LogStream, TerminalEvent};
use crate::job::{JobId, JobState};
use crate::status::{JobView, StatusError, StatusReader};
use crate::store::{ByteStream, ObjectReader, ObjectStore, StoreError};

/// Maximum number of labels on one job.
pub const MAX_LABELS: usize = 32;
/// Maximum label key length, in bytes (as for Kubernetes label names).
pub const MAX_LABEL_KEY: usize = 63;
/// Maximum label value length, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;
/// Maximum page size of `GET /v1/jobs`.
pub const MAX_PAGE_SIZE: usize = 200;
/// Page size of `GET /v1/jobs` when the caller names none.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// Errors of gateway operations; the API turns each into a problem response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No template has this name.
    #[error("template {name:?} not found")]
    TemplateNotFound {
        /// Requested name.
        name: String,
    },
    /// The template exists but is broken; an operator must fix it.
    #[error("template {name:?} is invalid: {error}")]
    TemplateInvalid {
        /// Template name.
        name: String,
        /// Load or render error.
        error: String,
    },
    /// Parameters failed the template's schema.
    #[error("invalid parameters for template {template:?}")]
    InvalidParameters {
        /// Template name.
        template: String,
        /// Every failing field.
        errors: Vec<FieldError>,
    },
    /// A request field other than the parameters is invalid.
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// Field name.
        field: String,
        /// Problem and fix.
        message: String,
    },
    /// No job has this id.
    #[error("job {id} not found")]
    JobNotFound {
        /// Job id, as given.
        id: String,
    },
    /// The job is finished and cannot be cancelled.
    #[error("job {id} already {state}")]
    AlreadyFinished {
        /// Job id.
        id: JobId,
        /// Its terminal state.
        state: JobState,
    },
    /// The job has no output of this name.
    #[error("job {id} has no output {name:?}")]
    OutputNotFound {
        /// Job id.
        id: JobId,
        /// Output name.
        name: String,
    },
    /// An upload was larger than allowed.
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Limit in bytes.
        limit: u64,
    },
    /// A dependency is unavailable; retrying later may succeed.
    #[error("service unavailable: {why}")]
    Unavailable {
        /// Unavailable dependency and cause.
        why: String,
        /// Seconds after which a retry may succeed.
        retry_after: Option<u64>,
    },
    /// The executor cannot run the rendered Job; an operator must fix the template.
    #[error(transparent)]
    Unrunnable(ExecutorError),
    /// An internal failure, logged with its cause.
    #[error("{context}")]
    Internal {
        /// Operation that failed.
        context: String,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl GatewayError {
    fn internal(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<StatusError> for GatewayError {
    fn from(error: StatusError) -> Self {
        match error {
            StatusError::Store(source) => Self::Unavailable {
                why: format!("the job store cannot be read: {}", error_chain(&*source)),
                retry_after: Some(5),
            },
            StatusError::Executor(source) => Self::from(source),
            corrupt @ StatusError::Corrupt { .. } => Self::internal("reading a job record failed", corrupt),
        }
    }
}

impl From<ExecutorError> for GatewayError {
    fn from(error: ExecutorError) -> Self {
        match error {
            ExecutorError::Unavailable { why, retry_after } => Self::Unavailable { why, retry_after },
            unrunnable @ ExecutorError::Unrunnable { .. } => Self::Unrunnable(unrunnable),
            ExecutorError::NotFound { id } => Self::JobNotFound { id: id.to_string() },
            other => Self::internal("executor operation failed", other),
        }
    }
}

impl From<StoreError> for GatewayError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::TooLarge { limit, .. } => Self::TooLarge { limit },
            StoreError::InvalidKey { key, why } => Self::InvalidField {
                field: "name".into(),
                message: format!("{key:?} is not a valid name: {why}"),
            },
            other => Self::Unavailable {
                why: format!("the job store failed: {}", error_chain(&other)),
                retry_after: Some(5),
            },
        }
    }
}

/// Joins an error and its sources into one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A submit request.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// Template name.
    pub template: String,
    /// Parameters, before defaults.
    pub parameters: Value,
    /// Caller's labels.
    pub labels: BTreeMap<String, String>,
}

/// Filters and position of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this template.
    pub template: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Only jobs older than this one: the `next_cursor` of the previous page.
    pub cursor: Option<JobId>,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Cursor of the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// A stored upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Store key that parameters refer to.
    pub reference: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// An output opened for download.
pub struct Download {
    /// Size and body.
    pub reader: ObjectReader,
    /// MIME type.
    pub content_type: String,
}

/// Limits on inputs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Lifetime of presigned upload URLs.
    pub presign_expiry: Duration,
}

/// The gateway's operations.
#[derive(Clone)]
pub struct Gateway {
    catalog: Arc<Catalog>,
    executor: Arc<dyn Executor>,
    store: Arc<dyn ObjectStore>,
    status: StatusReader,
    limits: Limits,
}

impl Gateway {
    /// Wires the parts together.
    pub fn new(
        catalog: Arc<Catalog>,
        executor: Arc<dyn Executor>,
        store: Arc<dyn ObjectStore>,
        status: StatusReader,
        limits: Limits,
    ) -> Self {
        Self {
            catalog,
            executor,
            store,
            status,
            limits,
        }
    }

    /// Returns the template catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Returns the limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates, renders and starts a job.
    ///
    /// The request record is written before the executor starts the job, and
    /// deleted again if the executor refuses it, so that no record is left of
    /// a job that never existed.
    pub async fn submit(&self, request: SubmitRequest) -> Result<JobView, GatewayError> {
        validate_labels(&request.labels)?;
        let (template, snapshot) = self.catalog.get(&request.template).map_err(|error| match error {
            CatalogError::NotFound { name } => GatewayError::TemplateNotFound { name },
            CatalogError::Invalid { name, error } => GatewayError::TemplateInvalid { name, error },
        })?;
        let parameters = template
            .validate(request.parameters)
            .map_err(|errors| GatewayError::InvalidParameters {
                template: template.name.clone(),
                errors,
            })?;
        let id = JobId::new();
        let span = tracing::info_span!("submit", job.id = %id, template = %template.name);
        async {
            let mut job = template
                .render(id, &parameters, &snapshot.env)
                .map_err(|error| GatewayError::TemplateInvalid {
                    name: template.name.clone(),
                    error: error.to_string(),
                })?;
            decorate::decorate(&mut job, id, &template.name, &self.store.worker_url(), &self.store.worker_env());
            let record = RequestDoc {
                id: id.to_string(),
                template: template.name.clone(),
                parameters,
                labels: request.labels,
                created_at: Utc::now(),
            };
            let bytes = Bytes::from(serde_json::to_vec(&record).map_err(|e| GatewayError::internal("encoding the request record failed", e))?);
            let key = protocol::job_key(&id.to_string(), protocol::REQUEST_FILE);
            self.store.put(&key, bytes.clone()).await?;
            let spec = JobSpec {
                id,
                template: template.name.clone(),
                job,
            };
            if let Err(error) = self.executor.submit(spec).await {
                if let Err(cleanup) = self.store.delete(&key).await {
                    tracing::error!(error = %error_chain(&cleanup), "deleting the record of a rejected job failed");
                }
                self.status.forget_request(id).await;
                tracing::warn!(error = %error_chain(&error), "executor rejected the job");
                return Err(error.into());
            }
            self.status.remember_request(id, bytes).await;
            tracing::info!("job accepted");
            self.view(id).await
        }
        .instrument(span)
        .await
    }

    /// Returns a job's view.
    pub async fn view(&self, id: JobId) -> Result<JobView, GatewayError> {
        self.status
            .view(id)
            .await?
            .ok_or_else(|| GatewayError::JobNotFound { id: id.to_string() })
    }

    /// Lists jobs newest first.
    ///
    /// Ids grow with creation time, so a job created while a client pages
    /// through the list sorts before the cursor and never shifts later pages.
    pub async fn list(&self, query: ListQuery) -> Result<Page, GatewayError> {
        let limit = query.limit.clamp(1, MAX_PAGE_SIZE);
        // NOTE: listing reads every job id from the store on each request,
        // which is fine for thousands of jobs but not for millions.
        let mut ids: Vec<JobId> = self
            .store
            .list_children("jobs/")
            .await?
            .into_iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let start = match query.cursor {
            Some(cursor) => ids.partition_point(|id| *id >= cursor),
            None => 0,
        };
        let mut jobs = Vec::new();
        let mut next_cursor = None;
        for id in &ids[start..] {
            if let Some(template) = &query.template {
                match self.status.request(*id).await? {
                    Some(request) if &request.template == template => {}
                    _ => continue,
                }
            }
            let Some(view) = self.status.view(*id).await? else {
                continue;
            };
            if query.state.is_some_and(|state| state != view.state) {
                continue;
            }
            if jobs.len() == limit {
                next_cursor = jobs.last().map(|last: &JobView| JobId::from_uuid(last.id));
                break;
            }
            jobs.push(view);
        }
        Ok(Page { jobs, next_cursor })
    }

    /// Asks a job to stop and returns its view.
    pub async fn cancel(&self, id: JobId) -> Result<JobView, GatewayError> {
        let view = self.view(id).await?;
        if view.state.is_terminal() {
            return Err(GatewayError::AlreadyFinished { id, state: view.state });
        }
        match self.executor.cancel(id).await? {
            CancelOutcome::Cancelling => {
                tracing::info!(job.id = %id, "cancel requested");
                self.view(id).await
            }
            CancelOutcome::AlreadyFinished(status) => Err(GatewayError::AlreadyFinished { id, state: status.state }),
            CancelOutcome::NotFound => Err(GatewayError::AlreadyFinished { id, state: JobState::Failed }),
        }
    }

    /// Streams a job's logs.
    pub async fn logs(&self, id: JobId, options: LogOptions) -> Result<LogStream, GatewayError> {
        self.view(id).await?;
        Ok(self.executor.logs(id, options).await?)
    }

    /// Stores an uploaded file and returns the reference parameters can use.
    pub async fn upload(&self, name: &str, body: ByteStream) -> Result<Upload, GatewayError> {
        protocol::validate_output_name(name).map_err(|message| GatewayError::InvalidField {
            field: "name".into(),
            message: format!("{message}; give a plain file name such as photo.jpg"),
        })?;
        let reference = format!("uploads/{}/{name}", uuid::Uuid::now_v7());
        let size = self
            .store
            .put_stream(&reference, body, self.limits.max_upload_bytes)
            .await?;
        tracing::info!(upload = %reference, size, "upload stored");
        Ok(Upload {
            reference,
            name: name.to_owned(),
            size,
        })
    }

    /// Reserves an upload reference and returns a presigned PUT URL for it,
    /// or `None` when the store cannot sign URLs.
    pub async fn presign_upload(&self, name: &str, expiry: Duration) -> Result<Option<(Upload, String)>, GatewayError> {
        protocol::validate_output_name(name).map_err(|message| GatewayError::InvalidField {
            field: "name".into(),
            message: format!("{message}; give a plain file name such as photo.jpg"),
        })?;
        let reference = format!("uploads/{}/{name}", uuid::Uuid::now_v7());
        let Some(url) = self.store.presign_put(&reference, expiry).await? else {
            return Ok(None);
        };
        tracing::info!(upload = %reference, "presigned upload issued");
        let upload = Upload {
            reference,
            name: name.to_owned(),
            size: 0,
        };
        Ok(Some((upload, url)))
    }

    /// Opens one of a job's outputs.
    pub async fn output(&self, id: JobId, name: &str) -> Result<Download, GatewayError> {
        let not_found = || GatewayError::OutputNotFound { id, name: name.to_owned() };
        if protocol::validate_output_name(name).is_err() {
            return Err(not_found());
        }
        let view = self.view(id).await?;
        let key = protocol::output_key(&id.to_string(), name);
        let reader = match self.store.open(&key).await {
            Ok(reader) => reader,
            Err(StoreError::NotFound { .. }) => return Err(not_found()),
            Err(other) => return Err(other.into()),
        };
        let content_type = view
            .outputs
            .iter()
            .find(|output| output.name == name)
            .map(|output| output.content_type.clone())
            .unwrap_or_else(|| mime_guess::from_path(name).first_or_octet_stream().to_string());
        Ok(Download { reader, content_type })
    }

    /// Checks that the store and the executor can serve requests.
    pub async fn check(&self) -> Result<(), GatewayError> {
        self.store.check().await?;
        self.executor.check().await?;
        Ok(())
    }

    /// Records each job's final view in the store as the executor reports it
    /// terminal, until the executor's sender is dropped or `shutdown` fires.
    pub async fn record_terminal_jobs(&self, mut events: mpsc::UnboundedReceiver<TerminalEvent>, shutdown: CancellationToken) {
        // Each job is recorded in its own task, so a job waiting for the
        // store does not hold up the others.
        let tasks = tokio_util::task::TaskTracker::new();
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = shutdown.cancelled() => {
                    // Record what already arrived, then stop.
                    events.close();
                    events.recv().await
                }
            };
            let Some(event) = event else { break };
            let gateway = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { gateway.record(event, &shutdown).await });
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Writes `status.json` for a terminal job, retrying while the store
    /// fails (an outage must not lose the final view), then lets the
    /// executor forget the job. Gives up only at shutdown.
    async fn record(&self, event: TerminalEvent, shutdown: &CancellationToken) {
        let id = event.id;
        let mut pause = Duration::from_millis(200);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.try_record(&event).await {
                Ok(()) => {
                    self.executor.forget(id).await;
                    return;
                }
                Err(error) => {
                    let error = error_chain(&error);
                    if attempt % 10 == 1 {
                        tracing::warn!(job.id = %id, attempt, %error, "recording the final view failed; retrying until the store responds");
                    } else {
                        tracing::debug!(job.id = %id, attempt, %error, "recording the final view failed; retrying");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => {
                    // The executor keeps the job until the process ends; the
                    // next start reports it as lost.
                    tracing::error!(job.id = %id, "gateway stopping before the final view was recorded");
                    return;
                }
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    async fn try_record(&self, event: &TerminalEvent) -> Result<(), GatewayError> {
        let Some(request) = self.status.request(event.id).await? else {
            return Ok(());
        };
        let view = self.status.final_view(request, event.status.clone()).await?;
        self.write_final(event.id, &view).await
    }

    async fn write_final(&self, id: JobId, view: &JobView) -> Result<(), GatewayError> {
        let bytes = Bytes::from(serde_json::to_vec(view).map_err(|e| GatewayError::internal("encoding the final view failed", e))?);
        let key = protocol::job_key(&id.to_string(), protocol::STATUS_FILE);
        // Writing the same final view twice is harmless, so replicas that
        // both saw a job end need no coordination.
        self.store.put(&key, bytes.clone()).await?;
        self.status.remember_final(id, bytes).await;
        Ok(())
    }

    /// Records a final view for every job that the store lists as unfinished
    /// but the executor does not know, such as jobs that were running when a
    /// local gateway stopped. Returns how many it recorded.
    pub async fn recover_lost_jobs(&self) -> Result<usize, GatewayError> {
        let mut recorded = 0;
        for name in self.store.list_children("jobs/").await? {
            let Ok(id) = name.parse::<JobId>() else { continue };
            let Some(request) = self.status.request(id).await? else { continue };
            if self.status.final_record(id).await?.is_some()
                || self.executor.status(id).await?.is_some()
                || self.status.within_visibility_grace(&request)
            {
                continue;
            }
            let status = self.status.lost_status(&request);
            let view = self.status.final_view(request, status).await?;
            self.write_final(id, &view).await?;
            tracing::warn!(job.id = %id, reason = ?view.reason, "job was lost and is recorded as failed");
            recorded += 1;
        }
        Ok(recorded)
    }

    /// Returns the result document of a job, if the worker wrote one.
    pub async fn result(&self, id: JobId) -> Result<Option<ResultDoc>, GatewayError> {
        let key = protocol::job_key(&id.to_string(), protocol::RESULT_FILE);
        match self.store.get(&key).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), GatewayError> {
    let invalid = |message: String| GatewayError::InvalidField {
        field: "labels".into(),
        message,
    };
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!("{} labels given; the maximum is {MAX_LABELS}", labels.len())));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY {
            return Err(invalid(format!("label key {key:?} must be 1 to {MAX_LABEL_KEY} bytes long")));
        }
        if value.len() > MAX_LABEL_VALUE {
            return Err(invalid(format!("value of label {key:?} is longer than {MAX_LABEL_VALUE} bytes")));
        }
    }
    Ok(())
}
