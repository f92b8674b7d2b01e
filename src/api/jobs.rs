//! `/v1/jobs`: submit, view, list, cancel, logs and output downloads.

use std::collections::BTreeMap;

use poem::Body;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json, Response};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::{ErrorResponse, Problem};
use super::ApiTags;
use crate::executor::LogOptions;
use crate::job::{JobId, JobState};
use crate::service::{Gateway, GatewayError, ListQuery, SubmitRequest, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::status::{JobView, Output, Progress};

/// Most log lines one request returns.
const MAX_LOG_TAIL: usize = 100_000;

/// A request to run a job. Other fields are rejected with 400, so that a
/// misspelt `parameters` is an error rather than a job with defaults.
#[derive(Debug, Object)]
#[oai(example, deny_unknown_fields)]
pub struct SubmitJob {
    /// Template name, as listed by `GET /v1/templates`.
    #[oai(validator(max_length = 63))]
    pub template: String,
    /// Parameters, checked against the template's schema; missing ones take their defaults.
    #[oai(default)]
    pub parameters: serde_json::Value,
    /// Labels to keep with the job, for the caller's own bookkeeping.
    #[oai(default)]
    pub labels: BTreeMap<String, String>,
}

impl Example for SubmitJob {
    fn example() -> Self {
        Self {
        template: "thumbnail".into(),
        parameters: serde_json::json!({
            "images": ["uploads/0190f5c4-8a8e-7c3b-9a4e-2f1d6b8c9e01/photo.jpg"],
            "sizes": [256, 1024],
            "formats": ["jpeg", "webp"]
        }),
            labels: BTreeMap::from([("user".into(), "42".into())]),
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct JobList {
    /// The jobs on this page.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl Example for JobList {
    fn example() -> Self {
        Self {
            jobs: vec![JobView::example()],
            next_cursor: Some("0190f5c5-1d2e-7a40-8b1c-3e5f7a9b0c12".into()),
        }
    }
}

/// The example of `JobView` in the OpenAPI document: a thumbnail job that
/// succeeded. It is here, with the other API examples, rather than beside the
/// type in `status::view`.
impl Example for JobView {
    fn example() -> Self {
        let created_at = example_time("2024-07-18T09:30:00.120Z");
        let output = |name: &str, size: u64, content_type: &str| Output {
            name: name.into(),
            size,
            content_type: content_type.into(),
            url: format!("/v1/jobs/0190f5c5-1d2e-7a40-8b1c-3e5f7a9b0c12/outputs/{name}"),
            gateway_url: format!("/v1/jobs/0190f5c5-1d2e-7a40-8b1c-3e5f7a9b0c12/outputs/{name}"),
        };
        Self {
            id: "0190f5c5-1d2e-7a40-8b1c-3e5f7a9b0c12".parse().expect("the example id is a valid UUID"),
            template: "thumbnail".into(),
            parameters: serde_json::json!({
                "images": ["uploads/0190f5c4-8a8e-7c3b-9a4e-2f1d6b8c9e01/photo.jpg"],
                "sizes": [256, 1024],
                "formats": ["jpeg"],
                "quality": 85,
                "max_pixels": 40_000_000
            }),
            labels: BTreeMap::from([("user".into(), "42".into())]),
            state: JobState::Succeeded,
            reason: None,
            message: None,
            progress: Some(Progress {
                percent: 100.0,
                message: Some("1 of 1 images resized".into()),
                stage: Some("resize".into()),
                done: Some(1),
                total: Some(1),
                updated_at: example_time("2024-07-18T09:30:02.480Z"),
            }),
            eta_seconds: None,
            created_at,
            started_at: Some(example_time("2024-07-18T09:30:00.350Z")),
            finished_at: Some(example_time("2024-07-18T09:30:02.510Z")),
            attempts: 1,
            outputs: vec![
                output("photo-256.jpg", 18_244, "image/jpeg"),
                output("photo-1024.jpg", 162_903, "image/jpeg"),
            ],
            stale: false,
            summary: Some(serde_json::json!({"images": 1, "succeeded": 1, "failed": []})),
        }
    }
}

fn example_time(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    rfc3339.parse().expect("example times are valid RFC 3339")
}

#[derive(ApiResponse)]
enum SubmitResponse {
    /// The job was accepted; follow it at the Location URL.
    #[oai(status = 202)]
    Accepted(
        Json<JobView>,
        /// URL of the job.
        #[oai(header = "Location")]
        String,
    ),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// A page of jobs, newest first.
    #[oai(status = 200)]
    Ok(Json<JobList>),
}

#[derive(ApiResponse)]
enum ViewResponse {
    /// The job's current view.
    #[oai(status = 200)]
    Ok(Json<JobView>),
}

#[derive(ApiResponse)]
enum LogsResponse {
    /// The log text; streamed until the job ends when following.
    #[oai(status = 200, content_type = "text/plain; charset=utf-8")]
    Ok(Binary<Body>),
}

#[derive(ApiResponse)]
enum OutputResponse {
    /// The output file. Its `Content-Type` is the one the job recorded for
    /// it, such as `image/jpeg`, so any media type can be returned.
    #[oai(status = 200, content_type = "*/*")]
    Ok(Binary<Body>),
}

#[derive(ApiResponse)]
enum CancelResponse {
    /// The job is being stopped; its state becomes `cancelled` once it has stopped.
    #[oai(status = 202)]
    Accepted(Json<JobView>),
}

/// Operations on jobs.
pub struct JobsApi {
    /// The gateway.
    pub gateway: Gateway,
}

fn parse_id(id: &str) -> Result<JobId, ErrorResponse> {
    id.parse().map_err(|_| {
        ErrorResponse::from(GatewayError::JobNotFound {
            id: id.chars().take(64).collect(),
        })
    })
}

#[OpenApi(prefix_path = "/v1/jobs", tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Submit a job
    ///
    /// Validates the parameters against the template's schema, renders the
    /// template and starts the job. Answers `202` with the job's view; the
    /// job starts `queued`.
    #[oai(path = "/", method = "post", operation_id = "submitJob")]
    async fn submit(&self, body: Json<SubmitJob>) -> Result<SubmitResponse, ErrorResponse> {
        let body = body.0;
        let view = self
            .gateway
            .submit(SubmitRequest {
                template: body.template,
                parameters: body.parameters,
                labels: body.labels,
            })
            .await?;
        let location = format!("/v1/jobs/{}", view.id);
        Ok(SubmitResponse::Accepted(Json(view), location))
    }

    /// List jobs
    ///
    /// Returns jobs newest first, optionally filtered by state and template.
    /// Pages are linked by `next_cursor`: jobs submitted while a client pages
    /// through the list appear before its first page, so pages neither skip
    /// nor repeat a job.
    #[oai(path = "/", method = "get", operation_id = "listJobs")]
    async fn list(
        &self,
        /// Only jobs in this state.
        state: Query<Option<JobState>>,
        /// Only jobs of this template.
        template: Query<Option<String>>,
        /// Jobs per page, 1 to 200 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page, passed unchanged; omit it
        /// for the first page.
        cursor: Query<Option<String>>,
    ) -> Result<ListResponse, ErrorResponse> {
        let cursor = match cursor.0 {
            Some(cursor) => Some(cursor.parse::<JobId>().map_err(|_| {
                ErrorResponse::from(GatewayError::InvalidField {
                    field: "cursor".into(),
                    message: "not a cursor returned by this API; pass a next_cursor value unchanged".into(),
                })
            })?),
            None => None,
        };
        let page = self
            .gateway
            .list(ListQuery {
                state: state.0,
                template: template.0,
                limit: limit.0.map_or(DEFAULT_PAGE_SIZE, |l| (l as usize).min(MAX_PAGE_SIZE)),
                cursor,
            })
            .await?;
        Ok(ListResponse::Ok(Json(JobList {
            jobs: page.jobs,
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        })))
    }

    /// Get a job
    ///
    /// Returns the job's state, progress, ETA, failure reason and outputs.
    /// Cheap to poll: the gateway caches what it reads from storage.
    #[oai(path = "/:id", method = "get", operation_id = "getJob")]
    async fn get(
        &self,
        /// Job id.
        id: Path<String>,
    ) -> Result<ViewResponse, ErrorResponse> {
        let id = parse_id(&id.0)?;
        Ok(ViewResponse::Ok(Json(self.gateway.view(id).await?)))
    }

    /// Cancel a job
    ///
    /// Stops a queued or running job: its processes get SIGTERM, then
    /// SIGKILL after the template's grace period. Answers `409` for a job
    /// that already finished.
    #[oai(path = "/:id", method = "delete", operation_id = "cancelJob")]
    async fn cancel(
        &self,
        /// Job id.
        id: Path<String>,
    ) -> Result<CancelResponse, ErrorResponse> {
        let id = parse_id(&id.0)?;
        Ok(CancelResponse::Accepted(Json(self.gateway.cancel(id).await?)))
    }

    /// Get a job's logs
    ///
    /// Returns the standard output and error of the job's containers as
    /// plain text. With `follow`, the response streams new lines until the
    /// job ends.
    #[oai(path = "/:id/logs", method = "get", operation_id = "getJobLogs")]
    async fn logs(
        &self,
        /// Job id.
        id: Path<String>,
        /// Only the last lines, 0 to 100000.
        #[oai(validator(maximum(value = "100000")))]
        tail: Query<Option<u32>>,
        /// Keep the response open and stream new lines until the job ends.
        #[oai(default)]
        follow: Query<bool>,
    ) -> Result<LogsResponse, ErrorResponse> {
        let id = parse_id(&id.0)?;
        let options = LogOptions {
            tail: tail.0.map(|t| (t as usize).min(MAX_LOG_TAIL)),
            follow: follow.0,
        };
        let stream = self.gateway.logs(id, options).await?;
        Ok(LogsResponse::Ok(Binary(Body::from_bytes_stream(stream))))
    }

    /// Download an output
    ///
    /// Streams one of the job's output files with its content type.
    #[oai(path = "/:id/outputs/:name", method = "get", operation_id = "getJobOutput")]
    async fn output(
        &self,
        /// Job id.
        id: Path<String>,
        /// Output name, as listed in the job's `outputs`.
        name: Path<String>,
    ) -> Result<Response<OutputResponse>, ErrorResponse> {
        let id = parse_id(&id.0)?;
        let download = self.gateway.output(id, &name.0).await?;
        let body = Body::from_bytes_stream(download.reader.body);
        // This header replaces the `*/*` that `OutputResponse` sets.
        Ok(Response::new(OutputResponse::Ok(Binary(body)))
            .header("Content-Type", download.content_type)
            .header("Content-Length", download.reader.meta.size.to_string())
            .header("Cache-Control", "private, max-age=3600"))
    }
}

impl From<Problem> for ErrorResponse {
    fn from(problem: Problem) -> Self {
        ErrorResponse::from_problem(problem, None)
    }
}
