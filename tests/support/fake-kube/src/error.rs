//! API errors and the `Status` bodies the real API server writes for them.

use serde_json::{json, Value};

use crate::resource::Resource;

/// An API failure, sent to the client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also `code` in the body.
    pub code: u16,
    /// Machine-readable `reason`, such as `NotFound`.
    pub reason: String,
    /// Human-readable `message`.
    pub message: String,
    /// `details`, when the real server sets them.
    pub details: Option<Value>,
    /// Seconds for the `Retry-After` header.
    pub retry_after: Option<u64>,
}

/// One entry of `details.causes` in a 422 Invalid Status.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported` or `FieldValueForbidden`.
    pub reason: &'static str,
    /// JSON path of the field, such as `metadata.name`.
    pub field: String,
    /// Message without the field, such as `Required value`.
    pub message: String,
}

impl Cause {
    /// Builds a `FieldValueRequired` cause.
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// Builds a `FieldValueInvalid` cause for `value`, with the rule it breaks.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", quote_value(value)),
        }
    }

    /// Builds a `FieldValueNotSupported` cause listing the allowed values.
    pub fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|v| format!("{v:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value:?}: supported values: {}", allowed.join(", ")),
        }
    }
}

/// Formats a value as the API server's field errors do: strings quoted,
/// numbers and other values as JSON.
fn quote_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

fn details(resource: Resource, name: &str) -> Value {
    let mut details = json!({ "name": name, "kind": resource.plural() });
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    details
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404 for a named object.
    pub fn not_found(resource: Resource, name: &str) -> Self {
        let mut error = Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", resource.qualified_plural()),
        );
        error.details = Some(details(resource, name));
        error
    }

    /// 404 for a namespace that does not exist.
    pub fn namespace_not_found(namespace: &str) -> Self {
        let mut error = Self::new(404, "NotFound", format!("namespaces {namespace:?} not found"));
        error.details = Some(json!({ "name": namespace, "kind": "namespaces" }));
        error
    }

    /// 404 for a URL that names no resource.
    pub fn path_not_found() -> Self {
        let mut error = Self::new(404, "NotFound", "the server could not find the requested resource");
        error.details = Some(json!({}));
        error
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(resource: Resource, name: &str) -> Self {
        let mut error = Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", resource.qualified_plural()),
        );
        error.details = Some(details(resource, name));
        error
    }

    /// 409 Conflict for a stale `resourceVersion` on update.
    pub fn conflict(resource: Resource, name: &str) -> Self {
        let mut error = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource.qualified_plural()
            ),
        );
        error.details = Some(details(resource, name));
        error
    }

    /// 422 Invalid with one cause per failed field.
    pub fn invalid(resource: Resource, name: &str, causes: &[Cause]) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.message))
            .collect();
        let summary = match listed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {summary}", resource.qualified_kind()),
        );
        let causes: Vec<Value> = causes
            .iter()
            .map(|cause| json!({ "reason": cause.reason, "message": cause.message, "field": cause.field }))
            .collect();
        let mut details = json!({ "name": name, "kind": resource.kind(), "causes": causes });
        if !resource.group().is_empty() {
            details["group"] = json!(resource.group());
        }
        error.details = Some(details);
        error
    }

    /// 403 Forbidden for a request that RBAC does not allow.
    pub fn forbidden(
        user: &str,
        verb: &str,
        resource: Resource,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let target = match name {
            Some(name) => format!("{} {name:?}", resource.qualified_plural()),
            None => resource.qualified_plural(),
        };
        let resource_name = match subresource {
            Some(sub) => format!("{}/{sub}", resource.plural()),
            None => resource.plural().to_string(),
        };
        let scope = match namespace {
            Some(namespace) => format!(" in the namespace {namespace:?}"),
            None => " at the cluster scope".to_string(),
        };
        let mut error = Self::new(
            403,
            "Forbidden",
            format!(
                "{target} is forbidden: User {user:?} cannot {verb} resource {resource_name:?} \
                 in API group {:?}{scope}",
                resource.group()
            ),
        );
        error.details = Some(details(resource, name.unwrap_or_default()));
        error
    }

    /// 401 for a request without a known bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 400 BadRequest with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 for a verb a resource does not support.
    pub fn method_not_allowed(method: &str) -> Self {
        let mut error = Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        );
        error.details = Some(json!({}));
        error
    }

    /// 415 for a patch or body type the fake does not read.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json (got {content_type:?})"),
        )
    }

    /// 410 Expired for a watch or list from a compacted `resourceVersion`.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 429 TooManyRequests with `Retry-After`.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut error = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        error.details = Some(json!({ "retryAfterSeconds": retry_after }));
        error.retry_after = Some(retry_after);
        error
    }

    /// 500 InternalError.
    pub fn internal(message: &str) -> Self {
        let mut error = Self::new(500, "InternalError", format!("Internal error occurred: {message}"));
        error.details = Some(json!({ "causes": [{ "message": message }] }));
        error
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: &str) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// Builds an injected error for an HTTP status code.
    pub fn injected(code: u16, retry_after: u64) -> Self {
        match code {
            429 => Self::too_many_requests(retry_after),
            503 => Self::unavailable("the fake API server was told to answer 503"),
            500 => Self::internal("the fake API server was told to answer 500"),
            other => Self::new(other, "InternalError", format!("injected status {other}")),
        }
    }

    /// Returns the `Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The `Status` body of a successful delete without an object to return.
pub fn success_status(resource: Resource, name: &str, uid: &str) -> Value {
    let mut details = details(resource, name);
    details["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
