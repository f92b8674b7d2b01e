//! Server configuration from flags and `JOBGATE_*` variables.
//!
//! Values arrive as text and are checked together by [`ServeArgs::validate`],
//! so that one run reports every invalid setting, with its name, value and
//! fix, before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::store::s3::S3Settings;
use crate::store::StoreUrl;

/// Default address: loopback only, because the API has no authentication of
/// its own; put it behind a proxy or a Kubernetes Service to expose it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default folder for the local store, job logs and working folders.
pub const DEFAULT_DATA_DIR: &str = ".jobgate";
/// Default template location: the ConfigMaps that deploy to a cluster.
pub const DEFAULT_TEMPLATES: &str = "kustomize/base";
/// Default largest upload: 512 MiB covers photos, documents and short videos.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// Flags of `jobgate serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "JOBGATE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Folder for job logs, working folders and the default store.
    #[arg(long, env = "JOBGATE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Object store: file:///absolute/path or s3://bucket/prefix
    /// [default: file://<data-dir>/store].
    #[arg(long, env = "JOBGATE_STORE")]
    pub store: Option<String>,

    /// Folder (searched recursively) or file of template ConfigMaps.
    #[arg(long, env = "JOBGATE_TEMPLATES", default_value = DEFAULT_TEMPLATES)]
    pub templates: PathBuf,

    /// Seconds between checks of the template files for changes.
    #[arg(long, env = "JOBGATE_TEMPLATE_POLL_SECONDS", default_value = "2")]
    pub template_poll_seconds: String,

    /// Where jobs run: `local` (child processes on this machine) or
    /// `kubernetes` (Jobs in a cluster).
    #[arg(long, env = "JOBGATE_EXECUTOR", default_value = "local")]
    pub executor: String,

    /// Where templates come from: `folder` (the --templates files) or
    /// `configmaps` (labelled ConfigMaps in --namespace, watched)
    /// [default: configmaps with the kubernetes executor, folder otherwise].
    #[arg(long, env = "JOBGATE_TEMPLATE_SOURCE")]
    pub template_source: Option<String>,

    /// Kubernetes namespace of the Jobs and template ConfigMaps
    /// [default: the pod's own namespace in a cluster, else `default`].
    #[arg(long, env = "JOBGATE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Kubeconfig file [default: in-cluster credentials, or KUBECONFIG].
    #[arg(long, env = "JOBGATE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Service account the Jobs' pods run as [default: the namespace's default].
    #[arg(long, env = "JOBGATE_JOB_SERVICE_ACCOUNT")]
    pub job_service_account: Option<String>,

    /// Secret whose keys every job container gets as environment variables,
    /// such as the workers' AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "JOBGATE_WORKER_SECRET")]
    pub worker_secret: Option<String>,

    /// Seconds a pod may stay unpullable, unschedulable or without its
    /// ConfigMaps or Secrets before its job fails.
    #[arg(long, env = "JOBGATE_STUCK_SECONDS", default_value = "300")]
    pub stuck_seconds: String,

    /// Seconds a create, delete or log request to the Kubernetes API may
    /// take before the caller gets 503 with Retry-After.
    #[arg(long, env = "JOBGATE_KUBE_REQUEST_SECONDS", default_value = "15")]
    pub kube_request_seconds: String,

    /// Jobs that run at once on the local executor [default: number of CPUs].
    #[arg(long, env = "JOBGATE_MAX_RUNNING")]
    pub max_running: Option<String>,

    /// Largest upload, in bytes.
    #[arg(long, env = "JOBGATE_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES.to_string())]
    pub max_upload_bytes: String,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "JOBGATE_MAX_BODY_BYTES", default_value_t = crate::api::DEFAULT_MAX_BODY_BYTES.to_string())]
    pub max_body_bytes: String,

    /// Milliseconds a job's progress is served from the cache.
    #[arg(long, env = "JOBGATE_PROGRESS_TTL_MS", default_value = "1000")]
    pub progress_ttl_ms: String,

    /// Seconds documents that no longer change are served from the cache.
    #[arg(long, env = "JOBGATE_FINAL_TTL_SECONDS", default_value = "600")]
    pub final_ttl_seconds: String,

    /// Milliseconds before the first retry of a failed attempt on the local
    /// executor; doubles per failure.
    #[arg(long, env = "JOBGATE_RETRY_BACKOFF_MS", default_value = "1000")]
    pub retry_backoff_ms: String,

    /// Base URL of download links, such as https://jobs.example.com
    /// [default: links are relative paths].
    #[arg(long, env = "JOBGATE_PUBLIC_URL", default_value = "")]
    pub public_url: String,

    /// S3 endpoint URL, such as http://127.0.0.1:3900
    /// [default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS].
    #[arg(long, env = "JOBGATE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "JOBGATE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Address the bucket in the URL path (true for MinIO, Garage and most
    /// servers other than AWS), `true` or `false`.
    #[arg(long, env = "JOBGATE_S3_PATH_STYLE", default_value = "false")]
    pub s3_path_style: String,

    /// Seconds a presigned download or upload URL stays valid.
    #[arg(long, env = "JOBGATE_PRESIGN_SECONDS", default_value = "900")]
    pub presign_seconds: String,

    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "JOBGATE_SHUTDOWN_GRACE_SECONDS", default_value = "30")]
    pub shutdown_grace_seconds: String,
}

/// Where jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Child processes on this machine.
    Local,
    /// Jobs in a Kubernetes cluster.
    Kubernetes,
}

/// Where templates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    /// YAML files in a folder.
    Folder,
    /// Labelled ConfigMaps in the cluster.
    ConfigMaps,
}

/// Kubernetes settings.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Namespace.
    pub namespace: String,
    /// Kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// Service account of the Jobs' pods.
    pub service_account: Option<String>,
    /// Secret given to every job container.
    pub worker_secret: Option<String>,
    /// Time a pod may stay stuck.
    pub stuck_timeout: Duration,
    /// Time a single API request may take.
    pub request_timeout: Duration,
}

/// Checked server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Folder for logs and working folders.
    pub data_dir: PathBuf,
    /// Object store.
    pub store: StoreUrl,
    /// Template folder or file.
    pub templates: PathBuf,
    /// Template poll interval.
    pub template_poll: Duration,
    /// Template source.
    pub template_source: TemplateSource,
    /// Executor.
    pub executor: ExecutorKind,
    /// Kubernetes settings, used by the kubernetes executor and the
    /// ConfigMap template source.
    pub kubernetes: KubernetesSettings,
    /// Jobs that run at once locally.
    pub max_running: usize,
    /// Largest upload.
    pub max_upload_bytes: u64,
    /// Largest JSON body.
    pub max_body_bytes: usize,
    /// Progress cache time.
    pub progress_ttl: Duration,
    /// Cache time of documents that no longer change.
    pub final_ttl: Duration,
    /// First retry pause.
    pub retry_backoff: Duration,
    /// Base URL of download links.
    pub public_url: String,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// S3 endpoint, region and addressing.
    pub s3: S3Settings,
    /// Lifetime of presigned URLs.
    pub presign_expiry: Duration,
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Flag name, such as `--listen`.
    pub flag: &'static str,
    /// Variable name, such as `JOBGATE_LISTEN`.
    pub env: &'static str,
    /// Value given.
    pub value: String,
    /// What is wrong and what to write instead.
    pub fix: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}) = {:?}: {}", self.flag, self.env, self.value, self.fix)
    }
}

struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    fn check<T>(
        &mut self,
        flag: &'static str,
        env: &'static str,
        value: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(value) {
            Ok(parsed) => Some(parsed),
            Err(fix) => {
                self.errors.push(ConfigError {
                    flag,
                    env,
                    value: value.to_owned(),
                    fix,
                });
                None
            }
        }
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    min: T,
    max: T,
) -> impl FnOnce(&str) -> Result<T, String> {
    move |text| match text.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

impl ServeArgs {
    /// Checks every setting and returns them all, or every error at once.
    pub fn validate(&self) -> Result<ServeConfig, Vec<ConfigError>> {
        let mut c = Checker { errors: Vec::new() };
        let listen = c.check("--listen", "JOBGATE_LISTEN", &self.listen, |text| {
            text.parse::<SocketAddr>()
                .map_err(|_| "expected an address and port such as 127.0.0.1:8080 or [::]:8080".into())
        });
        let data_dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let store_text = self
            .store
            .clone()
            .unwrap_or_else(|| format!("file://{}", data_dir.join("store").display()));
        let store = c.check("--store", "JOBGATE_STORE", &store_text, |text| text.parse::<StoreUrl>());
        let endpoint_text = self
            .s3_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        let s3_endpoint = match &endpoint_text {
            Some(text) => c
                .check("--s3-endpoint", "JOBGATE_S3_ENDPOINT", text, |text| {
                    if text.starts_with("http://") || text.starts_with("https://") {
                        Ok(Some(text.trim_end_matches('/').to_owned()))
                    } else {
                        Err("expected an http:// or https:// URL such as http://127.0.0.1:3900".into())
                    }
                })
                .flatten(),
            None => None,
        };
        let s3_region = self.s3_region.clone().or_else(|| std::env::var("AWS_REGION").ok());
        let s3_path_style = c.check("--s3-path-style", "JOBGATE_S3_PATH_STYLE", &self.s3_path_style, |text| {
            match text.trim() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("expected true or false".into()),
            }
        });
        let presign_seconds = c.check(
            "--presign-seconds",
            "JOBGATE_PRESIGN_SECONDS",
            &self.presign_seconds,
            // S3 caps presigned URLs at seven days.
            number(1u64, 7 * 24 * 3600),
        );
        let executor = c.check("--executor", "JOBGATE_EXECUTOR", &self.executor, |text| match text {
            "local" => Ok(ExecutorKind::Local),
            "kubernetes" => Ok(ExecutorKind::Kubernetes),
            _ => Err("expected `local` or `kubernetes`".into()),
        });
        let default_source = match executor {
            Some(ExecutorKind::Kubernetes) => "configmaps",
            _ => "folder",
        };
        let source_text = self.template_source.clone().unwrap_or_else(|| default_source.to_owned());
        let template_source = c.check("--template-source", "JOBGATE_TEMPLATE_SOURCE", &source_text, |text| match text {
            "folder" => Ok(TemplateSource::Folder),
            "configmaps" => Ok(TemplateSource::ConfigMaps),
            _ => Err("expected `folder` or `configmaps`".into()),
        });
        let templates = if template_source == Some(TemplateSource::Folder) {
            c.check(
                "--templates",
                "JOBGATE_TEMPLATES",
                &self.templates.display().to_string(),
                |text| {
                    let path = PathBuf::from(text);
                    if path.exists() {
                        Ok(path)
                    } else {
                        Err("no such file or folder; point it at a folder of template ConfigMaps such as kustomize/base".into())
                    }
                },
            )
        } else {
            Some(self.templates.clone())
        };
        let namespace = match &self.namespace {
            Some(text) => c.check("--namespace", "JOBGATE_NAMESPACE", text, |text| {
                if crate::catalog::render::is_dns1123_label(text) {
                    Ok(text.to_owned())
                } else {
                    Err("expected a namespace name: lowercase letters, digits and '-'".into())
                }
            }),
            None => Some(
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .map(|n| n.trim().to_owned())
                    .unwrap_or_else(|_| "default".to_owned()),
            ),
        };
        let stuck_seconds = c.check("--stuck-seconds", "JOBGATE_STUCK_SECONDS", &self.stuck_seconds, number(1u64, 86_400));
        let kube_request_seconds = c.check(
            "--kube-request-seconds",
            "JOBGATE_KUBE_REQUEST_SECONDS",
            &self.kube_request_seconds,
            number(1u64, 600),
        );
        let template_poll = c.check(
            "--template-poll-seconds",
            "JOBGATE_TEMPLATE_POLL_SECONDS",
            &self.template_poll_seconds,
            number(1u64, 3600),
        );
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max_running = match &self.max_running {
            Some(text) => c.check("--max-running", "JOBGATE_MAX_RUNNING", text, number(1usize, 1024)),
            None => Some(cpus),
        };
        let max_upload_bytes = c.check(
            "--max-upload-bytes",
            "JOBGATE_MAX_UPLOAD_BYTES",
            &self.max_upload_bytes,
            number(1u64, 1 << 40),
        );
        let max_body_bytes = c.check(
            "--max-body-bytes",
            "JOBGATE_MAX_BODY_BYTES",
            &self.max_body_bytes,
            number(1024usize, 64 << 20),
        );
        let progress_ttl = c.check(
            "--progress-ttl-ms",
            "JOBGATE_PROGRESS_TTL_MS",
            &self.progress_ttl_ms,
            number(1u64, 60_000),
        );
        let final_ttl = c.check(
            "--final-ttl-seconds",
            "JOBGATE_FINAL_TTL_SECONDS",
            &self.final_ttl_seconds,
            number(1u64, 86_400),
        );
        let retry_backoff = c.check(
            "--retry-backoff-ms",
            "JOBGATE_RETRY_BACKOFF_MS",
            &self.retry_backoff_ms,
            number(0u64, 600_000),
        );
        let public_url = c.check("--public-url", "JOBGATE_PUBLIC_URL", &self.public_url, |text| {
            if text.is_empty() || text.starts_with("http://") || text.starts_with("https://") {
                Ok(text.trim_end_matches('/').to_owned())
            } else {
                Err("expected an http:// or https:// URL, or nothing for relative links".into())
            }
        });
        let shutdown_grace = c.check(
            "--shutdown-grace-seconds",
            "JOBGATE_SHUTDOWN_GRACE_SECONDS",
            &self.shutdown_grace_seconds,
            number(0u64, 3600),
        );
        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        // NB: every value is Some here, because each None added an error.
        Ok(ServeConfig {
            listen: listen.unwrap(),
            data_dir,
            store: store.unwrap(),
            templates: templates.unwrap(),
            template_poll: Duration::from_secs(template_poll.unwrap()),
            template_source: template_source.unwrap(),
            executor: executor.unwrap(),
            kubernetes: KubernetesSettings {
                namespace: namespace.unwrap(),
                kubeconfig: self.kubeconfig.clone(),
                service_account: self.job_service_account.clone(),
                worker_secret: self.worker_secret.clone(),
                stuck_timeout: Duration::from_secs(stuck_seconds.unwrap()),
                request_timeout: Duration::from_secs(kube_request_seconds.unwrap()),
            },
            max_running: max_running.unwrap(),
            max_upload_bytes: max_upload_bytes.unwrap(),
            max_body_bytes: max_body_bytes.unwrap(),
            progress_ttl: Duration::from_millis(progress_ttl.unwrap()),
            final_ttl: Duration::from_secs(final_ttl.unwrap()),
            retry_backoff: Duration::from_millis(retry_backoff.unwrap()),
            public_url: public_url.unwrap(),
            shutdown_grace: Duration::from_secs(shutdown_grace.unwrap()),
            s3: S3Settings {
                endpoint: s3_endpoint,
                region: s3_region,
                path_style: s3_path_style.unwrap(),
            },
            presign_expiry: Duration::from_secs(presign_seconds.unwrap()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn every_invalid_setting_is_reported() {
        let cli = Cli::parse_from([
            "jobgate",
            "--listen",
            "nowhere",
            "--store",
            "ftp://x",
            "--templates",
            "/no/such/folder",
            "--max-running",
            "0",
            "--public-url",
            "example.com",
        ]);
        let errors = cli.serve.validate().unwrap_err();
        let flags: Vec<&str> = errors.iter().map(|e| e.flag).collect();
        assert_eq!(
            flags,
            ["--listen", "--store", "--templates", "--max-running", "--public-url"]
        );
        assert!(errors[0].to_string().contains("JOBGATE_LISTEN"));
    }

    #[test]
    fn defaults_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::parse_from(["jobgate", "--templates", dir.path().to_str().unwrap()]);
        let config = cli.serve.validate().unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(matches!(config.store, StoreUrl::File(_)));
        assert!(config.max_running >= 1);
    }
}
