//! Discovery documents: `/version`, `/api`, `/apis` and the resource lists of
//! each group version, in the legacy (unaggregated) form.
//!
//! kubectl 1.32 requests aggregated discovery first but also accepts
//! `application/json`, so these plain documents, sent as
//! `application/json`, make it fall back to the legacy requests.

use serde_json::{json, Value};

use crate::resource::{Resource, OBJECT_VERBS};

/// The Kubernetes version the fake claims to be.
pub const KUBERNETES_MINOR: &str = "33";

/// Groups besides core, with their only version.
pub const GROUPS: &[&str] = &["batch", "authorization.k8s.io"];

/// Returns the `/version` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "emulationMajor": "1",
        "emulationMinor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Returns the `/api` document.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group(name: &str) -> Value {
    let version = json!({ "groupVersion": format!("{name}/v1"), "version": "v1" });
    json!({ "name": name, "versions": [version.clone()], "preferredVersion": version })
}

/// Returns the `/apis` document.
pub fn groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|name| group(name)).collect::<Vec<_>>(),
    })
}

/// Returns the `/apis/<group>` document, if the group is served.
pub fn group_document(name: &str) -> Option<Value> {
    GROUPS.contains(&name).then(|| {
        let mut document = group(name);
        document["kind"] = json!("APIGroup");
        document["apiVersion"] = json!("v1");
        document
    })
}

fn resource_entries(resource: Resource) -> Vec<Value> {
    let mut main = json!({
        "name": resource.plural(),
        "singularName": resource.singular(),
        "namespaced": true,
        "kind": resource.kind(),
        "verbs": OBJECT_VERBS,
    });
    if !resource.short_names().is_empty() {
        main["shortNames"] = json!(resource.short_names());
    }
    if matches!(resource, Resource::Pods | Resource::Jobs) {
        main["categories"] = json!(["all"]);
    }
    let mut entries = vec![main];
    for (sub, kind, verbs) in resource.subresources() {
        entries.push(json!({
            "name": format!("{}/{sub}", resource.plural()),
            "singularName": "",
            "namespaced": true,
            "kind": kind,
            "verbs": verbs,
        }));
    }
    entries
}

/// Returns the resource list of a group version (`""` for core `v1`), if served.
pub fn resources(group: &str) -> Option<Value> {
    let (group_version, entries) = match group {
        "" => {
            let mut entries = vec![json!({
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": false,
                "kind": "Namespace",
                "verbs": ["get", "list"],
                "shortNames": ["ns"],
            })];
            for resource in Resource::ALL.into_iter().filter(|r| r.group().is_empty()) {
                entries.extend(resource_entries(resource));
            }
            ("v1".to_string(), entries)
        }
        "batch" => ("batch/v1".to_string(), resource_entries(Resource::Jobs)),
        "authorization.k8s.io" => (
            "authorization.k8s.io/v1".to_string(),
            vec![json!({
                "name": "selfsubjectaccessreviews",
                "singularName": "selfsubjectaccessreview",
                "namespaced": false,
                "kind": "SelfSubjectAccessReview",
                "verbs": ["create"],
            })],
        ),
        _ => return None,
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}
