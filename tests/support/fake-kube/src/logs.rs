//! Container logs: where the kubelet simulator writes each container run's
//! output, and the `pods/log` subresource that reads it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use poem::{Body, Response};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::flag_set;
use crate::cluster::Shared;
use crate::error::ApiError;
use crate::resource::Resource;
use crate::store::Key;

/// One run of one container: its log file, and a token cancelled when the
/// run ended.
#[derive(Debug, Clone)]
pub(crate) struct LogRun {
    pub path: PathBuf,
    pub finished: CancellationToken,
}

type ContainerKey = (String, String, String);

/// The log files of every container run, by namespace, pod and container.
#[derive(Debug, Default)]
pub(crate) struct LogRegistry {
    runs: Mutex<HashMap<ContainerKey, Vec<LogRun>>>,
}

impl LogRegistry {
    /// Records a new run of a container that logs to `path`.
    pub fn start_run(&self, namespace: &str, pod: &str, container: &str, path: PathBuf) -> LogRun {
        let run = LogRun {
            path,
            finished: CancellationToken::new(),
        };
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default()
            .push(run.clone());
        run
    }

    fn runs(&self, namespace: &str, pod: &str, container: &str) -> Vec<LogRun> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the runs of a deleted pod.
    pub fn forget_pod(&self, namespace: &str, pod: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|(ns, name, _), _| !(ns == namespace && name == pod));
    }
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|container| container["name"].as_str().map(str::to_string))
        .collect()
}

fn waiting_reason(pod: &Value, container: &str) -> String {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|list| pod.pointer(&format!("/status/{list}")).and_then(Value::as_array))
        .flatten()
        .find(|status| status["name"] == container)
        .and_then(|status| status.pointer("/state/waiting/reason").and_then(Value::as_str))
        .unwrap_or("ContainerCreating")
        .to_string()
}

impl Shared {
    /// Serves `GET pods/NAME/log` with `container`, `tailLines`, `follow`
    /// and `previous`.
    pub(crate) async fn pod_log(
        &self,
        namespace: &str,
        name: &str,
        query: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let pod = self
            .store
            .get(&Key::new(Resource::Pods, namespace, name))
            .ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
        let containers = container_names(&pod, "containers");
        let init_containers = container_names(&pod, "initContainers");
        let container = match query.get("container").filter(|c| !c.is_empty()) {
            Some(container) => {
                if !containers.contains(container) && !init_containers.contains(container) {
                    return Err(ApiError::bad_request(format!(
                        "container {container} is not valid for pod {name}"
                    )));
                }
                container.clone()
            }
            None if containers.len() == 1 => containers[0].clone(),
            None => {
                let mut message = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init_containers.is_empty() {
                    message.push_str(&format!(" or one of the init containers: [{}]", init_containers.join(" ")));
                }
                return Err(ApiError::bad_request(message));
            }
        };
        let runs = self.logs.runs(namespace, name, &container);
        let run = if flag_set(query, "previous") {
            runs.len().checked_sub(2).and_then(|index| runs.get(index)).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container {container:?} in pod {name:?} not found"
                ))
            })?
        } else {
            runs.last().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "container {container:?} in pod {name:?} is waiting to start: {}",
                    waiting_reason(&pod, &container)
                ))
            })?
        };
        let tail = match query.get("tailLines").filter(|t| !t.is_empty()) {
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("invalid tailLines {text:?}: expected a whole number"))
            })?),
            None => None,
        };
        let follow = flag_set(query, "follow").then(|| run.finished.clone());
        // NOTE: `sinceSeconds`, `sinceTime`, `timestamps` and `limitBytes`
        // are ignored.
        let stream = jobgate::executor::local::logs::stream(run.path.clone(), tail, follow)
            .await
            .map_err(|error| ApiError::internal(&format!("reading the log of container {container:?} failed: {error}")))?;
        Ok(Response::builder()
            .content_type("text/plain")
            .body(Body::from_bytes_stream(stream)))
    }
}
