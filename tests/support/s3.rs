//! A real S3 server (Garage) on loopback, started through
//! `scripts/s3-test-server.sh`, for tests of the S3 store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::repo_root;

/// A Garage server with one bucket, in a temporary folder.
pub struct S3Server {
    dir: tempfile::TempDir,
    /// `KEY=VALUE` settings the script printed: endpoint, credentials, region, bucket.
    pub env: BTreeMap<String, String>,
}

impl S3Server {
    /// Starts a fresh server.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = run_script("start", &dir.path().to_path_buf());
        Self { dir, env }
    }

    /// Stops the server, keeping its data, as an outage would.
    pub fn stop(&self) {
        run_script("stop", &self.dir.path().to_path_buf());
    }

    /// Starts the server again after [`S3Server::stop`], on the same port.
    pub fn restart(&self) {
        run_script("start", &self.dir.path().to_path_buf());
    }

    /// Returns the endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.env["AWS_ENDPOINT_URL"]
    }

    /// Returns the bucket name.
    pub fn bucket(&self) -> &str {
        &self.env["JOBGATE_S3_BUCKET"]
    }

    /// Returns the environment a gateway or worker needs for this server,
    /// with the store URL for `prefix`.
    pub fn gateway_env(&self, prefix: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("JOBGATE_STORE".into(), format!("s3://{}/{prefix}", self.bucket())));
        env.push(("JOBGATE_S3_PATH_STYLE".into(), "true".into()));
        env
    }

    /// Counts the requests the server logged whose line contains `pattern`,
    /// such as `GET /jobgate/p/jobs/<id>/progress.json`.
    pub fn count_requests(&self, pattern: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default();
        log.lines().filter(|line| line.contains(pattern)).count()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/s3-test-server.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn run_script(command: &str, dir: &PathBuf) -> BTreeMap<String, String> {
    let output = Command::new(repo_root().join("scripts/s3-test-server.sh"))
        .arg(command)
        .arg(dir)
        .output()
        .expect("scripts/s3-test-server.sh runs");
    assert!(
        output.status.success(),
        "scripts/s3-test-server.sh {command} failed (is garage installed? run scripts/install-s3-server.sh):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
