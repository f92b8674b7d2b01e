//! End-to-end tests of the gateway and workers on an S3 store: a real Garage
//! server on loopback.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::s3::S3Server;
use support::{gateway_binary, template_dir, TestGateway};

fn prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn polling_costs_one_read_per_ttl() {
    let server = S3Server::start();
    let prefix = prefix();
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start_with_env(
        templates.path(),
        data.path(),
        &["--progress-ttl-ms", "1000"],
        &server.gateway_env(&prefix),
    );
    let id = gateway.submit("sleep", json!({"seconds": 8})).await;
    gateway.wait_for(&id, "running", |v| v["state"] == "running").await;

    let pattern = format!("GET /jobgate/{prefix}/jobs/{id}/progress.json");
    let before = server.count_requests(&pattern);
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut pollers = Vec::new();
    for _ in 0..20 {
        let http = gateway.http.clone();
        let url = gateway.url(&format!("/v1/jobs/{id}"));
        pollers.push(tokio::spawn(async move {
            let mut polls = 0u32;
            while started.elapsed() < window {
                let response = http.get(&url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                polls += 1;
            }
            polls
        }));
    }
    let mut polls = 0;
    for poller in pollers {
        polls += poller.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Garage writes its log line after answering; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads = server.count_requests(&pattern) - before;
    // One read per started second of polling, plus one that may already be in
    // flight when counting starts and one at the end of the window.
    let allowed = elapsed.ceil() as usize + 2;
    eprintln!("{polls} polls in {elapsed:.1} s caused {reads} progress reads");
    assert!(polls > 100, "only {polls} polls in {elapsed:.1} s");
    assert!(reads >= 1, "no progress read reached the store");
    assert!(reads <= allowed, "{reads} progress reads for {polls} polls in {elapsed:.1} s; expected at most {allowed}");
}

#[tokio::test]
async fn thumbnail_on_s3_downloads_through_presigned_urls() {
    let server = S3Server::start();
    let prefix = prefix();
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start_with_env(templates.path(), data.path(), &[], &server.gateway_env(&prefix));
    let photo = std::fs::read(support::repo_root().join("tests/fixtures/gradient-64x48.png")).unwrap();
    let reference = gateway.upload("gradient.png", photo).await;
    let id = gateway
        .submit("thumbnail", json!({"images": [reference], "sizes": [32], "formats": ["png", "jpeg"]}))
        .await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "{done}");
    for output in outputs {
        let url = output["url"].as_str().unwrap();
        assert!(url.starts_with(server.endpoint()), "not presigned: {url}");
        assert!(url.contains("X-Amz-Signature"), "not presigned: {url}");
        let direct = reqwest::get(url).await.unwrap();
        assert_eq!(direct.status(), StatusCode::OK);
        let direct = direct.bytes().await.unwrap();
        let proxied = gateway
            .http
            .get(gateway.url(output["gateway_url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(proxied.status(), StatusCode::OK);
        assert_eq!(proxied.bytes().await.unwrap(), direct);
        let image = image::load_from_memory(&direct).unwrap();
        assert_eq!(image.width(), 32);
    }
}

#[tokio::test]
async fn presigned_upload_feeds_a_job() {
    let server = S3Server::start();
    let prefix = prefix();
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start_with_env(templates.path(), data.path(), &[], &server.gateway_env(&prefix));
    let (status, presigned) = gateway.post("/v1/uploads/presigned?name=in.png", &json!(null)).await;
    assert_eq!(status, StatusCode::CREATED, "{presigned}");
    assert_eq!(presigned["method"], "PUT");
    let photo = std::fs::read(support::repo_root().join("tests/fixtures/gradient-64x48.png")).unwrap();
    let put = reqwest::Client::new()
        .put(presigned["upload_url"].as_str().unwrap())
        .body(photo)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let id = gateway
        .submit("thumbnail", json!({"images": [presigned["reference"]], "sizes": [16], "formats": ["png"]}))
        .await;
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["summary"]["succeeded"], 1, "{done}");
}

#[tokio::test]
async fn storage_outage_mid_job_loses_nothing() {
    let server = S3Server::start();
    let prefix = prefix();
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start_with_env(templates.path(), data.path(), &[], &server.gateway_env(&prefix));
    let script = "echo 'progress 30 working'; sleep 6; mkdir -p out; \
                  head -c 200000 /dev/urandom > out/random.bin; echo 'progress 90 writing'";
    // The shell template runs its script under `jobgate-worker exec`.
    let id = gateway
        .submit("shell", json!({"script": format!("{script}; echo 'output out/random.bin'")}))
        .await;
    gateway
        .wait_for(&id, "running with progress", |v| v["progress"]["percent"].as_f64() == Some(30.0))
        .await;

    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, during) = gateway.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{during}");
    assert_eq!(during["state"], "running");
    assert_eq!(during["stale"], true, "{during}");
    assert_eq!(during["progress"]["percent"], 30.0, "the last progress is kept: {during}");

    tokio::time::sleep(Duration::from_secs(4)).await;
    server.restart();
    let done = gateway.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["stale"], false, "{done}");
    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{done}");
    assert_eq!(outputs[0]["size"], 200000);
    let download = gateway.http.get(gateway.url(outputs[0]["gateway_url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(download.bytes().await.unwrap().len(), 200000);
}

fn serve_and_fail(env: &[(String, String)]) -> String {
    let templates = template_dir();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(gateway_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--templates"])
        .arg(templates.path())
        .arg("--data-dir")
        .arg(data.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!output.status.success(), "the gateway started with a broken store");
    assert_eq!(output.status.code(), Some(69));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn preflight_explains_broken_stores() {
    let server = S3Server::start();
    let good = server.gateway_env("p");

    let mut missing_bucket = good.clone();
    missing_bucket.retain(|(k, _)| k != "JOBGATE_STORE");
    missing_bucket.push(("JOBGATE_STORE".into(), "s3://no-such-bucket/p".into()));
    let stderr = serve_and_fail(&missing_bucket);
    assert!(stderr.contains("bucket does not exist"), "{stderr}");

    let mut bad_key = good.clone();
    bad_key.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    bad_key.push(("AWS_SECRET_ACCESS_KEY".into(), "0".repeat(64)));
    let stderr = serve_and_fail(&bad_key);
    assert!(stderr.contains("credentials were rejected"), "{stderr}");
    assert!(!stderr.contains(&"0".repeat(64)), "the secret leaked into the message");

    let mut no_server = good.clone();
    no_server.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    no_server.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()));
    let stderr = serve_and_fail(&no_server);
    assert!(stderr.contains("endpoint cannot be reached"), "{stderr}");
}
