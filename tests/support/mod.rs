//! Test support: a real gateway process bound to a free loopback port, and
//! helpers to talk to it over HTTP.

#![allow(dead_code)]

pub mod cluster;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

/// Longest wait for a job to finish in tests; jobs here take seconds.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the gateway binary under test.
pub fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jobgate"))
}

/// Checks that the worker binary sits next to the gateway's, where the local
/// executor looks for it.
pub fn assert_worker_built() {
    let worker = gateway_binary().with_file_name("jobgate-worker");
    assert!(
        worker.exists(),
        "{} is missing; run `cargo build --workspace --bins` (scripts/test.sh does) before these tests",
        worker.display()
    );
}

/// Creates a template folder with the test fixtures and the shipped templates.
pub fn template_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for source in [
        repo_root().join("tests/fixtures/templates"),
        repo_root().join("kustomize/base/templates"),
    ] {
        for entry in std::fs::read_dir(&source).unwrap().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("kustomization") {
                continue;
            }
            std::fs::copy(entry.path(), dir.path().join(name)).unwrap();
        }
    }
    dir
}

/// A gateway process serving on a loopback port.
pub struct TestGateway {
    child: Option<Child>,
    /// Base URL, such as `http://127.0.0.1:40123`.
    pub base: String,
    /// The data folder (store, logs, working folders).
    pub data_dir: PathBuf,
    /// Everything the gateway wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl TestGateway {
    /// Starts a gateway with `templates` and a fresh data folder below `data_dir`.
    pub fn start(templates: &Path, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(templates, data_dir, extra, &[])
    }

    /// Starts a gateway with extra environment variables, such as an S3 store's.
    pub fn start_with_env(templates: &Path, data_dir: &Path, extra: &[&str], env: &[(String, String)]) -> Self {
        assert_worker_built();
        let mut command = Command::new(gateway_binary());
        command
            .arg("--log-json")
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--templates")
            .arg(templates)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("JOBGATE_STORE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Fast defaults for tests, unless the test sets them itself.
        for (flag, value) in [
            ("--template-poll-seconds", "1"),
            ("--retry-backoff-ms", "100"),
            ("--progress-ttl-ms", "100"),
        ] {
            if !extra.contains(&flag) {
                command.args([flag, value]);
            }
        }
        let mut child = command.spawn().expect("gateway binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["message"] == "listening" {
                        let _ = tx.send(event["address"].as_str().unwrap_or_default().to_owned());
                    }
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        let address = address.trim_start_matches("socket://").to_owned();
        Self {
            child: Some(child),
            base: format!("http://{address}"),
            data_dir: data_dir.to_owned(),
            log,
            http: reqwest::Client::new(),
        }
    }

    /// Returns the full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs a path and returns the status and JSON body (null when not JSON).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON and returns the status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.http.post(self.url(path)).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// DELETEs a path and returns the status and JSON body.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.delete(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a job and returns its id, asserting `202`.
    pub async fn submit(&self, template: &str, parameters: Value) -> String {
        let (status, body) = self
            .post("/v1/jobs", &serde_json::json!({"template": template, "parameters": parameters}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit failed: {body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Uploads bytes under `name` and returns the reference.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> String {
        let response = self
            .http
            .post(self.url("/v1/uploads"))
            .query(&[("name", name)])
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["reference"].as_str().unwrap().to_owned()
    }

    /// Polls a job until `done` returns true for its view, and returns that view.
    pub async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, view) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{view}");
            if done(&view) {
                return view;
            }
            assert!(
                started.elapsed() < JOB_TIMEOUT,
                "job {id} did not become {what}; last view: {view}\ngateway log:\n{}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a job is terminal.
    pub async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_for(id, "terminal", |view| {
            matches!(view["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
        })
        .await
    }

    /// Returns a job's logs.
    pub async fn logs(&self, id: &str) -> String {
        self.logs_with(id, "").await
    }

    /// Returns a job's logs for a query such as `?tail=2` or `?follow=true`,
    /// asserting `200`.
    pub async fn logs_with(&self, id: &str, query: &str) -> String {
        let response = self.http.get(self.url(&format!("/v1/jobs/{id}/logs{query}"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Kills the gateway with SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Stops the gateway with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        child.wait().unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts that a response is problem details with the given status and kind.
pub fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        body["type"].as_str(),
        Some(format!("https://jobgate.dev/problems/{kind}").as_str()),
        "{body}"
    );
    assert_eq!(body["status"].as_u64(), Some(expected.as_u16() as u64), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
}

/// Returns true while a process exists and is not a zombie: a killed process
/// whose parent died stays a zombie until init reaps it, which in a container
/// may be never.
pub fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|rest| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
