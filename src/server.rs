//! Building the parts from configuration, serving HTTP, and shutting down.
//!
//! Shutdown: the first SIGTERM or SIGINT stops accepting connections and
//! gives in-flight requests the configured grace to finish; then the local
//! executor stops its jobs (SIGTERM, then SIGKILL) and the final views of jobs
//! that ended are written. A second signal exits at once.

use std::sync::Arc;

use poem::listener::{Acceptor, Listener, TcpListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::folder::{self, FolderSource};
use crate::catalog::kube::KubeSource;
use crate::catalog::Catalog;
use crate::config::{ExecutorKind, KubernetesSettings, ServeConfig, TemplateSource};
use crate::executor::kubernetes::{self, preflight, KubernetesConfig, KubernetesExecutor};
use crate::executor::local::{LocalConfig, LocalExecutor};
use crate::executor::Executor;
use crate::service::{error_chain, Gateway, Limits};
use crate::status::{StatusConfig, StatusReader};
use crate::store::{self, StoreError};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store failed its start-up check.
    #[error("the store at {url} is not usable: {advice} ({detail})")]
    Store {
        /// Store URL.
        url: String,
        /// What to do about it.
        advice: &'static str,
        /// The error chain.
        detail: String,
    },
    /// The cluster cannot be used.
    #[error("{0}")]
    Cluster(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; choose another address with --listen")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

impl ServeError {
    fn store(url: &store::StoreUrl, error: &StoreError) -> Self {
        let detail = error_chain(error);
        let advice = match url {
            store::StoreUrl::S3 { .. } => store::s3::advice(&detail),
            store::StoreUrl::File(_) => "check that the folder exists or can be created, and is writable",
        };
        Self::Store {
            url: url.to_string(),
            advice,
            detail,
        }
    }
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    run_until(config, shutdown).await
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run_until(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let store = store::open(&config.store, &config.s3)
        .await
        .map_err(|e| ServeError::store(&config.store, &e))?;
    store
        .check()
        .await
        .map_err(|e| ServeError::store(&config.store, &e))?;
    tracing::info!(store = %config.store, "store ready");

    let background = CancellationToken::new();
    let needs_cluster = config.executor == ExecutorKind::Kubernetes
        || config.template_source == TemplateSource::ConfigMaps;
    let kube_client = if needs_cluster {
        Some(connect_cluster(&config.kubernetes).await?)
    } else {
        None
    };

    let catalog = Arc::new(Catalog::default());
    let mut watcher = None;
    match (&kube_client, config.template_source) {
        (Some(client), TemplateSource::ConfigMaps) => {
            KubeSource::start(client.clone(), &config.kubernetes.namespace, catalog.clone(), background.clone())
                .await
                .map_err(ServeError::Cluster)?;
        }
        _ => {
            let source = FolderSource::new(config.templates.clone());
            let loaded = source.fingerprint();
            let snapshot = source.load();
            folder::log_snapshot(&config.templates, &snapshot);
            catalog.replace(snapshot);
            watcher = Some(tokio::spawn(source.watch(catalog.clone(), config.template_poll, background.clone(), loaded)));
        }
    }

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let executor: Arc<dyn Executor> = match (config.executor, &kube_client) {
        (ExecutorKind::Kubernetes, Some(client)) => {
            let settings = &config.kubernetes;
            Arc::new(
                KubernetesExecutor::start(
                    client.clone(),
                    KubernetesConfig {
                        kubeconfig: settings.kubeconfig.clone(),
                        namespace: settings.namespace.clone(),
                        service_account: settings.service_account.clone(),
                        worker_secret: settings.worker_secret.clone(),
                        stuck_timeout: settings.stuck_timeout,
                        request_timeout: settings.request_timeout,
                    },
                    events_tx,
                    background.clone(),
                )
                .await
                .map_err(|e| ServeError::Cluster(e.to_string()))?,
            )
        }
        _ => Arc::new(LocalExecutor::new(
            LocalConfig {
                data_dir: config.data_dir.clone(),
                max_running: config.max_running,
                bin_dirs: LocalConfig::default_bin_dirs(),
                retry_backoff: config.retry_backoff,
            },
            events_tx,
        )),
    };
    let status = StatusReader::new(
        store.clone(),
        executor.clone(),
        StatusConfig {
            progress_ttl: config.progress_ttl,
            final_ttl: config.final_ttl,
            public_url: config.public_url.clone(),
            presign_expiry: config.presign_expiry,
        },
    );
    let gateway = Gateway::new(
        catalog.clone(),
        executor.clone(),
        store.clone(),
        status,
        Limits {
            max_upload_bytes: config.max_upload_bytes,
            presign_expiry: config.presign_expiry,
        },
    );
    match gateway.recover_lost_jobs().await {
        Ok(0) => {}
        Ok(count) => tracing::warn!(count, "recorded jobs lost by an earlier gateway as failed"),
        Err(error) => tracing::error!(error = %error_chain(&error), "recovering lost jobs failed"),
    }

    let recorder = tokio::spawn({
        let gateway = gateway.clone();
        let background = background.clone();
        async move { gateway.record_terminal_jobs(events_rx, background).await }
    });

    let acceptor = TcpListener::bind(config.listen)
        .into_acceptor()
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    for addr in acceptor.local_addr() {
        match config.executor {
            ExecutorKind::Local => {
                tracing::info!(address = %addr, executor = executor.name(), max_running = config.max_running, "listening");
            }
            ExecutorKind::Kubernetes => tracing::info!(address = %addr, executor = executor.name(), "listening"),
        }
    }
    let app = crate::api::app(gateway, catalog, config.max_body_bytes);
    let served = poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown.clone().cancelled_owned(), Some(config.shutdown_grace))
        .await;

    match config.executor {
        ExecutorKind::Local => tracing::info!("stopping jobs"),
        ExecutorKind::Kubernetes => tracing::info!("stopping; the cluster's Jobs keep running"),
    }
    executor.shutdown().await;
    background.cancel();
    let _ = recorder.await;
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    tracing::info!("stopped");
    served.map_err(ServeError::Serve)
}

/// Connects to the cluster and checks that the gateway holds every
/// permission it uses, naming each missing one.
async fn connect_cluster(settings: &KubernetesSettings) -> Result<kube::Client, ServeError> {
    let client = kubernetes::client(settings.kubeconfig.as_ref())
        .await
        .map_err(ServeError::Cluster)?;
    let namespace = &settings.namespace;
    let missing = preflight::missing_permissions(&client, namespace)
        .await
        .map_err(|e| ServeError::Cluster(format!("the Kubernetes API cannot be reached or rejected the access review: {e}")))?;
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        for permission in &missing {
            tracing::warn!(k8s.namespace = %namespace, %permission, "permission missing");
        }
        return Err(ServeError::Cluster(format!(
            "the gateway lacks these permissions in namespace {namespace:?}: {}; apply the Role and \
             RoleBinding in kustomize/base/rbac.yaml to its service account",
            list.join(", ")
        )));
    }
    tracing::info!(k8s.namespace = %namespace, "cluster reachable and permitted");
    Ok(client)
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, and exits the process
/// on the second.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
        for round in 0..2 {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if round == 0 {
                tracing::info!("shutdown signal received; draining requests");
                shutdown.cancel();
            } else {
                tracing::warn!("second shutdown signal; exiting at once");
                std::process::exit(130);
            }
        }
    });
}
