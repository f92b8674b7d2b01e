//! Runs `jobgate-worker` against a real S3 server: a single-node Garage that
//! `scripts/s3-test-server.sh` starts on loopback in a temporary folder.
//!
//! Each test starts its own server, because the outage test stops and
//! restarts one. The tests fail with a hint when `garage` is not installed;
//! `scripts/install-s3-server.sh` installs it.

mod support;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use image::{ImageFormat, Rgb, RgbImage};
use jobgate_worker::protocol::{ProgressDoc, RequestDoc, ResultDoc};
use serde_json::json;
use support::{describe, JOB_ID};

const UPLOAD_A: &str = "0190a0b4-0000-7000-8000-00000000000a";
const UPLOAD_B: &str = "0190a0b4-0000-7000-8000-00000000000b";

/// Exit status of `scripts/s3-test-server.sh` when `garage` is not on `PATH`.
const EXIT_GARAGE_MISSING: i32 = 69;

/// A Garage server with its state in a temporary folder; stopped on drop.
struct TestServer {
    dir: tempfile::TempDir,
    /// The `KEY=VALUE` lines that the start script printed.
    env: Vec<(String, String)>,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let output = run_script("start", dir.path());
        let env = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        TestServer { dir, env }
    }

    /// Stops the server, keeping its data and port.
    fn stop(&self) {
        run_script("stop", self.dir.path());
    }

    /// Starts the stopped server again on the same port with the same data.
    fn restart(&self) {
        run_script("start", self.dir.path());
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("the start script printed no {name}: {:?}", self.env))
    }

    fn bucket(&self) -> &str {
        self.var("JOBGATE_S3_BUCKET")
    }

    /// Builds an SDK client from the printed settings, not from this process's environment.
    fn client(&self) -> Client {
        let credentials = Credentials::new(
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "s3-test-server",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.var("AWS_ENDPOINT_URL"))
            .region(Region::new(self.var("AWS_REGION").to_owned()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .build();
        Client::from_conf(config)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failure to stop must not hide the test's own panic.
        let _ = script_command("stop", self.dir.path()).output();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script_command(command: &str, dir: &Path) -> Command {
    let mut script = Command::new(repo_root().join("scripts/s3-test-server.sh"));
    script
        .args([command, &dir.to_string_lossy()])
        .current_dir(repo_root());
    script
}

fn run_script(command: &str, dir: &Path) -> Output {
    let output = script_command(command, dir)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/s3-test-server.sh runs");
    if output.status.code() == Some(EXIT_GARAGE_MISSING) {
        panic!(
            "garage, the S3 test server, is not installed; run scripts/install-s3-server.sh\n{}",
            describe(&output)
        );
    }
    assert!(
        output.status.success(),
        "scripts/s3-test-server.sh {command} failed\n{}",
        describe(&output)
    );
    output
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A job under a prefix of its own in the test server's bucket.
struct S3Job<'a> {
    server: &'a TestServer,
    client: Client,
    runtime: tokio::runtime::Runtime,
    prefix: String,
    work: tempfile::TempDir,
}

impl<'a> S3Job<'a> {
    fn new(server: &'a TestServer, template: &str, parameters: serde_json::Value) -> S3Job<'a> {
        let job = S3Job {
            server,
            client: server.client(),
            runtime: runtime(),
            prefix: format!("test-{}", uuid::Uuid::now_v7()),
            work: tempfile::tempdir().unwrap(),
        };
        let request = RequestDoc {
            id: JOB_ID.into(),
            template: template.into(),
            parameters,
            labels: Default::default(),
            created_at: chrono::Utc::now(),
        };
        job.put(
            &format!("jobs/{JOB_ID}/request.json"),
            serde_json::to_vec(&request).unwrap(),
        );
        job
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.runtime
            .block_on(
                self.client
                    .put_object()
                    .bucket(self.server.bucket())
                    .key(self.object_key(key))
                    .body(ByteStream::from(bytes))
                    .send(),
            )
            .unwrap_or_else(|error| panic!("put {key}: {error:?}"));
    }

    /// Reads an object, or returns `None` when the request fails.
    fn try_get(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            let output = self
                .client
                .get_object()
                .bucket(self.server.bucket())
                .key(self.object_key(key))
                .send()
                .await
                .ok()?;
            Some(output.body.collect().await.ok()?.to_vec())
        })
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.try_get(key)
            .unwrap_or_else(|| panic!("object {key} is missing"))
    }

    fn content_type(&self, key: &str) -> String {
        let head = self
            .runtime
            .block_on(
                self.client
                    .head_object()
                    .bucket(self.server.bucket())
                    .key(self.object_key(key))
                    .send(),
            )
            .unwrap_or_else(|error| panic!("head {key}: {error:?}"));
        head.content_type().unwrap_or_default().to_owned()
    }

    fn result(&self) -> Option<ResultDoc> {
        let bytes = self.try_get(&format!("jobs/{JOB_ID}/result.json"))?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    fn progress(&self) -> Option<ProgressDoc> {
        let bytes = self.try_get(&format!("jobs/{JOB_ID}/progress.json"))?;
        serde_json::from_slice(&bytes).ok()
    }

    fn output(&self, name: &str) -> Vec<u8> {
        self.get(&format!("jobs/{JOB_ID}/outputs/{name}"))
    }

    fn pending_multipart_uploads(&self) -> usize {
        let listing = self
            .runtime
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(self.server.bucket())
                    .prefix(&self.prefix)
                    .send(),
            )
            .unwrap();
        listing.uploads().len()
    }

    /// Builds the worker command with the environment that the gateway injects.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobgate-worker"));
        command
            .args(args)
            .current_dir(self.work.path())
            .env("JOBGATE_JOB_ID", JOB_ID)
            .env(
                "JOBGATE_STORE",
                format!("s3://{}/{}", self.server.bucket(), self.prefix),
            )
            .env("JOBGATE_S3_PATH_STYLE", "true")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        for (name, value) in &self.server.env {
            command.env(name, value);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Jpeg).unwrap();
    bytes.into_inner()
}

fn image_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).unwrap();
    (image.width(), image.height())
}

/// Returns `size` bytes that differ from one run to the next, so that a
/// stale object cannot pass for a fresh one.
fn random_bytes(size: usize) -> Vec<u8> {
    let mut state = uuid::Uuid::now_v7().as_u128() as u64 | 1;
    (0..size)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn thumbnail_s3_writes_outputs_and_result() {
    let server = TestServer::start();
    let a = format!("uploads/{UPLOAD_A}/landscape.jpg");
    let b = format!("uploads/{UPLOAD_B}/portrait.jpg");
    let job = S3Job::new(
        &server,
        "thumbnail",
        json!({"images": [a, b], "sizes": [64, 128], "formats": ["jpeg", "png"]}),
    );
    job.put(&a, jpeg(400, 300));
    job.put(&b, jpeg(300, 600));

    // The gateway injects the S3-only endpoint variable, so test that name here.
    let endpoint = server.var("AWS_ENDPOINT_URL").to_owned();
    let output = job
        .command(&["thumbnail"])
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ENDPOINT_URL_S3", endpoint)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let result = job.result().expect("result.json is in the bucket");
    assert_eq!(result.outputs.len(), 8);
    assert_eq!(result.summary["succeeded"], 2);
    assert_eq!(image_size(&job.output("landscape-128.jpg")), (128, 96));
    assert_eq!(image_size(&job.output("landscape-64.png")), (64, 48));
    assert_eq!(image_size(&job.output("portrait-128.png")), (64, 128));
    assert_eq!(image_size(&job.output("portrait-64.jpg")), (32, 64));
    assert_eq!(
        job.content_type(&format!("jobs/{JOB_ID}/outputs/portrait-64.jpg")),
        "image/jpeg"
    );
    let progress = job.progress().expect("progress.json is in the bucket");
    assert_eq!(progress.percent, 100.0);
}

#[test]
fn exec_s3_large_files_both_ways() {
    let server = TestServer::start();
    let upload = format!("uploads/{UPLOAD_A}/input.bin");
    let job = S3Job::new(&server, "copy", json!({"files": upload}));
    // Above one 8 MiB part, with a short last part.
    let input = random_bytes(20 * 1024 * 1024 + 12_345);
    job.put(&upload, input.clone());
    let script = "mkdir out && cp inputs/input.bin out/copy.bin && printf small > out/small.txt";

    let output = job.run(&[
        "exec",
        "--fetch-inputs",
        "files",
        "--outputs",
        "out",
        "--",
        "sh",
        "-c",
        script,
    ]);

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let result = job.result().expect("result.json is in the bucket");
    let names: Vec<&str> = result.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["copy.bin", "small.txt"]);
    assert_eq!(result.outputs[0].size, input.len() as u64);
    let copy = job.output("copy.bin");
    assert_eq!(copy.len(), input.len());
    assert!(copy == input, "copy.bin differs from the uploaded input");
    assert_eq!(job.output("small.txt"), b"small");
    assert_eq!(job.pending_multipart_uploads(), 0);
}

#[test]
fn exec_s3_survives_storage_outage() {
    let server = TestServer::start();
    let job = S3Job::new(&server, "script", json!({}));
    // The command outlives the moment the server stops, so its output is
    // uploaded while the server is down.
    let script = "mkdir out; sleep 5; head -c 100000 /dev/urandom > out/a.bin";
    let mut child = job
        .command(&["exec", "--outputs", "out", "--", "sh", "-c", script])
        .env("RUST_LOG", "info,jobgate_worker=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while job.progress().and_then(|progress| progress.message) != Some("running sh".into()) {
        assert!(Instant::now() < deadline, "the worker never started sh");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    // Longer than the S3 client's own retries (at most about 7.5 s of
    // backoff), so the worker's operation retries must carry the upload.
    std::thread::sleep(Duration::from_secs(10));
    server.restart();
    let status = wait_with_timeout(&mut child, Duration::from_secs(180));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("store operation failed with a transient error"),
        "no operation retry was logged; stderr:\n{stderr}"
    );
    let result = job.result().expect("result.json is in the bucket");
    assert_eq!(result.outputs.len(), 1);
    assert_eq!(result.outputs[0].size, 100_000);
    let local = std::fs::read(job.work.path().join("out/a.bin")).unwrap();
    assert!(
        job.output("a.bin") == local,
        "a.bin differs from the command's file"
    );
}

#[test]
fn worker_s3_missing_bucket_fails_fast() {
    let server = TestServer::start();
    let job = S3Job::new(&server, "script", json!({}));
    let started = Instant::now();

    let output = job
        .command(&["exec", "--", "true"])
        .env("JOBGATE_STORE", "s3://no-such-bucket/x")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}, so the error was retried",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"no-such-bucket\""), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}
