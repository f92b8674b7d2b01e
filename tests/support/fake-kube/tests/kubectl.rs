//! kubectl against the fake: apply, get, describe, logs and delete through
//! a written kubeconfig. Skipped, with a note, where kubectl is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::wait_for;
use jobgate_fake_kube::{FakeCluster, Options, User};
use serde_json::Value;

const MANIFESTS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  text: hello from a ConfigMap
---
apiVersion: batch/v1
kind: Job
metadata:
  name: greeter
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: busybox:1.36
          command: [sh, -c, 'echo \"$TEXT\"']
          env:
            - name: TEXT
              valueFrom:
                configMapKeyRef: { name: greeting, key: text }
";

fn kubectl_path() -> Option<PathBuf> {
    jobgate::executor::local::pod::resolve_program("kubectl", &[])
}

struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "kubectl {args:?} failed: {stderr}\n{stdout}");
        stdout
    }
}

/// Starts a cluster that serves requests without a token as the admin,
/// because kubectl sends no credentials over plain HTTP.
async fn start() -> FakeCluster {
    let options = Options {
        unauthenticated_user: Some(User::Admin),
        ..Options::default()
    };
    FakeCluster::start(options).await.expect("the fake cluster starts")
}

async fn setup(dir: &Path, cluster: &FakeCluster, user: User) -> Option<Kubectl> {
    let Some(program) = kubectl_path() else {
        eprintln!("skipped: kubectl is not on PATH; install it to run the kubectl fidelity tests");
        return None;
    };
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig, user).unwrap();
    Some(Kubectl { program, kubeconfig })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_describe_delete() {
    let cluster = start().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(kubectl) = setup(dir.path(), &cluster, User::Admin).await else { return };
    let manifest = dir.path().join("manifests.yaml");
    std::fs::write(&manifest, MANIFESTS).unwrap();

    let applied = kubectl.ok(&["apply", "--validate=false", "-f", manifest.to_str().unwrap()]).await;
    let config_map: Value = serde_json::from_str(&kubectl.ok(&["get", "configmap", "greeting", "-o", "json"]).await).unwrap();
    let job = wait_for("the Job to complete", || {
        let kubectl = &kubectl;
        async move {
            let job: Value = serde_json::from_str(&kubectl.ok(&["get", "job", "greeter", "-o", "json"]).await).unwrap();
            (job.pointer("/status/succeeded") == Some(&Value::from(1))).then_some(job)
        }
    })
    .await;
    let described = kubectl.ok(&["describe", "job", "greeter"]).await;
    let logs = kubectl.ok(&["logs", "job/greeter"]).await;
    let table = kubectl.ok(&["get", "jobs"]).await;
    let deleted = kubectl.ok(&["delete", "job", "greeter"]).await;
    let after = kubectl.run(&["get", "job", "greeter"]).await;

    assert!(applied.contains("configmap/greeting created"), "{applied}");
    assert!(applied.contains("job.batch/greeter created"), "{applied}");
    assert_eq!(config_map["data"]["text"], "hello from a ConfigMap");
    assert!(config_map.pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration").is_some());
    assert_eq!(job["status"]["conditions"][1]["type"], "Complete");
    assert!(described.contains("0 Active (0 Ready) / 1 Succeeded / 0 Failed"), "{described}");
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert_eq!(logs, "hello from a ConfigMap\n");
    assert!(table.contains("greeter"), "{table}");
    assert!(deleted.contains("job.batch \"greeter\" deleted"), "{deleted}");
    assert!(String::from_utf8_lossy(&after.stderr).contains("NotFound"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reapply_updates_config_map() {
    let cluster = start().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(kubectl) = setup(dir.path(), &cluster, User::Admin).await else { return };
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n").unwrap();
    kubectl.ok(&["apply", "--validate=false", "-f", manifest.to_str().unwrap()]).await;
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  b: \"2\"\n").unwrap();

    let applied = kubectl.ok(&["apply", "--validate=false", "-f", manifest.to_str().unwrap()]).await;
    let config_map: Value = serde_json::from_str(&kubectl.ok(&["get", "cm", "cfg", "-o", "json"]).await).unwrap();

    assert!(applied.contains("configmap/cfg configured"), "{applied}");
    assert_eq!(config_map["data"], serde_json::json!({ "b": "2" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_namespaces_and_pods() {
    let cluster = start().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(kubectl) = setup(dir.path(), &cluster, User::Admin).await else { return };

    let namespaces = kubectl.ok(&["get", "namespaces", "-o", "name"]).await;
    let pods = kubectl.ok(&["get", "pods", "-o", "json"]).await;

    assert!(namespaces.contains("namespace/jobgate"), "{namespaces}");
    assert!(pods.contains("\"kind\": \"List\""), "{pods}");
}
