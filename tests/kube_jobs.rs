//! End-to-end tests of the gateway in Kubernetes mode. The gateway binary
//! serves on a loopback port and talks through the real kube client to the
//! fake Kubernetes API server (tests/support/fake-kube), with the Role of
//! kustomize/base/rbac.yaml. With `JOBGATE_TEST_KUBECONFIG` set, it talks to
//! a real cluster instead (see tests/support/cluster.rs).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::cluster::{TestCluster, STUCK_SECONDS, UNPULLABLE_REGISTRY};
use support::{assert_problem, is_running, TestGateway};

const SHELL_OUTPUT: &str =
    "echo 'progress 50 half'; sleep 1; mkdir -p out; printf 'from k8s' > out/k.txt; echo 'output out/k.txt'";

fn is_terminal(view: &Value) -> bool {
    matches!(view["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// Downloads the first output of a finished job through the gateway.
async fn first_output(gateway: &TestGateway, view: &Value) -> String {
    let outputs = view["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{view}");
    let response = gateway
        .http
        .get(gateway.url(outputs[0]["gateway_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

async fn template_names(gateway: &TestGateway) -> Vec<String> {
    let (status, list) = gateway.get("/v1/templates").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Submit to outputs, logs and cancel. Afterwards the fake's record of the
/// gateway's requests must equal its Role: the Role grants all the gateway
/// uses and nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_to_outputs_within_the_role() {
    let cluster = TestCluster::start().await;
    let gateway = cluster.start_gateway();
    assert_eq!(template_names(&gateway).await, ["echo", "shell", "sized"]);

    let id = gateway.submit("shell", json!({"script": SHELL_OUTPUT})).await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["started_at"].is_string(), "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    assert_eq!(first_output(&gateway, &done).await, "from k8s");
    let logs = gateway.logs(&id).await;
    assert!(logs.contains("half"), "{logs}");
    assert!(cluster.job_names().await.contains(&format!("jobgate-{id}")));

    // Following right after submit waits for the container, then streams
    // until it ends; tail returns the last lines only.
    let counting = gateway
        .submit("shell", json!({"script": "for i in 1 2 3; do echo line$i; sleep 0.3; done"}))
        .await;
    let followed = gateway.logs_with(&counting, "?follow=true").await;
    assert!(followed.contains("line1"), "{followed}");
    assert!(followed.contains("line3"), "{followed}");
    let tail = gateway.logs_with(&counting, "?tail=1").await;
    assert!(!tail.is_empty(), "{tail:?}");
    assert!(!tail.contains("line1"), "{tail:?}");

    let long = gateway.submit("shell", json!({"script": "sleep 60"})).await;
    gateway.wait_for(&long, "running", |v| v["state"] == "running").await;
    let (status, _) = gateway.delete(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = gateway.wait_terminal(&long).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    cluster.wait_job_deleted(&long).await;
    let (status, view) = gateway.get(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "cancelled", "the state survives the Job's deletion: {view}");

    let Some(fake) = cluster.fake() else { return };
    let accesses = fake.gateway_accesses();
    let denied: Vec<_> = accesses.iter().filter(|access| !access.allowed).collect();
    assert!(denied.is_empty(), "the Role denied the gateway {denied:?}");
    let used: BTreeSet<(String, String, String)> = accesses
        .into_iter()
        .map(|access| (access.verb, access.group, access.resource))
        .collect();
    let granted: BTreeSet<(String, String, String)> = fake.role_grants().into_iter().collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(unused.is_empty(), "the Role grants what the gateway never used: {unused:?}");
    assert_eq!(used, granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retries_deadline_and_cancel() {
    let cluster = TestCluster::start().await;
    let gateway = cluster.start_gateway();
    let failing = gateway.submit("shell", json!({"script": "echo broken >&2; exit 3", "retries": 1})).await;
    let done = gateway.wait_terminal(&failing).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "BackoffLimitExceeded", "{done}");
    assert!(done["message"].as_str().unwrap().contains("code 3"), "{done}");
    assert_eq!(done["attempts"], 2, "one retry: {done}");

    let flaky = gateway
        .submit("shell", json!({"script": "if [ -e /tmp/jobgate-flaky-$JOBGATE_JOB_ID ]; then echo second; else touch /tmp/jobgate-flaky-$JOBGATE_JOB_ID; exit 1; fi", "retries": 2}))
        .await;
    let done = gateway.wait_terminal(&flaky).await;
    let _ = std::fs::remove_file(format!("/tmp/jobgate-flaky-{flaky}"));
    if cluster.fake().is_some() {
        // The fake's pods share this machine's /tmp, so the second attempt
        // finds the first one's marker; a real cluster's pods do not.
        assert_eq!(done["state"], "succeeded", "a retry succeeds: {done}");
        assert_eq!(done["attempts"], 2, "{done}");
    }

    let deadline = gateway.submit("shell", json!({"script": "sleep 60", "deadline": 1})).await;
    let done = gateway.wait_terminal(&deadline).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "DeadlineExceeded", "{done}");

    // In the fake the pod's processes run here, so the test can check that
    // cancelling stops them: SIGTERM, then SIGKILL after the grace period.
    let pid_file = cluster.dir.path().join("sleep.pid");
    let script = format!("sleep 120 & echo $! > '{}'; wait", pid_file.display());
    let long = gateway.submit("shell", json!({"script": script, "grace": 1})).await;
    gateway.wait_for(&long, "running", |v| v["state"] == "running").await;
    let started = Instant::now();
    while cluster.fake().is_some() && !pid_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the job never wrote its pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = gateway.delete(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = gateway.wait_terminal(&long).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let (status, body) = gateway.delete(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    cluster.wait_job_deleted(&long).await;
    if cluster.fake().is_some() {
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let started = Instant::now();
        while is_running(pid) {
            assert!(started.elapsed() < Duration::from_secs(15), "the job's sleep process {pid} survived the cancel");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Submits a job whose pod cannot start and checks that the gateway shows
/// why while it waits, then fails it after the stuck timeout and deletes its
/// Job.
async fn assert_stuck_then_failed(cluster: &TestCluster, parameters: Value, reasons: &[&str], message_part: &str) {
    let gateway = cluster.start_gateway();
    let id = gateway.submit("sized", parameters).await;
    let waiting = gateway
        .wait_for(&id, "queued with a reason", |v| v["reason"].is_string() || is_terminal(v))
        .await;
    assert_eq!(waiting["state"], "queued", "the reason shows while the job waits: {waiting}");
    assert!(waiting["started_at"].is_null(), "nothing has started: {waiting}");
    assert!(reasons.contains(&waiting["reason"].as_str().unwrap()), "{waiting}");

    let submitted = Instant::now();
    let done = gateway.wait_terminal(&id).await;
    assert!(submitted.elapsed() < Duration::from_secs(STUCK_SECONDS + 30), "{done}");
    assert_eq!(done["state"], "failed", "{done}");
    assert!(reasons.contains(&done["reason"].as_str().unwrap()), "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(message.contains(message_part), "{done}");
    assert!(message.contains(&format!("more than {STUCK_SECONDS} s")), "{done}");

    cluster.wait_job_deleted(&id).await;
    let (status, view) = gateway.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["reason"], done["reason"], "the failure survives the Job's deletion: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpullable_image_fails_the_job() {
    let cluster = TestCluster::start().await;
    let image = format!("{UNPULLABLE_REGISTRY}/jobgate/missing:1");
    assert_stuck_then_failed(
        &cluster,
        json!({"script": "true", "image": image}),
        &["ErrImagePull", "ImagePullBackOff"],
        &image,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_fails_the_job() {
    let cluster = TestCluster::start().await;
    // No node has a thousand CPUs, in the fake or in a test cluster.
    assert_stuck_then_failed(&cluster, json!({"script": "true", "cpu": "1000"}), &["Unschedulable"], "Insufficient cpu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_refused_by_quota_fails_the_job() {
    let cluster = TestCluster::start().await;
    cluster.limit_pod_cpu(1000).await;
    let gateway = cluster.start_gateway();
    let id = gateway.submit("sized", json!({"script": "true", "cpu": "2"})).await;
    let queued = gateway.get(&format!("/v1/jobs/{id}")).await.1;
    assert_eq!(queued["state"], "queued", "{queued}");
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "FailedCreate", "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(message.contains(&format!("kubectl describe job jobgate-{id}")), "the message says where to look: {done}");
    cluster.wait_job_deleted(&id).await;

    let id = gateway.submit("sized", json!({"script": "true", "cpu": "500m"})).await;
    assert_eq!(gateway.wait_terminal(&id).await["state"], "succeeded", "a pod within the quota runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_worker_secret_fails_the_job() {
    let cluster = TestCluster::start().await;
    let gateway = cluster.start_gateway_with(&["--worker-secret", "jobgate-missing"]);
    let id = gateway.submit("shell", json!({"script": "true"})).await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "CreateContainerConfigError", "{done}");
    assert!(done["message"].as_str().unwrap().contains("jobgate-missing"), "the message names the Secret: {done}");
    cluster.wait_job_deleted(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_container_fails_the_job() {
    let cluster = TestCluster::start().await;
    let gateway = cluster.start_gateway();
    // tail keeps the whole line-less input in memory, far above the limit.
    let id = gateway
        .submit("sized", json!({"script": "head -c 256M /dev/zero | tail", "memory": "24Mi"}))
        .await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "OOMKilled", "{done}");
    assert!(done["message"].as_str().unwrap().contains("exited with code 137"), "{done}");
    // The record kept after the Job is gone has the pod's reason too, not
    // only the Job condition's BackoffLimitExceeded.
    if let Some(record) = recorded_view(&gateway, &id).await {
        assert_eq!(record["reason"], "OOMKilled", "{record}");
    }
}

/// Reads the final record the gateway wrote for a job in its filesystem
/// store, waiting for it. Returns `None` when the store is not a folder, as
/// with S3 in a real cluster.
async fn recorded_view(gateway: &TestGateway, id: &str) -> Option<Value> {
    let store = gateway.data_dir.join("store");
    if !store.exists() {
        return None;
    }
    let path = store.join("jobs").join(id).join("status.json");
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "no final record at {}", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap())
}

/// Waits until the gateway's template list satisfies `check`.
async fn wait_templates(gateway: &TestGateway, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (status, list) = gateway.get("/v1/templates").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let templates = list["templates"].as_array().unwrap().clone();
        if check(&templates) {
            return templates;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "templates never showed {what}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_template_config_map_applies_without_restart() {
    let cluster = TestCluster::start().await;
    let gateway = cluster.start_gateway();
    let id = gateway.submit("echo", json!({"text": "before"})).await;
    assert_eq!(gateway.wait_terminal(&id).await["state"], "succeeded");
    assert_eq!(gateway.logs(&id).await, "beforebefore");

    // An operator edits the template: a new description, and a tighter
    // limit on the parameter.
    let edit: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "jobgate-template-echo"},
        "data": {
            "description": "Print a short text (edited)",
            "parameters.yaml": "type: object\nrequired: [text]\nproperties:\n  text:\n    type: string\n    maxLength: 5\n",
        }
    }))
    .unwrap();
    cluster.apply_config_map(edit).await;
    wait_templates(&gateway, "the edited description", |templates| {
        templates.iter().any(|t| t["name"] == "echo" && t["description"] == "Print a short text (edited)")
    })
    .await;
    let (status, body) = gateway
        .post("/v1/jobs", &json!({"template": "echo", "parameters": {"text": "far too long"}}))
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-parameters");
    assert!(body.to_string().contains("text"), "the error names the field: {body}");
    let id = gateway.submit("echo", json!({"text": "after"})).await;
    assert_eq!(gateway.wait_terminal(&id).await["state"], "succeeded");

    // A broken template is listed as invalid and leaves the others alone.
    let broken: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "jobgate-template-broken", "labels": {"jobgate.dev/template": "broken"}},
        "data": {"job.yaml": "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      containers:\n        - image: repo/{params.x}\n"}
    }))
    .unwrap();
    cluster.apply_config_map(broken).await;
    let templates = wait_templates(&gateway, "the broken template", |templates| {
        templates.iter().any(|t| t["name"] == "broken")
    })
    .await;
    let entry = templates.iter().find(|t| t["name"] == "broken").unwrap();
    assert_eq!(entry["valid"], false, "{entry}");
    assert!(entry["error"].as_str().unwrap().contains("whole YAML value"), "{entry}");
    assert!(templates.iter().filter(|t| t["name"] != "broken").all(|t| t["valid"] == true), "{templates:?}");
    let (status, body) = gateway.post("/v1/jobs", &json!({"template": "broken", "parameters": {}})).await;
    assert_problem(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "template-invalid");

    // A template that renders a Job the API server rejects (422: a Job's
    // pods may not restart Always) is the operator's error, and leaves no job.
    let rejected: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "jobgate-template-rejected", "labels": {"jobgate.dev/template": "rejected"}},
        "data": {"job.yaml": "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      restartPolicy: Always\n      containers:\n        - name: main\n          image: debian:bookworm-slim\n          command: [\"true\"]\n"}
    }))
    .unwrap();
    cluster.apply_config_map(rejected).await;
    wait_templates(&gateway, "the rejected template", |templates| templates.iter().any(|t| t["name"] == "rejected")).await;
    let (status, body) = gateway.post("/v1/jobs", &json!({"template": "rejected", "parameters": {}})).await;
    assert_problem(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "template-not-runnable");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("API server rejected"), "{body}");
    assert!(detail.contains("restartPolicy"), "the server's reason is passed on: {body}");
    let (_, list) = gateway.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "only the two echo jobs exist: {list}");
    let id = gateway.submit("shell", json!({"script": "true"})).await;
    assert_eq!(gateway.wait_terminal(&id).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_gateway_loses_no_job() {
    let cluster = TestCluster::start().await;
    let mut gateway = cluster.start_gateway();
    let done_before = gateway.submit("shell", json!({"script": "echo early"})).await;
    assert_eq!(gateway.wait_terminal(&done_before).await["state"], "succeeded");
    let finishes_while_down = gateway
        .submit("shell", json!({"script": format!("sleep 3; {SHELL_OUTPUT}")}))
        .await;
    let keeps_running = gateway.submit("shell", json!({"script": "sleep 60"})).await;
    gateway.wait_for(&finishes_while_down, "running", |v| v["state"] == "running").await;
    gateway.wait_for(&keeps_running, "running", |v| v["state"] == "running").await;

    gateway.crash();
    // The first job ends while no gateway watches.
    let started = Instant::now();
    while cluster.job_status(&finishes_while_down).await["succeeded"] != 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "the job did not finish while the gateway was down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let gateway = cluster.start_gateway();
    let view = gateway.wait_terminal(&finishes_while_down).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(first_output(&gateway, &view).await, "from k8s");
    let (status, view) = gateway.get(&format!("/v1/jobs/{done_before}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "succeeded", "{view}");
    let (status, view) = gateway.get(&format!("/v1/jobs/{keeps_running}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "running", "{view}");

    let (status, list) = gateway.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let listed: BTreeSet<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    for id in [&done_before, &finishes_while_down, &keeps_running] {
        assert!(listed.contains(id.as_str()), "{id} is listed after the restart: {list}");
    }
    let (status, _) = gateway.delete(&format!("/v1/jobs/{keeps_running}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(gateway.wait_terminal(&keeps_running).await["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_during_api_errors_returns_503() {
    let cluster = TestCluster::start().await;
    if cluster.skip_unless_fake("submit_during_api_errors_returns_503") {
        return;
    }
    let fake = cluster.fake().unwrap();
    let gateway = cluster.start_gateway_with(&["--kube-request-seconds", "2"]);
    let request = json!({"template": "shell", "parameters": {"script": "true"}});
    for code in [500, 503, 429] {
        fake.faults().inject_status(code, Some("create"), Some("jobs"), 1);
        let response = gateway.http.post(gateway.url("/v1/jobs")).json(&request).send().await.unwrap();
        let status = response.status();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        assert_problem(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{body}");
        let seconds: u64 = retry_after.expect("503 carries Retry-After").parse().unwrap();
        assert!(seconds >= 1, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(&code.to_string()), "{body}");
    }
    assert_eq!(fake.faults().injected_served(), 3);

    let (status, list) = gateway.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["jobs"], json!([]), "a failed create leaves no job behind: {list}");
    assert!(cluster.job_names().await.is_empty());

    // A create that outlasts the request timeout returns 503. When its Job
    // appears later, the gateway deletes it instead of running a job whose
    // caller received an error.
    fake.faults().set_latency(Duration::from_secs(3));
    let (status, body) = gateway.post("/v1/jobs", &request).await;
    assert_problem(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(body["detail"].as_str().unwrap().contains("within 2 s"), "{body}");
    fake.faults().set_latency(Duration::ZERO);
    let started = Instant::now();
    while cluster.job_names().await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "the late create never landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !cluster.job_names().await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the late Job was not deleted; gateway log:\n{}",
            gateway.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = gateway.get("/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]), "{list}");

    let id = gateway.submit("shell", json!({"script": "true"})).await;
    assert_eq!(gateway.wait_terminal(&id).await["state"], "succeeded");
    let (_, list) = gateway.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permission_is_named_at_start() {
    let role = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(support::repo_root().join("kustomize/base/rbac.yaml")).unwrap();
    let without_create = text.replace("verbs: [create, list, watch, delete]", "verbs: [list, watch, delete]");
    assert_ne!(text, without_create, "the Role's Job rule changed; update this test");
    std::fs::write(role.path(), without_create).unwrap();
    let cluster = TestCluster::start_with_role(role.path()).await;
    let output = tokio::process::Command::new(support::gateway_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(cluster.dir.path().join("data"))
        .args(cluster.gateway_args())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("create jobs (batch)"), "{stderr}");
    assert!(stderr.contains("kustomize/base/rbac.yaml"), "the error says how to fix it: {stderr}");
}

/// Two replicas over the same cluster and store: each shows and cancels the
/// other's jobs, and both record the same final states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_jobs() {
    let cluster = TestCluster::start().await;
    let first = cluster.start_gateway();
    let second = cluster.start_gateway();

    let done = first.submit("shell", json!({"script": SHELL_OUTPUT})).await;
    let view = second.wait_terminal(&done).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(first_output(&second, &view).await, "from k8s");

    let long = first.submit("shell", json!({"script": "sleep 60"})).await;
    second.wait_for(&long, "running", |v| v["state"] == "running").await;
    let (status, _) = second.delete(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    cluster.wait_job_deleted(&long).await;
    for gateway in [&first, &second] {
        let view = gateway.wait_terminal(&long).await;
        assert_eq!(view["state"], "cancelled", "{view}");
        let view = gateway.wait_terminal(&done).await;
        assert_eq!(view["state"], "succeeded", "{view}");
    }
    // Later reads come from the record in the store, which both replicas
    // may have written; it must hold the same state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for gateway in [&first, &second] {
        let (_, view) = gateway.get(&format!("/v1/jobs/{long}")).await;
        assert_eq!(view["state"], "cancelled", "{view}");
    }
    if let Some(record) = recorded_view(&first, &long).await {
        assert_eq!(record["state"], "cancelled", "{record}");
    }
}
