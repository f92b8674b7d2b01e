//! Worker side of jobgate: the SDK that a job's container uses to read its
//! parameters and report progress, outputs and a result, plus the built-in
//! tasks of the `jobgate-worker` binary.
//!
//! # Layout
//!
//! - [`protocol`]: the object layout and the JSON documents shared with the gateway.
//! - [`store`]: the object store behind `JOBGATE_STORE` (`file://`, and `s3://`
//!   with feature `s3`), and the retries of store operations.
//! - [`progress`]: the throttled writer of `progress.json`.
//! - [`job`]: the [`Job`] handle that ties them together for a task.
//! - [`signal`]: SIGTERM and SIGINT handling, so a stopped job never reads as a success.
//! - `tasks` (feature `tasks`): the `thumbnail` and `exec` tasks of the binary.
//!
//! With `default-features = false` only the SDK is built, without the image
//! codecs, rayon, clap or the AWS SDK; the gateway uses the crate this way.
//! Feature `s3` adds the S3 store alone, and `tasks` (the default) turns it on.
//!
//! # A worker of your own
//!
//! ```no_run
//! use jobgate_worker::{Job, StopSignals};
//!
//! #[derive(serde::Deserialize)]
//! struct Params {
//!     files: Vec<String>,
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let mut signals = StopSignals::install().expect("signal handlers install");
//!     let job = Job::from_env().await.expect("job opens");
//!     let params: Params = job.parameters().expect("parameters are valid");
//!
//!     let work = async {
//!         for (index, file) in params.files.iter().enumerate() {
//!             job.progress().report_items(index as u64 + 1, params.files.len() as u64, file.as_str());
//!         }
//!         job.write_output("report.txt", b"done".to_vec()).await?;
//!         job.finish(serde_json::json!({"files": params.files.len()})).await
//!     };
//!     tokio::select! {
//!         result = work => match result {
//!             Ok(_) => std::process::ExitCode::SUCCESS,
//!             Err(error) => {
//!                 job.stop(&error.to_string()).await;
//!                 std::process::ExitCode::FAILURE
//!             }
//!         },
//!         signal = signals.recv() => {
//!             job.stop(&signal.stop_message()).await;
//!             std::process::ExitCode::from(signal.exit_code())
//!         }
//!     }
//! }
//! ```

pub mod job;
pub mod progress;
pub mod protocol;
#[cfg(unix)]
pub mod signal;
pub mod store;
#[cfg(feature = "tasks")]
pub mod tasks;

pub use job::{Job, JobError, StopOutcome};
pub use progress::{Progress, ProgressState};
#[cfg(unix)]
pub use signal::{StopSignal, StopSignals};
pub use store::{Store, StoreError};
