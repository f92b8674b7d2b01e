//! The HTTP API: poem-openapi operations, the OpenAPI document, Swagger UI,
//! and the middleware that turns every error into problem details.

pub mod health;
pub mod jobs;
pub mod problem;
pub mod templates;
pub mod uploads;

use std::sync::Arc;

use poem::http::StatusCode;
use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use self::health::HealthApi;
use self::jobs::JobsApi;
use self::templates::TemplatesApi;
use self::uploads::UploadsApi;
use crate::catalog::Catalog;
use crate::service::Gateway;

/// Default largest JSON request body, in bytes. Parameters are small
/// documents; files go through uploads.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Groups of operations in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// Submit, follow, cancel and list jobs; download outputs.
    Jobs,
    /// Discover templates and their parameter schemas.
    Templates,
    /// Upload input files for jobs.
    Uploads,
    /// Liveness and readiness probes.
    Health,
}

/// The operations, as one poem-openapi service.
pub type Api = (JobsApi, TemplatesApi, UploadsApi, HealthApi);

/// Builds the OpenAPI service; also used to write `openapi/openapi.yaml`.
pub fn service(gateway: Gateway, catalog: Arc<Catalog>) -> OpenApiService<Api, ()> {
    let api = (
        JobsApi { gateway: gateway.clone() },
        TemplatesApi { catalog },
        UploadsApi { gateway: gateway.clone() },
        HealthApi { gateway },
    );
    OpenApiService::new(api, "jobgate", env!("CARGO_PKG_VERSION"))
        .description(limits_description())
        .license(
            poem_openapi::LicenseObject::new("Apache-2.0").url("https://www.apache.org/licenses/LICENSE-2.0"),
        )
        // Each installation serves the API at its own address, so the only
        // server is relative: the one that served this document.
        .server(
            poem_openapi::ServerObject::new("/")
                .description("The gateway that serves this document, at its own address"),
        )
}

/// Returns the document's description, with the input limits it enforces.
fn limits_description() -> String {
    use crate::catalog::params::MAX_PARAMETER_DEPTH;
    use crate::service::{MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_PAGE_SIZE};
    format!(
        "Run heavy work as Kubernetes Jobs created from templates, and follow it to its \
         outputs. Errors are problem details (RFC 9457) with a stable `type` per kind.\n\n\
         Limits, each answered with a problem response:\n\n\
         - JSON request bodies: {body} bytes by default (`--max-body-bytes`); larger bodies get `413`.\n\
         - Job parameters: nested at most {depth} levels deep, and within the body limit; deeper get `400`.\n\
         - Labels: at most {labels} per job, keys of 1 to {key} bytes, values of at most {value} bytes.\n\
         - Pages of `GET /v1/jobs`: 1 to {page} jobs.\n\
         - Uploads: {upload} bytes by default (`--max-upload-bytes`); larger uploads get `413`, \
         checked against `Content-Length` and again while streaming.",
        body = DEFAULT_MAX_BODY_BYTES,
        depth = MAX_PARAMETER_DEPTH,
        labels = MAX_LABELS,
        key = MAX_LABEL_KEY,
        value = MAX_LABEL_VALUE,
        page = MAX_PAGE_SIZE,
        upload = crate::config::DEFAULT_MAX_UPLOAD_BYTES,
    )
}

/// Builds the whole HTTP application.
pub fn app(gateway: Gateway, catalog: Arc<Catalog>, max_body_bytes: usize) -> impl Endpoint {
    let service = service(gateway.clone(), catalog);
    let max_upload = gateway.limits().max_upload_bytes;
    Route::new()
        .nest("/docs", service.swagger_ui())
        .at("/openapi.json", service.spec_endpoint())
        .at("/openapi.yaml", service.spec_endpoint_yaml())
        .nest("/", service)
        .around(move |endpoint, request| limit_body(endpoint, request, max_body_bytes, max_upload))
        .catch_all_error(|error| async move { problem::from_poem_error(error) })
        .with(Tracing)
}

/// Rejects bodies above the limit with `413` before an operation reads them:
/// by `Content-Length` when given, and by reading at most the limit when the
/// body is chunked. Uploads are streamed, so only their `Content-Length` is
/// checked here; the store enforces their limit while streaming.
async fn limit_body<E: Endpoint>(
    endpoint: Arc<E>,
    mut request: Request,
    max_body_bytes: usize,
    max_upload_bytes: u64,
) -> poem::Result<Response> {
    let is_upload = request.uri().path().starts_with("/v1/uploads");
    let limit = if is_upload { max_upload_bytes } else { max_body_bytes as u64 };
    let declared = request
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Ok(too_large(limit));
    }
    if !is_upload && declared.is_none() {
        let body = request.take_body();
        match body.into_bytes_limit(max_body_bytes).await {
            Ok(bytes) => request.set_body(bytes),
            Err(_) => return Ok(too_large(limit)),
        }
    }
    let mut response = match endpoint.call(request).await {
        Ok(response) => response.into_response(),
        Err(error) => problem::from_poem_error(error),
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // An upload stopped at its limit leaves body bytes unread.
        response.headers_mut().insert(
            poem::http::header::CONNECTION,
            poem::http::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// Builds the `413` problem response. It closes the connection, because
/// the unread rest of the body would otherwise be taken as the next request.
fn too_large(limit: u64) -> Response {
    let error = poem::Error::from_string(
        format!("the body is larger than the limit of {limit} bytes"),
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    let mut response = problem::from_poem_error(error);
    response.headers_mut().insert(
        poem::http::header::CONNECTION,
        poem::http::HeaderValue::from_static("close"),
    );
    response
}
