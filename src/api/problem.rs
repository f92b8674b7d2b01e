//! Errors as `application/problem+json` (RFC 9457), made in one place.
//!
//! Each kind of error has a stable `type` URI; clients branch on it, never on
//! the human-readable `title` or `detail`.

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object};

use crate::service::{error_chain, GatewayError};

/// Prefix of every problem `type`. The URIs name kinds of errors; they are
/// identifiers, not pages to fetch.
pub const TYPE_PREFIX: &str = "https://jobgate.dev/problems/";

/// Problem details of a failed request.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// URI that identifies the kind of problem.
    #[oai(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong in this request, and how to fix it.
    pub detail: String,
    /// Every invalid field, for validation errors; absent for other errors.
    #[oai(default, skip_serializing_if_is_empty)]
    pub errors: Vec<FieldProblem>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Object)]
pub struct FieldProblem {
    /// JSON Pointer to the field in the body, such as `/parameters/sizes/0`,
    /// or the name of a query or path parameter, such as `limit`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Example for Problem {
    fn example() -> Self {
        Self {
        kind: format!("{TYPE_PREFIX}invalid-parameters"),
        title: "Invalid parameters".into(),
        status: 400,
        detail: "2 parameters of template \"thumbnail\" are invalid".into(),
        errors: vec![FieldProblem {
            field: "/parameters/sizes/0".into(),
                message: "8 is less than the minimum of 16".into(),
            }],
        }
    }
}

impl Problem {
    /// Creates a problem of kind `kind` (the last segment of its type URI).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{TYPE_PREFIX}{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

/// The error responses every operation may return.
#[derive(Debug, ApiResponse)]
pub enum ErrorResponse {
    /// The request is invalid; `errors` lists each invalid field.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// The job, template or output does not exist.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The request conflicts with the job's state (cancelling a finished job)
    /// or with the gateway's setup (a presigned upload on a store that cannot
    /// sign URLs).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The request body is larger than allowed.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body has a content type the operation does not take.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The gateway failed; the problem is logged with its cause.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A dependency (store, executor) is unavailable; retry after the given seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(
        Json<Problem>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
}

impl ErrorResponse {
    /// Wraps a problem in the response of its status.
    pub fn from_problem(problem: Problem, retry_after: Option<u64>) -> Self {
        match problem.status {
            400 => Self::BadRequest(Json(problem)),
            404 => Self::NotFound(Json(problem)),
            409 => Self::Conflict(Json(problem)),
            413 => Self::PayloadTooLarge(Json(problem)),
            415 => Self::UnsupportedMediaType(Json(problem)),
            503 => Self::Unavailable(Json(problem), retry_after),
            _ => Self::Internal(Json(problem)),
        }
    }
}

impl From<GatewayError> for ErrorResponse {
    fn from(error: GatewayError) -> Self {
        let mut retry_after = None;
        let problem = match &error {
            GatewayError::TemplateNotFound { name } => Problem::new(
                StatusCode::NOT_FOUND,
                "template-not-found",
                "Template not found",
                format!("no template is named {name:?}; GET /v1/templates lists the templates"),
            ),
            GatewayError::TemplateInvalid { name, error: why } => {
                tracing::warn!(template = %name, error = %why, "request for an invalid template");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "template-invalid",
                    "Template is invalid",
                    format!("template {name:?} is broken, so an operator must fix it: {why}"),
                )
            }
            GatewayError::InvalidParameters { template, errors } => {
                let mut problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-parameters",
                    "Invalid parameters",
                    format!(
                        "{} parameter error(s) for template {template:?}; GET /v1/templates/{template} shows the schema",
                        errors.len()
                    ),
                );
                problem.errors = errors
                    .iter()
                    .map(|e| FieldProblem {
                        field: format!("/parameters{}", e.field),
                        message: e.message.clone(),
                    })
                    .collect();
                problem
            }
            GatewayError::InvalidField { field, message } => {
                let mut problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-request",
                    "Invalid request",
                    format!("invalid {field}: {message}"),
                );
                problem.errors = vec![FieldProblem {
                    field: format!("/{field}"),
                    message: message.clone(),
                }];
                problem
            }
            GatewayError::JobNotFound { id } => Problem::new(
                StatusCode::NOT_FOUND,
                "job-not-found",
                "Job not found",
                format!("no job has the id {id}"),
            ),
            GatewayError::AlreadyFinished { id, state } => Problem::new(
                StatusCode::CONFLICT,
                "job-finished",
                "Job already finished",
                format!("job {id} is already {state}, so it cannot be cancelled"),
            ),
            GatewayError::OutputNotFound { id, name } => Problem::new(
                StatusCode::NOT_FOUND,
                "output-not-found",
                "Output not found",
                format!("job {id} has no output named {name:?}; the job view lists its outputs"),
            ),
            GatewayError::TooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the body is larger than the limit of {limit} bytes"),
            ),
            GatewayError::Unavailable { why, retry_after: after } => {
                tracing::warn!(reason = %why, "request failed: dependency unavailable");
                retry_after = *after;
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", why.clone())
            }
            GatewayError::Unrunnable(inner) => {
                tracing::warn!(error = %inner, "template renders a Job the executor cannot run");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "template-not-runnable",
                    "Template cannot run here",
                    format!("{inner}; an operator must fix the template"),
                )
            }
            GatewayError::Internal { .. } => {
                tracing::error!(error = %error_chain(&error), "request failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the gateway failed to handle the request; the cause is in its log",
                )
            }
        };
        Self::from_problem(problem, retry_after)
    }
}

/// Turns any error that escaped the operations (unknown route, wrong method,
/// malformed JSON, wrong content type) into a problem response.
pub fn from_poem_error(error: poem::Error) -> poem::Response {
    // Operations return their typed problem responses as errors that
    // already carry the response; pass those through unchanged.
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let (kind, title) = match status {
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        s if s.is_client_error() => ("invalid-request", "Invalid request"),
        _ => ("internal", "Internal error"),
    };
    let mut errors = Vec::new();
    let detail = if status.is_server_error() {
        tracing::error!(error = %error, "request failed");
        "the gateway failed to handle the request; the cause is in its log".to_owned()
    } else if status == StatusCode::NOT_FOUND {
        "no such route; /docs lists the API".to_owned()
    } else if let Some(parameter) = error.downcast_ref::<poem_openapi::error::ParseParamError>() {
        let message = parameter_message(&parameter.reason);
        errors.push(serde_json::json!({"field": parameter.name, "message": message}));
        format!("parameter `{}` is invalid: {message}; /docs lists what each parameter takes", parameter.name)
    } else {
        error.to_string()
    };
    let problem = Problem::new(status, kind, title, detail);
    let mut body = serde_json::json!({
        "type": problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    });
    if !errors.is_empty() {
        body["errors"] = serde_json::Value::Array(errors);
    }
    poem::Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body.to_string())
}

/// Rewrites poem-openapi's reason for a parameter that did not parse in the
/// API's terms: `failed to parse "integer(uint32)": invalid digit found in
/// string (occurred while parsing "optional_integer(uint32)")` becomes
/// `expected a whole number of 0 or more: invalid digit found in string`.
fn parameter_message(reason: &str) -> String {
    let reason = reason.split(" (occurred while parsing").next().unwrap_or(reason);
    let Some(rest) = reason.strip_prefix("failed to parse \"") else {
        return reason.to_owned();
    };
    let Some((kind, cause)) = rest.split_once("\": ") else {
        return reason.to_owned();
    };
    let expected = match kind {
        "integer(uint32)" | "integer(uint64)" => "a whole number of 0 or more",
        "integer(int32)" | "integer(int64)" => "a whole number",
        "boolean" => "true or false",
        "string(uuid)" => "a UUID",
        _ => return reason.to_owned(),
    };
    format!("expected {expected}: {cause}")
}

#[cfg(test)]
mod parameter_tests {
    use super::parameter_message;

    #[test]
    fn parameter_reasons_use_plain_words() {
        assert_eq!(
            parameter_message("failed to parse \"integer(uint32)\": invalid digit found in string (occurred while parsing \"optional_integer(uint32)\")"),
            "expected a whole number of 0 or more: invalid digit found in string"
        );
        assert_eq!(parameter_message("failed to parse \"boolean\": x"), "expected true or false: x");
        assert_eq!(parameter_message("something else"), "something else");
    }
}
