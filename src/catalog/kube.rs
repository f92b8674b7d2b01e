//! Loading templates from ConfigMaps in the cluster, through reflectors, so
//! an edited ConfigMap changes the next submission with no restart and no
//! API call per request.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{Catalog, FoundConfigMap, Snapshot, TEMPLATE_ENV_LABEL, TEMPLATE_LABEL};

/// Templates and template env values from the ConfigMaps of one namespace.
pub struct KubeSource {
    namespace: String,
    templates: Store<ConfigMap>,
    env: Store<ConfigMap>,
}

impl KubeSource {
    /// Starts watches on the labelled ConfigMaps, keeps `catalog` current
    /// until `shutdown`, and returns once the first lists are loaded.
    pub async fn start(
        client: Client,
        namespace: &str,
        catalog: Arc<Catalog>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let (templates, templates_writer) = reflector::store();
        let (env, env_writer) = reflector::store();
        let source = Arc::new(Self {
            namespace: namespace.to_owned(),
            templates,
            env,
        });
        let streams = [
            reflector::reflector(templates_writer, watcher(api.clone(), watcher::Config::default().labels(TEMPLATE_LABEL)))
                .default_backoff()
                .touched_objects()
                .boxed(),
            reflector::reflector(env_writer, watcher(api, watcher::Config::default().labels(TEMPLATE_ENV_LABEL)))
                .default_backoff()
                .touched_objects()
                .boxed(),
        ];
        for mut stream in streams {
            let source = source.clone();
            let catalog = catalog.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        item = stream.next() => match item {
                            Some(Ok(_)) => catalog.replace(source.snapshot()),
                            Some(Err(error)) => tracing::debug!(%error, "ConfigMap watch error; retrying"),
                            None => return,
                        },
                    }
                }
            });
        }
        let ready = async {
            source.templates.wait_until_ready().await.ok();
            source.env.wait_until_ready().await.ok();
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), ready)
            .await
            .map_err(|_| format!("listing ConfigMaps in namespace {namespace:?} did not finish within 30 s"))?;
        let snapshot = source.snapshot();
        tracing::info!(
            k8s.namespace = %namespace,
            templates = snapshot.templates.len(),
            invalid = snapshot.invalid.len(),
            "templates loaded from ConfigMaps"
        );
        catalog.replace(snapshot);
        Ok(source)
    }

    /// Builds a snapshot from what the reflectors hold now.
    pub fn snapshot(&self) -> Snapshot {
        // A ConfigMap with both labels is in both stores; keep it once.
        let by_name: std::collections::BTreeMap<String, Arc<ConfigMap>> = self
            .templates
            .state()
            .into_iter()
            .chain(self.env.state())
            .map(|config_map| (config_map.metadata.name.clone().unwrap_or_default(), config_map))
            .collect();
        let found = by_name
            .into_values()
            .map(|config_map| FoundConfigMap {
                source: format!(
                    "configmap/{}/{}",
                    self.namespace,
                    config_map.metadata.name.as_deref().unwrap_or("")
                ),
                config_map: (*config_map).clone(),
            })
            .collect();
        Snapshot::build(found, Vec::new())
    }
}
