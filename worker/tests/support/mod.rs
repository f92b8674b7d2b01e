//! Helpers that run the `jobgate-worker` binary against a temporary file store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jobgate_worker::protocol::{ProgressDoc, RequestDoc, ResultDoc};

/// Job id used by every test; each test has its own store folder.
pub const JOB_ID: &str = "0190a0b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b";

/// A temporary store folder holding one job's request.
pub struct TestJob {
    pub store: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

impl TestJob {
    /// Creates a store with `jobs/<JOB_ID>/request.json` for the given parameters.
    pub fn new(template: &str, parameters: serde_json::Value) -> TestJob {
        let job = TestJob {
            store: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        };
        job.set_parameters(template, parameters);
        job
    }

    /// Writes `jobs/<JOB_ID>/request.json`, replacing the parameters of an earlier one.
    pub fn set_parameters(&self, template: &str, parameters: serde_json::Value) {
        let request = RequestDoc {
            id: JOB_ID.into(),
            template: template.into(),
            parameters,
            labels: Default::default(),
            created_at: chrono::Utc::now(),
        };
        self.write(
            format!("jobs/{JOB_ID}/request.json"),
            &serde_json::to_vec(&request).unwrap(),
        );
    }

    /// Writes an object into the store.
    pub fn write(&self, key: impl AsRef<str>, bytes: &[u8]) {
        let path = self.store.path().join(key.as_ref());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Writes an upload and returns its reference.
    pub fn upload(&self, upload_id: &str, file_name: &str, bytes: &[u8]) -> String {
        let key = format!("uploads/{upload_id}/{file_name}");
        self.write(&key, bytes);
        key
    }

    /// Returns the path of a job document or output.
    pub fn job_path(&self, file: &str) -> PathBuf {
        self.store.path().join("jobs").join(JOB_ID).join(file)
    }

    /// Builds the worker command with the job's environment, run in the work folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobgate-worker"));
        command
            .args(args)
            .current_dir(self.work.path())
            .env("JOBGATE_JOB_ID", JOB_ID)
            .env(
                "JOBGATE_STORE",
                format!("file://{}", self.store.path().display()),
            )
            .env("RUST_LOG", "info");
        command
    }

    /// Runs the worker to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Reads `result.json`, or `None` when it does not exist.
    pub fn result(&self) -> Option<ResultDoc> {
        let bytes = std::fs::read(self.job_path("result.json")).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    /// Reads `progress.json`.
    pub fn progress(&self) -> ProgressDoc {
        let bytes = std::fs::read(self.job_path("progress.json")).expect("progress.json exists");
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Returns the path of an output file.
    pub fn output_path(&self, name: &str) -> PathBuf {
        self.job_path("outputs").join(name)
    }
}

/// Formats a process output for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Returns the dimensions of an image file.
pub fn image_size(path: &Path) -> (u32, u32) {
    image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_dimensions()
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}
