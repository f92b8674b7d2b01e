//! Container environment as the kubelet builds it: `envFrom` first, then
//! `env` in order, with `valueFrom` references to ConfigMaps, Secrets and
//! pod fields, and `$(VAR)` references expanded.

use std::collections::HashMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, EnvVarSource};
use serde_json::Value;

use crate::quantity;
use crate::resource::Resource;
use crate::store::{Key, Store};

/// Expands `$(NAME)` with earlier variables; `$$` writes a literal `$`, and
/// unknown references stay as they are, as the kubelet does.
pub fn expand(text: &str, values: &HashMap<String, String>) -> String {
    let mut output = String::new();
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        output.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            output.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match values.get(name) {
                        Some(value) => output.push_str(value),
                        None => {
                            output.push_str("$(");
                            output.push_str(name);
                            output.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    output.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            output.push('$');
            rest = after;
        }
    }
    output.push_str(rest);
    output
}

fn data_of(store: &Store, resource: Resource, namespace: &str, name: &str) -> Option<HashMap<String, String>> {
    let object = store.get(&Key::new(resource, namespace, name))?;
    let mut values = HashMap::new();
    let decode = resource == Resource::Secrets;
    for field in ["data", "binaryData"] {
        for (key, value) in object.get(field).and_then(Value::as_object).into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let text = if decode || field == "binaryData" {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .unwrap_or_default()
            } else {
                text.to_string()
            };
            values.insert(key.clone(), text);
        }
    }
    Some(values)
}

fn kind_name(resource: Resource) -> (&'static str, &'static str) {
    match resource {
        Resource::Secrets => ("secret", "Secret"),
        _ => ("configmap", "ConfigMap"),
    }
}

fn key_ref(
    store: &Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    let (lower, upper) = kind_name(resource);
    match data_of(store, resource, namespace, name) {
        None if optional => Ok(None),
        None => Err(format!("{lower} {name:?} not found")),
        Some(data) => match data.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(format!("couldn't find key {key} in {upper} {namespace}/{name}")),
        },
    }
}

fn field_ref(pod: &Value, path: &str) -> Result<String, String> {
    let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let map_entry = |prefix: &str, map: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(pod.pointer(&format!("/metadata/{map}")).and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or_default().to_string())
    };
    if let Some(value) = map_entry("metadata.labels['", "labels").or_else(|| map_entry("metadata.annotations['", "annotations")) {
        return Ok(value);
    }
    match path {
        "metadata.name" => Ok(text("/metadata/name")),
        "metadata.namespace" => Ok(text("/metadata/namespace")),
        "metadata.uid" => Ok(text("/metadata/uid")),
        "spec.nodeName" => Ok(crate::kubelet::NODE_NAME.to_string()),
        "spec.serviceAccountName" => Ok(pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default").to_string()),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => Ok(crate::kubelet::NODE_IP.to_string()),
        other => Err(format!("unsupported fieldRef path {other:?}")),
    }
}

fn resource_field(container: &Value, node: (u64, u64), resource: &str, divisor: Option<&str>) -> Result<String, String> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("unsupported resourceFieldRef {resource:?}"))?;
    let quantity = container.pointer(&format!("/resources/{kind}/{name}"));
    match name {
        "cpu" => {
            let millis = quantity.and_then(quantity::cpu_millis).unwrap_or(node.0);
            let divisor = divisor.and_then(|d| quantity::parse_scaled(d, 1000.0)).filter(|d| *d > 0).unwrap_or(1000);
            Ok(millis.div_ceil(divisor).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = quantity.and_then(quantity::memory_bytes).unwrap_or(node.1);
            let divisor = divisor.and_then(|d| quantity::parse_scaled(d, 1.0)).filter(|d| *d > 0).unwrap_or(1);
            Ok(bytes.div_ceil(divisor).to_string())
        }
        other => Err(format!("unsupported resourceFieldRef resource {other:?}")),
    }
}

fn value_from(store: &Store, pod: &Value, container: &Value, node: (u64, u64), source: &EnvVarSource) -> Result<Option<String>, String> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    if let Some(selector) = &source.config_map_key_ref {
        return key_ref(store, Resource::ConfigMaps, namespace, &selector.name, &selector.key, selector.optional == Some(true));
    }
    if let Some(selector) = &source.secret_key_ref {
        return key_ref(store, Resource::Secrets, namespace, &selector.name, &selector.key, selector.optional == Some(true));
    }
    if let Some(selector) = &source.field_ref {
        return field_ref(pod, &selector.field_path).map(Some);
    }
    if let Some(selector) = &source.resource_field_ref {
        let divisor = selector.divisor.as_ref().map(|d| d.0.as_str());
        return resource_field(container, node, &selector.resource, divisor).map(Some);
    }
    Err("valueFrom names no source".into())
}

/// Builds a container's environment, or returns the message of the
/// CreateContainerConfigError the kubelet reports.
pub fn resolve(store: &Store, pod: &Value, container_json: &Value, node: (u64, u64)) -> Result<Vec<(String, String)>, String> {
    let container: Container = serde_json::from_value(container_json.clone()).map_err(|error| error.to_string())?;
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let mut ordered: Vec<(String, String)> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let set = |ordered: &mut Vec<(String, String)>, values: &mut HashMap<String, String>, name: String, value: String| {
        ordered.retain(|(existing, _)| *existing != name);
        values.insert(name.clone(), value.clone());
        ordered.push((name, value));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (resource, name, optional) = match (&source.config_map_ref, &source.secret_ref) {
            (Some(reference), _) => (Resource::ConfigMaps, reference.name.clone(), reference.optional == Some(true)),
            (None, Some(reference)) => (Resource::Secrets, reference.name.clone(), reference.optional == Some(true)),
            (None, None) => continue,
        };
        match data_of(store, resource, namespace, &name) {
            Some(data) => {
                let mut keys: Vec<_> = data.into_iter().collect();
                keys.sort();
                for (key, value) in keys {
                    set(&mut ordered, &mut values, format!("{prefix}{key}"), value);
                }
            }
            None if optional => {}
            None => return Err(format!("{} {name:?} not found", kind_name(resource).0)),
        }
    }
    for variable in container.env.iter().flatten() {
        let value = match (&variable.value, &variable.value_from) {
            (_, Some(source)) => match value_from(store, pod, container_json, node, source)? {
                Some(value) => value,
                None => continue,
            },
            (Some(value), None) => expand(value, &values),
            (None, None) => String::new(),
        };
        set(&mut ordered, &mut values, variable.name.clone(), value);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_references_and_escapes() {
        let values = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)", &values), "x-$(B)");
        assert_eq!(expand("$$(A)", &values), "$(A)");
        assert_eq!(expand("cost $5", &values), "cost $5");
    }
}
