//! core/v1 Events written by the simulated controllers, aggregated by
//! involved object, reason and message as the real event recorder does.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{json, Value};

use crate::objects::{name_of, now, uid_of};
use crate::resource::Resource;
use crate::store::{Key, Store};

/// Who writes an event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    JobController,
    Scheduler,
    Kubelet,
}

impl Source {
    fn component(self) -> &'static str {
        match self {
            Source::JobController => "job-controller",
            Source::Scheduler => "default-scheduler",
            Source::Kubelet => "kubelet",
        }
    }
}

/// Records an event about `involved`, or bumps the count of the same event.
/// `field_path` names a container, as `spec.containers{main}`.
pub(crate) fn record(
    store: &Store,
    involved: &Value,
    warning: bool,
    reason: &str,
    message: &str,
    source: Source,
    field_path: Option<&str>,
) {
    let namespace = involved.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let mut hasher = DefaultHasher::new();
    (uid_of(involved), reason, message, source.component(), field_path).hash(&mut hasher);
    let name = format!("{}.{:016x}", name_of(involved), hasher.finish());
    let key = Key::new(Resource::Events, namespace, &name);
    let timestamp = now();
    let bumped = store.update(&key, |event| {
        let count = event["count"].as_i64().unwrap_or(1);
        event["count"] = json!(count + 1);
        event["lastTimestamp"] = json!(timestamp);
        Ok(())
    });
    if bumped.is_ok() {
        return;
    }
    let mut involved_object = json!({
        "kind": involved["kind"],
        "namespace": namespace,
        "name": name_of(involved),
        "uid": uid_of(involved),
        "apiVersion": involved["apiVersion"],
        "resourceVersion": involved.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
    });
    if let Some(path) = field_path {
        involved_object["fieldPath"] = json!(path);
    }
    let mut source_value = json!({ "component": source.component() });
    if matches!(source, Source::Kubelet) {
        source_value["host"] = json!(crate::kubelet::NODE_NAME);
    }
    let event = json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": timestamp,
        },
        "involvedObject": involved_object,
        "reason": reason,
        "message": message,
        "source": source_value,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
        "type": if warning { "Warning" } else { "Normal" },
        "eventTime": null,
        "reportingComponent": source.component(),
        "reportingInstance": if matches!(source, Source::Kubelet) { crate::kubelet::NODE_NAME } else { "" },
    });
    if let Err(error) = store.create(key, event) {
        tracing::debug!(%error, reason, "recording an event failed");
    }
}
