//! Calls to the Kubernetes API with a time limit, and the mapping of their
//! errors to responses a caller can act on.

use super::KubernetesExecutor;
use crate::executor::ExecutorError;

impl KubernetesExecutor {
    /// Runs an API request within the request timeout; the outer error is
    /// the timeout.
    pub(super) async fn within_timeout<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, ExecutorError> {
        tokio::time::timeout(self.inner.config.request_timeout, request)
            .await
            .map_err(|_| ExecutorError::Unavailable {
                why: format!(
                    "the Kubernetes API did not answer within {} s",
                    self.inner.config.request_timeout.as_secs()
                ),
                retry_after: Some(5),
            })
    }

    /// Runs an API request within the request timeout, mapping its errors.
    pub(super) async fn api_call<T>(&self, request: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, ExecutorError> {
        self.within_timeout(request)
            .await?
            .map_err(|error| api_error(error, &self.inner.config.namespace))
    }
}


/// Maps an API error to the executor's error.
pub(super) fn api_error(error: kube::Error, namespace: &str) -> ExecutorError {
    match &error {
        kube::Error::Api(status) if status.code == 403 => {
            tracing::warn!(message = %status.message, "the gateway lacks a permission");
            ExecutorError::Unavailable {
                why: format!(
                    "the gateway's service account lacks a permission in namespace {namespace:?}: {}; \
                     apply the Role in kustomize/base/rbac.yaml",
                    status.message
                ),
                retry_after: None,
            }
        }
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => ExecutorError::Unrunnable {
            executor: "kubernetes",
            why: format!("the API server rejected the rendered Job: {}", status.message),
        },
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => ExecutorError::Unavailable {
            why: format!("the Kubernetes API answered {}: {}", status.code, status.message),
            retry_after: Some(if status.code == 429 { 5 } else { 2 }),
        },
        _ => ExecutorError::Unavailable {
            why: format!("the Kubernetes API cannot be reached: {error}"),
            retry_after: Some(5),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"status": "Failure", "code": code, "message": message})).unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_errors_map_to_actionable_answers() {
        let forbidden = "jobs.batch is forbidden: User \"system:serviceaccount:ns:jobgate\" cannot create resource \"jobs\"";
        let cases: Vec<(kube::Error, &str, Option<u64>, &str)> = vec![
            (status(403, forbidden), "unavailable", None, "cannot create resource \"jobs\""),
            (status(422, "Job.batch \"x\" is invalid: spec.template.spec.containers: Required value"), "unrunnable", None, "Required value"),
            (status(400, "bad request"), "unrunnable", None, "rejected the rendered Job"),
            (status(429, "too many requests"), "unavailable", Some(5), "answered 429"),
            (status(500, "etcdserver: request timed out"), "unavailable", Some(2), "answered 500"),
            (status(503, "unavailable"), "unavailable", Some(2), "answered 503"),
        ];
        for (error, kind, retry, part) in cases {
            let mapped = api_error(error, "ns");
            let text = mapped.to_string();
            match (&mapped, kind) {
                (ExecutorError::Unavailable { retry_after, .. }, "unavailable") => {
                    assert_eq!(*retry_after, retry, "{text}");
                }
                (ExecutorError::Unrunnable { .. }, "unrunnable") => {}
                _ => panic!("expected {kind}, got {mapped:?}"),
            }
            assert!(text.contains(part), "{text:?} lacks {part:?}");
        }
        let forbidden = api_error(status(403, forbidden), "ns").to_string();
        assert!(forbidden.contains("kustomize/base/rbac.yaml"), "the fix is named: {forbidden}");
    }
}
