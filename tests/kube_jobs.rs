//! End-to-end tests of the gateway in Kubernetes mode, against the fake
//! Kubernetes API server (`fake-kube`, in tests/support/fake-kube) through
//! the real kube client, with the gateway's RBAC identity.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::Api;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use support::{gateway_binary, repo_root, TestGateway};

/// The fake cluster's binary, built beside the gateway's by `cargo build --workspace --bins`.
fn fake_kube_binary() -> PathBuf {
    gateway_binary().with_file_name("fake-kube")
}

struct FakeKube {
    child: Child,
    admin: PathBuf,
    gateway: PathBuf,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fake(dir: &Path) -> FakeKube {
    let binary = fake_kube_binary();
    assert!(binary.exists(), "{} is missing; run `cargo build --workspace --bins`", binary.display());
    let admin = dir.join("admin.kubeconfig");
    let gateway = dir.join("admin.kubeconfig.jobgate");
    let child = Command::new(binary)
        .arg("--kubeconfig")
        .arg(&admin)
        .arg("--role")
        .arg(repo_root().join("kustomize/base/rbac.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !gateway.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "fake-kube wrote no kubeconfig");
        std::thread::sleep(Duration::from_millis(50));
    }
    FakeKube { child, admin, gateway }
}

async fn admin_client(path: &Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Creates the template ConfigMaps of the test fixtures in the cluster.
async fn apply_templates(client: kube::Client, namespace: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    for name in ["shell.yaml", "echo.yaml"] {
        let text = std::fs::read_to_string(repo_root().join("tests/fixtures/templates").join(name)).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let config_map = ConfigMap::deserialize(document).unwrap();
            api.create(&PostParams::default(), &config_map).await.unwrap();
        }
    }
}

async fn start_kube_gateway() -> (TestGateway, FakeKube, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(dir.path());
    apply_templates(admin_client(&fake.admin).await, "jobgate").await;
    let data = dir.path().join("data");
    let gateway = TestGateway::start(
        dir.path(),
        &data,
        &[
            "--executor",
            "kubernetes",
            "--namespace",
            "jobgate",
            "--kubeconfig",
            fake.gateway.to_str().unwrap(),
            "--stuck-seconds",
            "3",
        ],
    );
    (gateway, fake, dir)
}

#[tokio::test]
async fn kubernetes_job_runs_to_outputs() {
    let (gateway, _fake, _dir) = start_kube_gateway().await;
    let (status, templates) = gateway.get("/v1/templates").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(templates["templates"].as_array().unwrap().len(), 2, "{templates}");

    let script = "echo 'progress 50 half'; sleep 1; mkdir -p out; printf 'from k8s' > out/k.txt; echo 'output out/k.txt'";
    let id = gateway.submit("shell", json!({"script": script})).await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["started_at"].is_string(), "{done}");
    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{done}");
    let body = gateway.http.get(gateway.url(outputs[0]["url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "from k8s");
    let logs = gateway.logs(&id).await;
    assert!(logs.contains("progress 50 half") || logs.contains("job succeeded"), "{logs}");
}

#[tokio::test]
async fn kubernetes_failure_and_cancel() {
    let (gateway, _fake, _dir) = start_kube_gateway().await;
    let failing = gateway.submit("shell", json!({"script": "echo broken >&2; exit 3", "retries": 1})).await;
    let done = gateway.wait_terminal(&failing).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "BackoffLimitExceeded", "{done}");
    assert!(done["message"].as_str().unwrap().contains("code 3"), "{done}");

    let deadline = gateway.submit("shell", json!({"script": "sleep 60", "deadline": 1})).await;
    let done = gateway.wait_terminal(&deadline).await;
    assert_eq!(done["reason"], "DeadlineExceeded", "{done}");

    let long = gateway.submit("shell", json!({"script": "sleep 60"})).await;
    gateway.wait_for(&long, "running", |v| v["state"] == "running").await;
    let (status, _) = gateway.delete(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = gateway.wait_terminal(&long).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let (status, _) = gateway.delete(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
}
