//! The client side of the command line: talks to a running gateway over HTTP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use super::params::{insert, parse_argument, ParamValue};
use super::{JobArgs, SubmitArgs};

/// How often `submit --wait` polls the job.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Errors of client commands.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    Argument(String),
    /// A local file could not be read.
    #[error("cannot read {path}")]
    File {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The gateway could not be reached.
    #[error("request to {url} failed; is the gateway running? start it with `jobgate serve`")]
    Http {
        /// URL requested.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with an error.
    #[error("{status}: {detail}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem's detail and field errors.
        detail: String,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|source| ClientError::Http {
            url: url.to_owned(),
            source,
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let mut detail = body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("no detail")
            .to_owned();
        for error in body.get("errors").and_then(Value::as_array).into_iter().flatten() {
            detail.push_str(&format!(
                "\n  {}: {}",
                error.get("field").and_then(Value::as_str).unwrap_or(""),
                error.get("message").and_then(Value::as_str).unwrap_or("")
            ));
        }
        Err(ClientError::Problem {
            status: status.as_u16(),
            detail,
        })
    }

    async fn get_job(&self, id: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/jobs/{id}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    async fn upload(&self, path: &Path) -> Result<String, ClientError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ClientError::Argument(format!("{} has no file name", path.display())))?;
        let file = tokio::fs::File::open(path).await.map_err(|source| ClientError::File {
            path: path.to_owned(),
            source,
        })?;
        let url = format!("{}/v1/uploads", self.base);
        let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let request = self
            .http
            .post(&url)
            .query(&[("name", name)])
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", length)
            .body(body);
        let upload = self.send(request, &url).await?;
        upload
            .get("reference")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Problem {
                status: 200,
                detail: "upload answer has no reference".into(),
            })
    }
}

/// Uploads a file, or every file of a folder, and returns the reference(s).
async fn upload_path(client: &Client, path: &Path) -> Result<Value, ClientError> {
    if !path.is_dir() {
        return Ok(Value::String(client.upload(path).await?));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| ClientError::File {
            path: path.to_owned(),
            source,
        })?
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("uploading {pos}/{len} {wide_msg}").expect("static template"),
    );
    let mut references = Vec::new();
    for file in files {
        bar.set_message(file.display().to_string());
        references.push(Value::String(client.upload(&file).await?));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Value::Array(references))
}

/// `jobgate submit`.
pub async fn submit(args: SubmitArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client.url);
    let mut parameters = Map::new();
    for argument in &args.parameters {
        let (key, value) = parse_argument(argument).map_err(ClientError::Argument)?;
        let value = match value {
            ParamValue::Value(value) => value,
            ParamValue::Upload(path) => upload_path(&client, &path).await?,
        };
        insert(&mut parameters, key, value);
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| ClientError::Argument(format!("label {label:?} is not key=value")))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    let url = format!("{}/v1/jobs", client.base);
    let body = serde_json::json!({
        "template": args.template,
        "parameters": parameters,
        "labels": labels,
    });
    let job = client.send(client.http.post(&url).json(&body), &url).await?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    println!("job {id} accepted");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let job = follow(&client, &id).await?;
    Ok(print_final(&client, &job))
}

/// Polls a job, drawing a progress bar, until it is terminal.
async fn follow(client: &Client, id: &str) -> Result<Value, ClientError> {
    let bar = ProgressBar::new(100).with_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos:>3}% eta {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    loop {
        let job = client.get_job(id).await?;
        let state = job["state"].as_str().unwrap_or("unknown");
        let percent = job["progress"]["percent"].as_f64().unwrap_or(0.0);
        let message = job["progress"]["message"].as_str().unwrap_or("");
        let eta = match job["eta_seconds"].as_u64() {
            Some(seconds) => format!("{seconds}s"),
            None => "?".into(),
        };
        bar.set_prefix(state.to_owned());
        bar.set_position(percent.round() as u64);
        bar.set_message(format!("{eta}  {message}"));
        if matches!(state, "succeeded" | "failed" | "cancelled") {
            bar.finish();
            return Ok(job);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn print_final(client: &Client, job: &Value) -> ExitCode {
    let state = job["state"].as_str().unwrap_or("unknown");
    println!("job {} {state}", job["id"].as_str().unwrap_or_default());
    if let Some(reason) = job["reason"].as_str() {
        println!("reason: {reason}");
    }
    if let Some(message) = job["message"].as_str() {
        println!("message: {message}");
    }
    let outputs = job["outputs"].as_array().cloned().unwrap_or_default();
    if !outputs.is_empty() {
        println!("outputs:");
    }
    for output in outputs {
        let url = output["url"].as_str().unwrap_or_default();
        let url = if url.starts_with('/') { format!("{}{url}", client.base) } else { url.to_owned() };
        println!(
            "  {:<40} {:>10} bytes  {url}",
            output["name"].as_str().unwrap_or_default(),
            output["size"].as_u64().unwrap_or(0)
        );
    }
    if state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `jobgate status`.
pub async fn status(args: JobArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client.url);
    let job = client.get_job(&args.id).await?;
    println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// `jobgate cancel`.
pub async fn cancel(args: JobArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client.url);
    let url = format!("{}/v1/jobs/{}", client.base, args.id);
    let job = client.send(client.http.delete(&url), &url).await?;
    println!("job {} is being cancelled (state: {})", args.id, job["state"].as_str().unwrap_or("unknown"));
    Ok(ExitCode::SUCCESS)
}
