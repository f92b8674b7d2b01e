//! Runs a fake Kubernetes API server for trying jobgate or kubectl by hand.

use std::path::PathBuf;

use clap::Parser;
use jobgate_fake_kube::{FakeCluster, Options, User};

/// Fake Kubernetes API server with a job controller and a kubelet that runs
/// pods as local processes.
#[derive(Debug, Parser)]
#[command(name = "fake-kube", version)]
struct Args {
    /// Path to write the admin kubeconfig to; the gateway's kubeconfig is
    /// written next to it with `.jobgate` appended.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Namespace of the gateway's service account and Role.
    #[arg(long, default_value = jobgate_fake_kube::cluster::DEFAULT_NAMESPACE)]
    namespace: String,
    /// YAML file with the gateway's Role; defaults to this repository's
    /// kustomize/base/rbac.yaml.
    #[arg(long)]
    role: Option<PathBuf>,
    /// Fail pulls of images matching this pattern (`*` and `?` wildcards),
    /// such as `registry.invalid/*`; repeatable.
    #[arg(long, value_name = "PATTERN")]
    fail_image_pulls: Vec<String>,
    /// Allocatable CPU of the node, as a Kubernetes quantity (`4`, `500m`);
    /// pods asking more stay Pending as Unschedulable.
    #[arg(long, value_name = "QUANTITY", default_value = "4", value_parser = parse_cpu)]
    node_cpu: u64,
    /// Allocatable memory of the node, as a Kubernetes quantity (`8Gi`).
    #[arg(long, value_name = "QUANTITY", default_value = "8Gi", value_parser = parse_memory)]
    node_memory: u64,
    /// Kill containers whose name or image matches this pattern as
    /// OOMKilled shortly after they start; repeatable.
    #[arg(long, value_name = "PATTERN")]
    oom_kill: Vec<String>,
    /// Kill containers whose memory limit is below this quantity as
    /// OOMKilled shortly after they start.
    #[arg(long, value_name = "QUANTITY", value_parser = parse_memory)]
    oom_below_memory_limit: Option<u64>,
    /// Delay every API request by this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
}

fn parse_cpu(text: &str) -> Result<u64, String> {
    jobgate_fake_kube::quantity::cpu_millis(&serde_json::Value::String(text.to_owned()))
        .ok_or_else(|| format!("{text:?} is not a CPU quantity such as 4 or 500m"))
}

fn parse_memory(text: &str) -> Result<u64, String> {
    jobgate_fake_kube::quantity::memory_bytes(&serde_json::Value::String(text.to_owned()))
        .ok_or_else(|| format!("{text:?} is not a memory quantity such as 512Mi or 8Gi"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    // kubectl sends no credentials to a plain-HTTP server, so requests
    // without a token are served as the admin; the gateway's kubeconfig
    // still carries its token for clients that send it (kube-rs does).
    let mut options = Options {
        port: args.port,
        namespace: args.namespace,
        unauthenticated_user: Some(User::Admin),
        ..Options::default()
    };
    // Programs such as jobgate-worker are found next to this binary first,
    // as the gateway's local executor does.
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from)) {
        options.bin_dirs.insert(0, dir);
    }
    if let Some(role) = args.role {
        options.role_path = role;
    }
    let cluster = match FakeCluster::start(options).await {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("fake-kube: {error}: {}", error_chain(&error));
            return std::process::ExitCode::FAILURE;
        }
    };
    let faults = cluster.faults();
    for pattern in &args.fail_image_pulls {
        faults.fail_image_pulls(pattern);
    }
    faults.set_node_capacity(args.node_cpu, args.node_memory);
    for pattern in &args.oom_kill {
        faults.oom_kill(pattern);
    }
    if let Some(bytes) = args.oom_below_memory_limit {
        faults.oom_kill_below_memory_limit(bytes);
    }
    faults.set_latency(std::time::Duration::from_millis(args.latency_ms));
    let gateway_path = PathBuf::from(format!("{}.jobgate", args.kubeconfig.display()));
    for (path, user) in [(&args.kubeconfig, User::Admin), (&gateway_path, User::Gateway)] {
        if let Err(error) = cluster.write_kubeconfig(path, user) {
            eprintln!("fake-kube: writing the kubeconfig {} failed: {error}", path.display());
            cluster.shutdown().await;
            return std::process::ExitCode::FAILURE;
        }
    }
    tracing::info!(
        url = cluster.url(),
        admin_kubeconfig = %args.kubeconfig.display(),
        gateway_kubeconfig = %gateway_path.display(),
        "serving; stop with Ctrl-C"
    );
    wait_for_signal().await;
    cluster.shutdown().await;
    std::process::ExitCode::SUCCESS
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "listening for SIGTERM failed; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
