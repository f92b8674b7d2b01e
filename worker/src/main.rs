//! The `jobgate-worker` binary: parses the command line, sets up logging and
//! runs one built-in task under the stop-signal handling.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jobgate_worker::job::{Job, JobError};
use jobgate_worker::protocol::{ENV_JOB_ID, ENV_STORE};
use jobgate_worker::signal::StopSignals;
use jobgate_worker::store::retry::{DEFAULT_MAX_TIME, ENV_RETRY_SECONDS};
use jobgate_worker::store::{RetryPolicy, Store, StoreError};
use jobgate_worker::tasks::{exec, thumbnail, Outcome, EXIT_FAILED, EXIT_INVALID};
use jobgate_worker::StopOutcome;

/// Runs one jobgate job: reads its request from the store, reports progress,
/// and writes its outputs and result.
///
/// The gateway sets JOBGATE_JOB_ID and JOBGATE_STORE for every job, and for an
/// s3:// store the AWS variables (AWS_ENDPOINT_URL_S3, AWS_REGION, credentials)
/// and JOBGATE_S3_PATH_STYLE. Logs go to stderr; RUST_LOG sets the level
/// (default: info).
///
/// Exit codes: 0 success, 1 failed work, 2 invalid parameters or configuration,
/// 130 or 143 stopped by SIGINT or SIGTERM; `exec` passes the command's code through.
#[derive(Debug, Parser)]
#[command(name = "jobgate-worker", version)]
struct Cli {
    /// Job id (a UUIDv7); the parameters are in jobs/<id>/request.json in the store
    #[arg(long, env = ENV_JOB_ID, global = true, hide_env_values = true)]
    job_id: Option<String>,

    /// Store URL: file:///absolute/folder or s3://bucket/prefix
    #[arg(long, env = ENV_STORE, global = true, hide_env_values = true)]
    store: Option<String>,

    /// Seconds to keep retrying a store read or write of inputs, outputs or the
    /// result after transient errors (timeouts, connection failures, 5xx,
    /// throttling); 0 disables these retries
    #[arg(
        long,
        env = ENV_RETRY_SECONDS,
        global = true,
        value_name = "SECONDS",
        default_value_t = DEFAULT_MAX_TIME.as_secs()
    )]
    store_retry_seconds: u64,

    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Resize the uploaded images in parameter `images` to thumbnails
    ///
    /// Parameters in request.json:
    ///   images      upload references (uploads/<uuid>/<file name>)
    ///   sizes       longest edge of each thumbnail in pixels, 16 to 4096 (default [256, 1024])
    ///   formats     "jpeg", "png" or "webp"; WebP output is lossless (default ["jpeg"])
    ///   quality     JPEG quality, 1 to 100 (default 85)
    ///   max_pixels  maximum width × height of an input (default 40000000)
    Thumbnail,

    /// Run a command, turning its stdout lines into progress, outputs and a summary
    ///
    /// Lines of the form `progress <percent> [message]`, `output <path> [name]`
    /// and `summary <json object>` are consumed, and all other lines pass through.
    /// The worker exits with the command's exit code.
    Exec(exec::ExecArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jobgate-worker: failed to start the tokio runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(run(cli));
    // Rayon threads may still be busy after a stop signal; the process exits
    // without waiting for them or for blocking store calls.
    runtime.shutdown_background();
    ExitCode::from(code)
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(cli: Cli) -> u8 {
    // Installed first, so that a signal during start-up is not fatal.
    let mut signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("jobgate-worker: failed to install signal handlers: {error}");
            return EXIT_FAILED;
        }
    };

    let job = match open_job(&cli).await {
        Ok(job) => job,
        Err(error) => {
            let code = match &error {
                JobError::MissingEnv { .. }
                | JobError::InvalidRequest { .. }
                | JobError::Store(StoreError::InvalidUrl { .. })
                | JobError::Store(StoreError::S3Unsupported { .. })
                | JobError::Store(StoreError::InvalidSetting { .. })
                | JobError::Store(StoreError::NotFound { .. }) => EXIT_INVALID,
                _ => EXIT_FAILED,
            };
            eprintln!(
                "jobgate-worker: failed to open the job: {}",
                error_chain(&error)
            );
            return code;
        }
    };
    tracing::info!(job.id = %job.id(), template = %job.request().template, "job started");

    let outcome = match &cli.task {
        Task::Thumbnail => {
            tokio::select! {
                outcome = thumbnail::run(&job) => outcome,
                signal = signals.recv() => Outcome::Stopped(signal),
            }
        }
        Task::Exec(args) => exec::run(&job, args, &mut signals).await,
    };

    finish_outcome(&job, outcome).await
}

async fn open_job(cli: &Cli) -> Result<Job, JobError> {
    let id = cli
        .job_id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or(JobError::MissingEnv { name: ENV_JOB_ID })?;
    let url = cli
        .store
        .clone()
        .filter(|url| !url.is_empty())
        .ok_or(JobError::MissingEnv { name: ENV_STORE })?;
    let store = Store::from_url(&url)?;
    let retry = RetryPolicy::with_max_time(Duration::from_secs(cli.store_retry_seconds));
    Job::open_with_retry(store, &id, retry).await
}

/// Records the outcome in the last progress and returns the exit code.
async fn finish_outcome(job: &Job, outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Succeeded => {
            tracing::info!(job.id = %job.id(), "job succeeded");
            0
        }
        Outcome::Failed { exit_code, message } => {
            tracing::error!(job.id = %job.id(), exit_code, %message, "job failed");
            eprintln!("jobgate-worker: {message}");
            job.stop(&message).await;
            // A failure must not exit 0, even if a command reported success oddly.
            exit_code.max(1)
        }
        Outcome::Stopped(signal) => match job.stop(&signal.stop_message()).await {
            StopOutcome::Stopped => {
                tracing::warn!(job.id = %job.id(), signal = signal.name(), "job stopped by signal");
                signal.exit_code()
            }
            StopOutcome::AlreadyFinished => {
                tracing::info!(job.id = %job.id(), signal = signal.name(), "signal arrived after the result was written");
                0
            }
        },
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
