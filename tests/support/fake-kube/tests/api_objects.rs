//! CRUD, selectors, Status bodies, RBAC and injected faults, through the
//! real kube client.

mod common;

use std::time::{Duration, Instant};

use common::{api_error, client, client_with, shell_job, start};
use jobgate_fake_kube::User;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "data": { "key": "value" },
    }))
    .unwrap()
}

#[tokio::test]
async fn config_map_create_get_delete() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());

    let created = api.create(&PostParams::default(), &config_map("settings", json!({}))).await.unwrap();
    let fetched = api.get("settings").await.unwrap();
    let deleted = api.delete("settings", &DeleteParams::default()).await.unwrap();
    let missing = api.get_opt("settings").await.unwrap();

    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(fetched.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(fetched.data.unwrap()["key"], "value");
    assert!(deleted.is_right(), "a ConfigMap delete returns a Status");
    assert!(missing.is_none());
}

#[tokio::test]
async fn merge_patch_bumps_resource_version() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let created = api.create(&PostParams::default(), &config_map("patched", json!({}))).await.unwrap();

    let patch = json!({ "data": { "key": "new", "other": "x" } });
    let patched = api.patch("patched", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    let before: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    let after: u64 = patched.metadata.resource_version.unwrap().parse().unwrap();
    let data = patched.data.unwrap();
    assert!(after > before, "{after} > {before}");
    assert_eq!(data["key"], "new");
    assert_eq!(data["other"], "x");
}

#[tokio::test]
async fn list_filters_by_selectors() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        api.create(&PostParams::default(), &config_map(name, json!({ "tier": tier }))).await.unwrap();
    }

    let web = api.list(&ListParams::default().labels("tier=web")).await.unwrap();
    let not_web = api.list(&ListParams::default().labels("tier notin (web)")).await.unwrap();
    let by_name = api.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();

    let names = |list: &kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items.iter().map(|item| item.metadata.name.clone().unwrap()).collect()
    };
    assert_eq!(names(&web), ["a", "b"]);
    assert_eq!(names(&not_web), ["c"]);
    assert_eq!(names(&by_name), ["b"]);
    assert!(web.metadata.resource_version.is_some());
}

#[tokio::test]
async fn generate_name_gives_unique_names() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let mut template = config_map("", json!({}));
    template.metadata.name = None;
    template.metadata.generate_name = Some("run-".into());

    let first = api.create(&PostParams::default(), &template).await.unwrap();
    let second = api.create(&PostParams::default(), &template).await.unwrap();

    let first = first.metadata.name.unwrap();
    let second = second.metadata.name.unwrap();
    assert!(first.starts_with("run-"), "{first}");
    assert_eq!(first.len(), "run-".len() + 5);
    assert_ne!(first, second);
}

#[tokio::test]
async fn missing_job_returns_not_found_status() {
    let cluster = start().await;
    let api: Api<Job> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());

    let status = api_error(api.get("x").await);

    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "jobs.batch \"x\" not found");
    let details = status.details.unwrap();
    assert_eq!(details.name, "x");
    assert_eq!(details.group, "batch");
    assert_eq!(details.kind, "jobs");
}

#[tokio::test]
async fn duplicate_job_returns_already_exists() {
    let cluster = start().await;
    let api: Api<Job> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let job = shell_job("twice", "sleep 5", json!({}));
    api.create(&PostParams::default(), &job).await.unwrap();

    let status = api_error(api.create(&PostParams::default(), &job).await);

    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "AlreadyExists");
    assert_eq!(status.message, "jobs.batch \"twice\" already exists");
}

#[tokio::test]
async fn invalid_job_name_returns_invalid() {
    let cluster = start().await;
    let api: Api<Job> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let job = shell_job("Not_Valid", "true", json!({}));

    let status = api_error(api.create(&PostParams::default(), &job).await);

    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert!(status.message.starts_with("Job.batch \"Not_Valid\" is invalid: metadata.name: Invalid value"), "{}", status.message);
    let causes = status.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldValueInvalid");
    assert_eq!(causes[0].field, "metadata.name");
}

#[tokio::test]
async fn job_without_containers_returns_invalid() {
    let cluster = start().await;
    let api: Api<Job> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let mut job = shell_job("empty", "true", json!({}));
    job.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers.clear();

    let status = api_error(api.create(&PostParams::default(), &job).await);

    let causes = status.details.unwrap().causes;
    assert_eq!(status.code, 422);
    assert_eq!(causes[0].reason, "FieldValueRequired");
    assert_eq!(causes[0].field, "spec.template.spec.containers");
}

#[tokio::test]
async fn stale_update_returns_conflict() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let created = api.create(&PostParams::default(), &config_map("versioned", json!({}))).await.unwrap();
    let mut newer = created.clone();
    newer.data = Some([("key".to_string(), "one".to_string())].into());
    api.replace("versioned", &PostParams::default(), &newer).await.unwrap();

    let mut stale = created;
    stale.data = Some([("key".to_string(), "two".to_string())].into());
    let status = api_error(api.replace("versioned", &PostParams::default(), &stale).await);

    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
}

#[tokio::test]
async fn secret_string_data_becomes_data() {
    let cluster = start().await;
    let api: Api<Secret> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" },
        "stringData": { "token": "abc" },
    }))
    .unwrap();

    let created = api.create(&PostParams::default(), &secret).await.unwrap();

    assert_eq!(created.data.unwrap()["token"].0, b"abc");
    assert!(created.string_data.is_none());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn gateway_patch_job_is_forbidden() {
    let cluster = start().await;
    let namespace = cluster.namespace().to_string();
    let api: Api<Job> = Api::namespaced(client(&cluster, User::Gateway).await, &namespace);
    api.create(&PostParams::default(), &shell_job("mine", "sleep 5", json!({}))).await.unwrap();

    let patch = json!({ "spec": { "suspend": true } });
    let status = api_error(api.patch("mine", &PatchParams::default(), &Patch::Merge(&patch)).await);

    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        format!("jobs.batch \"mine\" is forbidden: User \"system:serviceaccount:{namespace}:jobgate\" cannot patch resource \"jobs\" in API group \"batch\" in the namespace \"{namespace}\"")
    );
}

#[tokio::test]
async fn gateway_secret_read_is_forbidden() {
    let cluster = start().await;
    let api: Api<Secret> = Api::namespaced(client(&cluster, User::Gateway).await, cluster.namespace());

    let status = api_error(api.list(&ListParams::default()).await);

    assert_eq!(status.code, 403);
    assert!(status.message.starts_with("secrets is forbidden"), "{}", status.message);
}

#[tokio::test]
async fn gateway_other_namespace_is_forbidden() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Gateway).await, "default");

    let status = api_error(api.list(&ListParams::default()).await);

    assert_eq!(status.code, 403);
}

#[tokio::test]
async fn unknown_token_is_unauthorized() {
    let cluster = start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = cluster.kubeconfig(User::Gateway).replace(cluster.token(User::Gateway), "wrong");
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), cluster.namespace());

    let status = api_error(api.list(&ListParams::default()).await);

    assert_eq!(status.code, 401);
}

async fn review(cluster: &jobgate_fake_kube::FakeCluster, verb: &str, group: &str, resource: &str, sub: Option<&str>) -> bool {
    let api: Api<SelfSubjectAccessReview> = Api::all(client(cluster, User::Gateway).await);
    let request = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(cluster.namespace().to_string()),
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: sub.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api.create(&PostParams::default(), &request).await.unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test]
async fn access_review_follows_role() {
    let cluster = start().await;

    assert!(review(&cluster, "create", "batch", "jobs", None).await);
    assert!(review(&cluster, "get", "", "pods", Some("log")).await);
    assert!(!review(&cluster, "update", "batch", "jobs", None).await);
    assert!(!review(&cluster, "get", "", "secrets", None).await);
}

#[tokio::test]
async fn injected_503_is_retried_by_kube() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    cluster.faults().inject_status(503, Some("list"), Some("configmaps"), 2);

    let list = api.list(&ListParams::default()).await;

    assert!(list.is_ok(), "{list:?}");
    assert_eq!(cluster.faults().injected_served(), 2);
}

#[tokio::test]
async fn injected_429_surfaces_without_retry() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client_with(&cluster, User::Admin, false).await, cluster.namespace());
    cluster.faults().inject_status(429, None, Some("configmaps"), 1);

    let status = api_error(api.get("any").await);

    assert_eq!(status.code, 429);
    assert_eq!(status.reason, "TooManyRequests");
    assert_eq!(cluster.faults().injected_pending(), 0);
}

#[tokio::test]
async fn injected_500_surfaces_to_client() {
    let cluster = start().await;
    let api: Api<Job> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    cluster.faults().inject_status(500, Some("create"), Some("jobs"), 1);

    let status = api_error(api.create(&PostParams::default(), &shell_job("five", "true", json!({}))).await);
    let retried = api.create(&PostParams::default(), &shell_job("five", "true", json!({}))).await;

    assert_eq!(status.code, 500);
    assert_eq!(status.reason, "InternalError");
    assert!(retried.is_ok(), "{retried:?}");
}

#[tokio::test]
async fn injected_latency_delays_requests() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    cluster.faults().set_latency(Duration::from_millis(300));

    let started = Instant::now();
    api.list(&ListParams::default()).await.unwrap();

    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}
