//! Shared helpers: a started fake cluster, kube clients for its users, and
//! Job manifests.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use jobgate_fake_kube::{FakeCluster, Options, User};
use k8s_openapi::api::batch::v1::Job;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};

/// Maximum wait for a Job or pod to reach a state in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Starts a fake cluster with the default options.
pub async fn start() -> FakeCluster {
    FakeCluster::start(Options::default()).await.expect("the fake cluster starts")
}

/// Builds a kube client for a user, through the cluster's kubeconfig.
pub async fn client(cluster: &FakeCluster, user: User) -> Client {
    client_with(cluster, user, true).await
}

/// Builds a kube client, with or without kube's retry of 429 and 503.
pub async fn client_with(cluster: &FakeCluster, user: User, retry: bool) -> Client {
    // Another test may have installed it already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::from_yaml(&cluster.kubeconfig(user)).expect("the kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is usable");
    config.default_retry = retry;
    Client::try_from(config).expect("the client builds")
}

/// Builds a Job running `script` with `sh -c`, with extra spec fields
/// merged over the defaults.
pub fn shell_job(name: &str, script: &str, spec: Value) -> Job {
    let mut manifest = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "labels": { "jobgate.dev/template": "test" } },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", script],
                    }],
                },
            },
        },
    });
    json_patch::merge(&mut manifest["spec"], &spec);
    serde_json::from_value(manifest).expect("the Job manifest is valid")
}

/// Polls `check` until it returns `Some`, panicking with `what` after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < WAIT, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns the condition types of a Job's status, in order.
pub fn condition_types(job: &Job) -> Vec<String> {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|condition| condition.status == "True")
        .map(|condition| condition.type_.clone())
        .collect()
}

/// Returns the reason of a Job's condition of `kind`.
pub fn condition_reason(job: &Job, kind: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == kind)?
        .reason
        .clone()
}

/// Returns true when a Job has a `Complete` or `Failed` condition.
pub fn is_finished(job: &Job) -> bool {
    let types = condition_types(job);
    types.iter().any(|t| t == "Complete" || t == "Failed")
}

/// Returns the API error of a kube result, panicking on success or on
/// another kind of error.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
