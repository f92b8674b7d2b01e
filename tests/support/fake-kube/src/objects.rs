//! Preparing objects on create and update as the API server's defaulting,
//! validation and registry strategies do for the served types.

use std::collections::BTreeSet;

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Cause};
use crate::resource::Resource;

/// Characters of generated name suffixes, as the API server's name
/// generator uses them (no vowels, so no words).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Label keys the Job registry adds to a Job's pod template (Kubernetes 1.27+
/// writes both the prefixed and the legacy keys).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Returns the current time as Kubernetes writes `Time`: RFC 3339, seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Returns the current time as Kubernetes writes `MicroTime`.
pub fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Returns `length` random characters for a generated name.
pub fn random_suffix(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks an RFC 1123 subdomain name, returning the causes it breaks.
pub fn check_subdomain(field: &str, name: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if name.len() > 253 {
        causes.push(Cause::invalid(field, &json!(name), "must be no more than 253 characters"));
    }
    if !name.split('.').all(is_dns_label) {
        causes.push(Cause::invalid(field, &json!(name), SUBDOMAIN_RULE));
    }
    causes
}

/// Checks an RFC 1123 label, returning the causes it breaks.
pub fn check_label(field: &str, name: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if name.len() > 63 {
        causes.push(Cause::invalid(field, &json!(name), "must be no more than 63 characters"));
    }
    if !is_dns_label(name) {
        causes.push(Cause::invalid(field, &json!(name), LABEL_RULE));
    }
    causes
}

fn object_mut<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value.get(key).is_some_and(Value::is_object) {
        value[key] = json!({});
    }
    value[key].as_object_mut().expect("set to an object above")
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// Name of an object, or empty.
pub fn name_of(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.uid` of an object, or empty.
pub fn uid_of(object: &Value) -> &str {
    object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()
}

/// Prepares a new object for storing: checks kind and namespace, applies
/// `generateName`, validates, applies defaults and sets `uid`,
/// `creationTimestamp` and `generation`. `resourceVersion` is left to the store.
pub fn prepare_create(resource: Resource, namespace: &str, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    for (field, expected) in [("kind", resource.kind()), ("apiVersion", resource.api_version())] {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => object[field] = json!(expected),
            Some(given) if given == expected => {}
            Some(given) => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the body ({given}) does not match the {field} of {} ({expected})",
                    resource.qualified_plural()
                )));
            }
        }
    }
    let metadata = object_mut(object, "metadata");
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != namespace => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => {
            metadata.insert("namespace".into(), json!(namespace));
        }
    }
    let name = metadata.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let generate = metadata
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = if name.is_empty() && !generate.is_empty() {
        // The real generator keeps the name within 63 characters by cutting the prefix.
        let prefix: String = generate.chars().take(58).collect();
        let generated = format!("{prefix}{}", random_suffix(5));
        metadata.insert("name".into(), json!(generated));
        generated
    } else {
        name
    };
    for field in ["uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "selfLink"] {
        metadata.remove(field);
    }
    metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    metadata.insert("creationTimestamp".into(), json!(now()));

    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    } else {
        causes.extend(check_subdomain("metadata.name", &name));
    }
    match resource {
        Resource::Jobs => prepare_job(object, &name, &mut causes),
        Resource::Pods => {
            object.as_object_mut().map(|map| map.remove("status"));
            let spec = object_mut(object, "spec");
            default_pod_spec(spec);
            let mut spec = Value::Object(spec.clone());
            check_pod_spec(&mut spec, "spec", false, &mut causes);
            object["spec"] = spec;
            object["status"] = json!({ "phase": "Pending", "qosClass": qos_class(&object["spec"]) });
        }
        Resource::Secrets => prepare_secret(object),
        Resource::ConfigMaps => {}
        Resource::Events => {
            if object.get("involvedObject").is_none_or(Value::is_null) {
                causes.push(Cause::required("involvedObject"));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, &name, &causes))
    }
}

/// Moves `stringData` into base64 `data`, as the Secret registry does.
pub fn prepare_secret(object: &mut Value) {
    use base64::Engine;
    if let Some(Value::Object(string_data)) = object.as_object_mut().and_then(|map| map.remove("stringData")) {
        let data = object_mut(object, "data");
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default();
            data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
    let map = object.as_object_mut().expect("checked to be an object");
    set_default(map, "type", json!("Opaque"));
}

/// Applies the pod spec defaults of the v1 API (Kubernetes 1.33).
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                set_default(container, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(container, "terminationMessagePolicy", json!("File"));
                set_default(container, "resources", json!({}));
                let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
                let last = image.rsplit('/').next().unwrap_or_default();
                let latest = !last.contains(':') || last.ends_with(":latest");
                let policy = if latest && !image.contains('@') { "Always" } else { "IfNotPresent" };
                set_default(container, "imagePullPolicy", json!(policy));
            }
        }
    }
}

/// Validates a pod spec at `path`; a Job's template allows only the
/// `OnFailure` and `Never` restart policies.
fn check_pod_spec(spec: &mut Value, path: &str, in_job: bool, causes: &mut Vec<Cause>) {
    let mut names = BTreeSet::new();
    match spec.get("containers").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {}
        _ => causes.push(Cause::required(format!("{path}.containers"))),
    }
    for list in ["initContainers", "containers"] {
        let containers = spec.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
        for (index, container) in containers.iter().enumerate() {
            let field = format!("{path}.{list}[{index}]");
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                causes.push(Cause::required(format!("{field}.name")));
            } else {
                causes.extend(check_label(&format!("{field}.name"), name));
                if !names.insert(name.to_string()) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: format!("{field}.name"),
                        message: format!("Duplicate value: {name:?}"),
                    });
                }
            }
            if container.get("image").and_then(Value::as_str).unwrap_or_default().trim().is_empty() {
                causes.push(Cause::required(format!("{field}.image")));
            }
        }
    }
    let policy = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or_default().to_string();
    let field = format!("{path}.restartPolicy");
    if in_job {
        if policy.is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field,
                message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
            });
        } else if policy != "OnFailure" && policy != "Never" {
            causes.push(Cause::not_supported(field, &policy, &["OnFailure", "Never"]));
        }
    } else if !["Always", "OnFailure", "Never"].contains(&policy.as_str()) {
        causes.push(Cause::not_supported(field, &policy, &["Always", "OnFailure", "Never"]));
    }
}

/// Returns the QoS class the kubelet would give a pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        let requests = container.pointer("/resources/requests").and_then(Value::as_object);
        let limits = container.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn check_non_negative(spec: &Value, key: &str, positive: bool, causes: &mut Vec<Cause>) {
    if let Some(value) = spec.get(key).filter(|v| !v.is_null()) {
        let number = value.as_i64();
        let ok = match number {
            Some(n) if positive => n > 0,
            Some(n) => n >= 0,
            None => false,
        };
        if !ok {
            let rule = if positive { "must be greater than 0" } else { "must be greater than or equal to 0" };
            causes.push(Cause::invalid(format!("spec.{key}"), value, rule));
        }
    }
}

/// Validates a Job and applies the batch/v1 defaults and the registry's
/// generated selector and pod template labels.
fn prepare_job(object: &mut Value, name: &str, causes: &mut Vec<Cause>) {
    if name.len() > 63 {
        causes.push(Cause::invalid("spec.template.labels", &json!(name), "must be no more than 63 characters"));
    }
    object.as_object_mut().map(|map| map.remove("status"));
    object["status"] = json!({});
    object["metadata"]["generation"] = json!(1);
    if !object.get("spec").is_some_and(Value::is_object) {
        causes.push(Cause::required("spec"));
        return;
    }
    let uid = uid_of(object).to_string();
    let template_labels = object
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .filter(Value::is_object);
    let metadata = object_mut(object, "metadata");
    if metadata.get("labels").is_none_or(|labels| labels.as_object().is_none_or(Map::is_empty)) {
        if let Some(labels) = template_labels {
            metadata.insert("labels".into(), labels);
        }
    }

    let spec = object_mut(object, "spec");
    if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null) {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    let mode = spec.get("completionMode").and_then(Value::as_str).unwrap_or_default().to_string();
    if mode != "NonIndexed" && mode != "Indexed" {
        causes.push(Cause::not_supported("spec.completionMode", &mode, &["NonIndexed", "Indexed"]));
    }
    let spec_value = Value::Object(spec.clone());
    check_non_negative(&spec_value, "backoffLimit", false, causes);
    check_non_negative(&spec_value, "parallelism", false, causes);
    check_non_negative(&spec_value, "completions", false, causes);
    check_non_negative(&spec_value, "activeDeadlineSeconds", true, causes);
    check_non_negative(&spec_value, "ttlSecondsAfterFinished", false, causes);
    if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) {
        spec.insert(
            "selector".into(),
            json!({ "matchLabels": { CONTROLLER_UID_LABEL: uid } }),
        );
    }
    let Some(template) = spec.get_mut("template").filter(|t| t.is_object()) else {
        causes.push(Cause::required("spec.template"));
        return;
    };
    let template_metadata = object_mut(template, "metadata");
    let mut labels = template_metadata
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert("controller-uid".into(), json!(uid));
    labels.insert(CONTROLLER_UID_LABEL.into(), json!(uid));
    labels.insert(JOB_NAME_LABEL.into(), json!(name));
    labels.insert("job-name".into(), json!(name));
    template_metadata.insert("labels".into(), Value::Object(labels));
    let pod_spec = object_mut(template, "spec");
    default_pod_spec(pod_spec);
    let mut pod_spec = Value::Object(pod_spec.clone());
    check_pod_spec(&mut pod_spec, "spec.template.spec", true, causes);
    template["spec"] = pod_spec;
}

/// Checks an update of an existing object: name and namespace may not
/// change, and a Job's selector and pod template are immutable.
pub fn check_update(resource: Resource, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let name = name_of(old).to_string();
    let mut causes = Vec::new();
    if name_of(new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(new)
        )));
    }
    match resource {
        Resource::Jobs => {
            for field in ["template", "selector", "completionMode", "completions"] {
                let before = old.pointer(&format!("/spec/{field}"));
                let after = new.pointer(&format!("/spec/{field}"));
                if before != after {
                    causes.push(Cause::invalid(
                        format!("spec.{field}"),
                        after.unwrap_or(&Value::Null),
                        "field is immutable",
                    ));
                }
            }
            let mut spec = new.get("spec").cloned().unwrap_or(Value::Null);
            check_non_negative(&spec, "parallelism", false, &mut causes);
            check_non_negative(&spec, "activeDeadlineSeconds", true, &mut causes);
            check_non_negative(&spec, "backoffLimit", false, &mut causes);
            if let Some(map) = spec.as_object_mut() {
                set_default(map, "suspend", json!(false));
            }
            new["spec"] = spec;
            if old.get("spec") != new.get("spec") {
                let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                new["metadata"]["generation"] = json!(generation + 1);
            }
        }
        Resource::Pods => {
            let containers = |object: &Value| object.pointer("/spec/containers").cloned();
            if containers(old) != containers(new) {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    field: "spec".into(),
                    message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                });
            }
        }
        Resource::Secrets => prepare_secret(new),
        Resource::ConfigMaps | Resource::Events => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, &name, &causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> Value {
        json!({
            "metadata": { "name": name },
            "spec": { "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": "busybox:1.36", "command": ["true"] }]
            } } }
        })
    }

    #[test]
    fn job_create_sets_defaults_and_labels() {
        let mut object = job("hello");
        prepare_create(Resource::Jobs, "apps", &mut object).unwrap();
        let uid = uid_of(&object).to_string();
        assert_eq!(object["spec"]["backoffLimit"], 6);
        assert_eq!(object["spec"]["completions"], 1);
        assert_eq!(object["spec"]["parallelism"], 1);
        assert_eq!(object["spec"]["completionMode"], "NonIndexed");
        assert_eq!(object["spec"]["selector"]["matchLabels"][CONTROLLER_UID_LABEL], json!(uid));
        assert_eq!(object["spec"]["template"]["metadata"]["labels"][JOB_NAME_LABEL], "hello");
        assert_eq!(object["metadata"]["namespace"], "apps");
    }

    #[test]
    fn job_create_rejects_bad_name() {
        let mut object = job("Bad_Name");
        let error = prepare_create(Resource::Jobs, "apps", &mut object).unwrap_err();
        assert_eq!(error.code, 422);
        assert_eq!(error.details.as_ref().unwrap()["causes"][0]["field"], "metadata.name");
        assert!(error.message.starts_with("Job.batch \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", error.message);
    }

    #[test]
    fn job_create_requires_restart_policy() {
        let mut object = job("ok");
        object["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let error = prepare_create(Resource::Jobs, "apps", &mut object).unwrap_err();
        let cause = &error.details.as_ref().unwrap()["causes"][0];
        assert_eq!(cause["reason"], "FieldValueNotSupported");
        assert_eq!(cause["field"], "spec.template.spec.restartPolicy");
    }

    #[test]
    fn generate_name_appends_suffix() {
        let mut object = json!({ "metadata": { "generateName": "run-" }, "data": {} });
        prepare_create(Resource::ConfigMaps, "apps", &mut object).unwrap();
        let name = name_of(&object);
        assert!(name.starts_with("run-"), "{name}");
        assert_eq!(name.len(), 9);
    }
}
