//! End-to-end tests of the gateway on the embedded default: local executor
//! and filesystem store, driven over HTTP.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{assert_problem, is_running, template_dir, TestGateway};

fn start() -> (TestGateway, tempfile::TempDir, tempfile::TempDir) {
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(templates.path(), data.path(), &[]);
    (gateway, templates, data)
}

#[tokio::test]
async fn job_runs_to_outputs_with_progress() {
    let (gateway, _templates, _data) = start();
    let script = "echo 'progress 40 halfway there'; sleep 1.5; mkdir -p out; \
                  printf 'hello' > out/greeting.txt; echo 'output out/greeting.txt'; \
                  echo 'summary {\"words\": 1}'";
    let id = gateway.submit("shell", json!({"script": script})).await;

    let running = gateway
        .wait_for(&id, "running with progress", |v| v["progress"]["percent"].as_f64() == Some(40.0))
        .await;
    assert_eq!(running["state"], "running");
    assert_eq!(running["progress"]["message"], "halfway there");

    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["summary"]["words"], 1);
    assert!(done["started_at"].is_string());
    assert!(done["finished_at"].is_string());
    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{done}");
    assert_eq!(outputs[0]["name"], "greeting.txt");
    assert_eq!(outputs[0]["size"], 5);

    let url = outputs[0]["url"].as_str().unwrap();
    let response = gateway.http.get(gateway.url(url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.text().await.unwrap(), "hello");
}

#[tokio::test]
async fn submit_answers_location_and_queued_view() {
    let (gateway, _templates, _data) = start();
    let response = gateway
        .http
        .post(gateway.url("/v1/jobs"))
        .json(&json!({"template": "shell", "parameters": {"script": "true"}, "labels": {"user": "42"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let view: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/v1/jobs/{}", view["id"].as_str().unwrap()));
    assert_eq!(view["template"], "shell");
    assert_eq!(view["labels"]["user"], "42");
    assert_eq!(view["parameters"]["retries"], 0, "defaults are applied");
    assert!(matches!(view["state"].as_str(), Some("queued" | "running" | "succeeded")));
}

/// Values that would break a manifest built by text substitution.
const HOSTILE: &[&str] = &[
    "plain",
    "\"; rm -rf / #",
    "line one\nline two\n  indented: true",
    "key: value",
    "- list item",
    "{params.text}",
    "{{ if x }}{{ endif }}",
    "}}{{",
    "\\{escaped}",
    "[1, 2]",
    "{\"a\": 1}",
    "&anchor *alias !!binary",
    "# comment",
    "'single' \"double\" `back`",
    "tab\there",
    "\u{2028}\u{2029}\u{85}\u{feff}",
    "emoji 😀 and ünïcödé",
    "true",
    "null",
    "0x1F",
    "---\napiVersion: v1\nkind: Secret",
];

#[tokio::test]
async fn hostile_parameters_reach_the_job_verbatim() {
    let (gateway, _templates, _data) = start();
    let mut ids = Vec::new();
    for value in HOSTILE {
        ids.push((value, gateway.submit("echo", json!({"text": value})).await));
    }
    for (value, id) in ids {
        let done = gateway.wait_terminal(&id).await;
        assert_eq!(done["state"], "succeeded", "value {value:?}: {done}");
        assert_eq!(done["parameters"]["text"], **value);
        let logs = gateway.logs(&id).await;
        // The job prints the value from its env and from its last argument.
        let printed = logs
            .split_once("]\n")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        assert_eq!(printed, format!("{value}{value}"), "value {value:?}");
    }
}

#[tokio::test]
async fn invalid_parameters_list_every_field() {
    let (gateway, _templates, _data) = start();
    let (status, body) = gateway
        .post(
            "/v1/jobs",
            &json!({"template": "shell", "parameters": {"script": 5, "retries": 99, "extra": true}}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-parameters");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"/parameters/script"), "{body}");
    assert!(fields.contains(&"/parameters/retries"), "{body}");
    assert!(fields.contains(&"/parameters"), "{body}");
    let (_, list) = gateway.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "no job was created");
}

#[tokio::test]
async fn unknown_template_is_not_found() {
    let (gateway, _templates, _data) = start();
    let (status, body) = gateway.post("/v1/jobs", &json!({"template": "nope"})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "template-not-found");
}

#[tokio::test]
async fn misspelt_submit_field_is_rejected() {
    let (gateway, _templates, _data) = start();
    let (status, body) = gateway
        .post("/v1/jobs", &json!({"template": "echo", "paramters": {"text": "hi"}}))
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
    assert!(body["detail"].as_str().unwrap().contains("paramters"), "the field is named: {body}");
    let (_, list) = gateway.get("/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]), "no job was created: {list}");
}

#[tokio::test]
async fn failing_command_reports_error_and_stderr() {
    let (gateway, _templates, _data) = start();
    let id = gateway
        .submit("shell", json!({"script": "echo 'disk full' >&2; exit 3"}))
        .await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["reason"], "Error");
    let message = done["message"].as_str().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(message.contains("disk full"), "{message}");
    assert!(done["outputs"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn deadline_fails_the_job() {
    let (gateway, _templates, _data) = start();
    let id = gateway
        .submit("shell", json!({"script": "sleep 60", "deadline": 1, "retries": 3}))
        .await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["reason"], "DeadlineExceeded");
    assert!(done["message"].as_str().unwrap().contains("activeDeadlineSeconds"));
}

#[tokio::test]
async fn failed_attempt_is_retried_until_success() {
    let (gateway, _templates, _data) = start();
    let marker = tempfile::tempdir().unwrap();
    let marker = marker.path().join("first-attempt-done");
    let script = format!(
        "if [ -e '{m}' ]; then echo second; else touch '{m}'; echo first >&2; exit 1; fi",
        m = marker.display()
    );
    let id = gateway.submit("shell", json!({"script": script, "retries": 2})).await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    let logs = gateway.logs(&id).await;
    assert!(logs.contains("first"), "{logs}");
    assert!(logs.contains("second"), "{logs}");
}

#[tokio::test]
async fn retries_stop_at_backoff_limit() {
    let (gateway, _templates, _data) = start();
    let id = gateway.submit("shell", json!({"script": "exit 1", "retries": 2})).await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["attempts"], 3);
    assert!(done["message"].as_str().unwrap().contains("attempt 3 of 3"), "{done}");
}

#[tokio::test]
async fn cancel_stops_the_processes() {
    let (gateway, _templates, _data) = start();
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("pid");
    let script = format!("sleep 120 & echo $! > '{}'; wait", pid_file.display());
    let id = gateway.submit("shell", json!({"script": script})).await;
    gateway.wait_for(&id, "running", |v| v["state"] == "running").await;
    let started = std::time::Instant::now();
    while !pid_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "job never wrote its pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();

    let (status, body) = gateway.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "cancelled");
    assert!(!is_running(pid), "the job's sleep process {pid} survived the cancel");

    let (status, body) = gateway.delete(&format!("/v1/jobs/{id}")).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "job-finished");
}

#[tokio::test]
async fn list_pages_neither_skip_nor_repeat() {
    let (gateway, _templates, _data) = start();
    let mut submitted = Vec::new();
    for _ in 0..7 {
        submitted.push(gateway.submit("shell", json!({"script": "true"})).await);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=3&cursor={c}"),
            None => "/v1/jobs?limit=3".to_owned(),
        };
        let (status, page) = gateway.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        // New jobs arrive between pages.
        gateway.submit("shell", json!({"script": "true"})).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected = submitted.clone();
    expected.reverse();
    assert_eq!(seen, expected, "pages must list the first seven jobs newest first, once each");
}

#[tokio::test]
async fn list_filters_by_state_and_template() {
    let (gateway, _templates, _data) = start();
    let ok = gateway.submit("shell", json!({"script": "true"})).await;
    let bad = gateway.submit("shell", json!({"script": "exit 1"})).await;
    let echo = gateway.submit("echo", json!({"text": "x"})).await;
    for id in [&ok, &bad, &echo] {
        gateway.wait_terminal(id).await;
    }
    let (_, failed) = gateway.get("/v1/jobs?state=failed").await;
    let ids: Vec<&str> = failed["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [bad.as_str()]);
    let (_, echoes) = gateway.get("/v1/jobs?template=echo").await;
    let ids: Vec<&str> = echoes["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [echo.as_str()]);
    let (status, body) = gateway.get("/v1/jobs?state=bogus").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
    assert_eq!(body["errors"][0]["field"], "state", "{body}");
    let (status, body) = gateway.get("/v1/jobs?limit=-1").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
    assert_eq!(body["errors"][0]["field"], "limit", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().starts_with("expected a whole number"), "{body}");
    let (status, body) = gateway.get("/v1/jobs?cursor=not-a-cursor").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
}

#[tokio::test]
async fn gateway_restart_reports_lost_job() {
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let mut first = TestGateway::start(templates.path(), data.path(), &[]);
    let finished = first.submit("shell", json!({"script": "echo done"})).await;
    first.wait_terminal(&finished).await;
    let running = first.submit("shell", json!({"script": "sleep 120"})).await;
    first.wait_for(&running, "running", |v| v["state"] == "running").await;
    first.crash();

    let second = TestGateway::start(templates.path(), data.path(), &[]);
    let view = second.wait_terminal(&running).await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["reason"], "GatewayRestarted");
    let (status, old) = second.get(&format!("/v1/jobs/{finished}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["state"], "succeeded", "finished jobs answer from the store");
}

#[tokio::test]
async fn graceful_stop_exits_cleanly() {
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let mut gateway = TestGateway::start(templates.path(), data.path(), &[]);
    let id = gateway.submit("shell", json!({"script": "sleep 120", "grace": 1})).await;
    gateway.wait_for(&id, "running", |v| v["state"] == "running").await;
    let status = gateway.stop();
    assert!(status.success(), "{status:?}");
    let record = std::fs::read_to_string(data.path().join(format!("store/jobs/{id}/status.json"))).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["reason"], "GatewayRestarted");
}

#[tokio::test]
async fn template_edit_applies_without_restart() {
    let (gateway, templates, _data) = start();
    let path = templates.path().join("shell.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("maxLength: 4096", "maxLength: 3")).unwrap();
    let started = std::time::Instant::now();
    loop {
        let (status, body) = gateway
            .post("/v1/jobs", &json!({"template": "shell", "parameters": {"script": "true; true"}}))
            .await;
        if status == StatusCode::BAD_REQUEST {
            assert_eq!(body["errors"][0]["field"], "/parameters/script");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(templates.path().join("broken.yaml"), "kind: ConfigMap\n  : [").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = gateway.get("/v1/templates/echo").await;
    assert_eq!(status, StatusCode::OK, "a broken file leaves other templates in place");
}

#[tokio::test]
async fn templates_list_and_detail() {
    let (gateway, templates, _data) = start();
    std::fs::write(
        templates.path().join("bad.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labels:\n    jobgate.dev/template: bad\ndata:\n  job.yaml: |\n    image: repo/{params.x}\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, list) = gateway.get("/v1/templates").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["templates"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"thumbnail"), "{list}");
    let bad = list["templates"].as_array().unwrap().iter().find(|t| t["name"] == "bad").unwrap();
    assert_eq!(bad["valid"], false);
    assert!(bad["error"].as_str().unwrap().contains("whole YAML value"));

    let (status, detail) = gateway.get("/v1/templates/shell").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["parameters"]["properties"]["retries"]["default"], 0);
    let (status, body) = gateway.get("/v1/templates/bad").await;
    assert_problem(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "template-invalid");
}

#[tokio::test]
async fn logs_tail_returns_last_lines() {
    let (gateway, _templates, _data) = start();
    let id = gateway.submit("echo", json!({"text": "one\ntwo\nthree\n"})).await;
    gateway.wait_terminal(&id).await;
    assert_eq!(gateway.logs_with(&id, "?tail=2").await, "two\nthree\n");
    let all = gateway.logs(&id).await;
    assert!(all.ends_with("one\ntwo\nthree\none\ntwo\nthree\n"), "{all}");
}

#[tokio::test]
async fn logs_follow_streams_until_the_end() {
    let (gateway, _templates, _data) = start();
    let id = gateway
        .submit("shell", json!({"script": "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done"}))
        .await;
    let followed = gateway.logs_with(&id, "?follow=true").await;
    assert!(followed.contains("line1"), "{followed}");
    assert!(followed.contains("line5"), "{followed}");
    let (_, view) = gateway.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(view["state"], "succeeded", "follow ends when the job ends");
}

#[tokio::test]
async fn bad_requests_get_problem_details() {
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(templates.path(), data.path(), &["--max-upload-bytes", "1000"]);

    let (status, body) = gateway.get("/v1/nothing-here").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");

    let (status, body) = gateway.get("/v1/jobs/not-an-id").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "job-not-found");
    let (status, body) = gateway.get("/v1/jobs/0190f5c4-8a8e-7c3b-9a4e-2f1d6b8c9e01").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "job-not-found");

    let response = gateway
        .http
        .post(gateway.url("/v1/jobs"))
        .header("Content-Type", "application/json")
        .body("{\"template\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");

    let response = gateway
        .http
        .post(gateway.url("/v1/jobs"))
        .header("Content-Type", "text/plain")
        .body("template=shell")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");

    let response = gateway
        .http
        .post(gateway.url("/v1/uploads?name=big.bin"))
        .header("Content-Type", "application/octet-stream")
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");

    // A chunked upload has no Content-Length, so the limit applies while streaming.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![1u8; 500])));
    let response = gateway
        .http
        .post(gateway.url("/v1/uploads?name=big.bin"))
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");

    let response = gateway
        .http
        .post(gateway.url("/v1/uploads?name=../escape"))
        .header("Content-Type", "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");

    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, body) = gateway.post("/v1/jobs", &json!({"template": "echo", "parameters": {"text": huge}})).await;
    assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");

    let (status, body) = gateway.get("/v1/jobs/0190f5c4-8a8e-7c3b-9a4e-2f1d6b8c9e01/outputs/x.txt").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "job-not-found");
}

#[tokio::test]
async fn health_endpoints_answer() {
    let (gateway, _templates, _data) = start();
    let (status, body) = gateway.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, _) = gateway.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
    bytes.into_inner()
}

#[tokio::test]
async fn thumbnail_job_survives_a_corrupt_image() {
    let (gateway, _templates, _data) = start();
    let good = gateway.upload("landscape.jpg", jpeg(800, 400)).await;
    let corrupt = gateway.upload("broken.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG".to_vec()).await;
    let id = gateway
        .submit("thumbnail", json!({"images": [good, corrupt], "sizes": [100], "formats": ["png"]}))
        .await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["summary"]["succeeded"], 1, "{done}");
    let failed = done["summary"]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{done}");
    assert!(failed[0]["input"].as_str().unwrap().ends_with("broken.jpg"), "{done}");
    assert!(!failed[0]["error"].as_str().unwrap().is_empty());
    assert_eq!(done["progress"]["percent"], 100.0);

    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{done}");
    assert_eq!(outputs[0]["content_type"], "image/png");
    let response = gateway.http.get(gateway.url(outputs[0]["url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "image/png");
    let thumbnail = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (100, 50));
}

#[tokio::test]
async fn thumbnail_rejects_invalid_sizes() {
    let (gateway, _templates, _data) = start();
    let (status, body) = gateway
        .post(
            "/v1/jobs",
            &json!({"template": "thumbnail", "parameters": {"images": ["not-an-upload"], "sizes": [8], "formats": ["gif"]}}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-parameters");
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for expected in ["/parameters/images/0", "/parameters/sizes/0", "/parameters/formats/0"] {
        assert!(fields.contains(&expected), "{expected} missing from {body}");
    }
}

#[tokio::test]
async fn documented_limits_are_enforced() {
    let (gateway, _templates, _data) = start();
    let labels: serde_json::Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (status, body) = gateway
        .post("/v1/jobs", &json!({"template": "shell", "parameters": {"script": "true"}, "labels": labels}))
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
    assert_eq!(body["errors"][0]["field"], "/labels");

    let mut deep = json!("x");
    for _ in 0..20 {
        deep = json!({ "a": deep });
    }
    let (status, body) = gateway
        .post("/v1/jobs", &json!({"template": "shell", "parameters": {"script": "true", "deep": deep}}))
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-parameters");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested deeper"), "{body}");

    let (status, body) = gateway.get("/v1/jobs?limit=201").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
}

#[tokio::test]
async fn presigned_upload_needs_a_signing_store() {
    let (gateway, _templates, _data) = start();
    let (status, body) = gateway.post("/v1/uploads/presigned?name=a.png", &json!(null)).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "presign-unsupported");
}
