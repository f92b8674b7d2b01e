//! The `jobgate` command line: `serve` (the default), `submit`, `status`,
//! `cancel` and `openapi`.

pub mod client;
pub mod params;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::ServeArgs;

/// Exit code for invalid configuration (EX_USAGE in sysexits.h).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code when a service the command needs is unavailable (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// HTTP gateway that runs heavy work as Kubernetes Jobs created from
/// templates, or as local processes on one machine.
#[derive(Debug, Parser)]
#[command(name = "jobgate", version, propagate_version = true)]
pub struct Cli {
    /// Write logs as JSON lines instead of text.
    #[arg(long, global = true, env = "JOBGATE_LOG_JSON")]
    pub log_json: bool,

    /// Command; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default command).
    Serve(ServeArgs),
    /// Submit a job: `jobgate submit TEMPLATE key=value...`.
    Submit(SubmitArgs),
    /// Show a job's state, progress and outputs.
    Status(JobArgs),
    /// Cancel a queued or running job.
    Cancel(JobArgs),
    /// Print the OpenAPI document.
    Openapi(OpenapiArgs),
}

/// Where the gateway is, for client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Gateway base URL.
    #[arg(long, env = "JOBGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
}

/// Flags of `jobgate submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Template name.
    pub template: String,
    /// Parameters as key=value. A value that parses as JSON is used as JSON
    /// (`sizes=[256,1024]`, `quality=80`), anything else as a string.
    /// `key=@path` uploads a file and passes its reference; for a folder,
    /// it uploads every file in it and passes the list. A key given twice
    /// becomes a list.
    pub parameters: Vec<String>,
    /// Follow the job with a progress bar until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Labels as key=value, for your own bookkeeping.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A job id and the gateway's address.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Job id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `jobgate openapi`.
#[derive(Debug, Clone, Args)]
pub struct OpenapiArgs {
    /// Output format.
    #[arg(long, value_parser = ["yaml", "json"], default_value = "yaml")]
    pub format: String,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // NB: the dependency tree enables two rustls crypto back-ends (ring via
    // kube, aws-lc-rs via the AWS SDK), and rustls then refuses to pick one,
    // so the kube client's first TLS connection would panic. Choose once here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    crate::telemetry::init(cli.log_json);
    let command = cli.command.unwrap_or_else(|| {
        Command::Serve(ServeArgs::parse_default())
    });
    match command {
        Command::Serve(args) => serve(args),
        Command::Openapi(args) => {
            print!("{}", crate::openapi::document(&args.format));
            ExitCode::SUCCESS
        }
        Command::Submit(args) => run_client(client::submit(args)),
        Command::Status(args) => run_client(client::status(args)),
        Command::Cancel(args) => run_client(client::cancel(args)),
    }
}

impl ServeArgs {
    /// Parses serve flags from the environment alone, for a bare `jobgate`.
    fn parse_default() -> Self {
        #[derive(Parser)]
        struct Bare {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Bare::parse_from(["jobgate"]).serve
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Check the configuration before starting the runtime, so that a bad
    // setting stops the process with every problem listed and nothing begun.
    let config = match args.validate() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("jobgate: invalid configuration:");
            for error in errors {
                eprintln!("  {error}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jobgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %crate::service::error_chain(&error), "gateway stopped");
            eprintln!("jobgate: {}", crate::service::error_chain(&error));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn run_client(future: impl std::future::Future<Output = Result<ExitCode, client::ClientError>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jobgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("jobgate: {}", crate::service::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
