//! The template catalog: which templates exist, their parameter schemas, and
//! rendering a request into a Kubernetes Job.
//!
//! Templates are ConfigMaps labelled `jobgate.dev/template: <name>`. The
//! per-environment values that templates see as `{env.<name>}` come from
//! ConfigMaps labelled `jobgate.dev/template-env`. A [`Catalog`] holds the
//! current [`Snapshot`]; a source ([`folder::FolderSource`] here) replaces it
//! whenever the ConfigMaps change, so edits apply to the next submission
//! without a restart.

pub mod folder;
pub mod kube;
pub mod params;
pub mod render;
pub mod template;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Map, Value};

pub use params::FieldError;
pub use template::Template;

/// Label that marks a ConfigMap as a template; its value is the template name.
pub const TEMPLATE_LABEL: &str = "jobgate.dev/template";
/// Label that marks a ConfigMap as a source of `{env.<name>}` values.
pub const TEMPLATE_ENV_LABEL: &str = "jobgate.dev/template-env";

/// A template that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTemplate {
    /// Template name, from the label.
    pub name: String,
    /// Where it came from.
    pub source: String,
    /// Why it is invalid, with the fix where one is known.
    pub error: String,
}

/// A source file that could not be read or parsed; its templates are missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// File path or API location.
    pub source: String,
    /// What went wrong.
    pub error: String,
}

/// One ConfigMap as found by a source, with where it was found.
#[derive(Debug, Clone)]
pub struct FoundConfigMap {
    /// The ConfigMap.
    pub config_map: ConfigMap,
    /// File path or `configmap/<namespace>/<name>`.
    pub source: String,
}

/// The catalog's content at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Valid templates by name.
    pub templates: BTreeMap<String, Arc<Template>>,
    /// Templates that failed to load, by name.
    pub invalid: BTreeMap<String, InvalidTemplate>,
    /// Files or objects that could not be read at all.
    pub source_errors: Vec<SourceError>,
    /// Values for `{env.<name>}`.
    pub env: Map<String, Value>,
}

impl Snapshot {
    /// Builds a snapshot from the ConfigMaps a source found.
    pub fn build(config_maps: Vec<FoundConfigMap>, source_errors: Vec<SourceError>) -> Self {
        let mut snapshot = Self {
            source_errors,
            ..Self::default()
        };
        let mut env_maps: Vec<&FoundConfigMap> = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for found in &config_maps {
            let labels = found.config_map.metadata.labels.clone().unwrap_or_default();
            if labels.contains_key(TEMPLATE_ENV_LABEL) {
                env_maps.push(found);
            }
            let Some(name) = labels.get(TEMPLATE_LABEL) else {
                continue;
            };
            if let Some(first) = seen.insert(name.clone(), found.source.clone()) {
                snapshot.templates.remove(name);
                snapshot.invalid.insert(
                    name.clone(),
                    InvalidTemplate {
                        name: name.clone(),
                        source: found.source.clone(),
                        error: format!(
                            "template {name:?} is defined twice, in {first} and {}; remove one",
                            found.source
                        ),
                    },
                );
                continue;
            }
            let data = found.config_map.data.clone().unwrap_or_default();
            match Template::from_data(name, &data, found.source.clone()) {
                Ok(template) => {
                    snapshot.templates.insert(name.clone(), Arc::new(template));
                }
                Err(error) => {
                    snapshot.invalid.insert(
                        name.clone(),
                        InvalidTemplate {
                            name: name.clone(),
                            source: found.source.clone(),
                            error,
                        },
                    );
                }
            }
        }
        // Sort so that the result does not depend on file or watch order.
        env_maps.sort_by(|a, b| a.source.cmp(&b.source));
        for found in env_maps {
            for (key, text) in found.config_map.data.clone().unwrap_or_default() {
                // "900" becomes the number 900 and "true" a boolean; text that
                // is not JSON stays a string.
                let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                snapshot.env.insert(key, value);
            }
        }
        snapshot
    }
}

/// The current set of templates, replaced as a whole when sources change.
#[derive(Debug, Default)]
pub struct Catalog {
    current: RwLock<Arc<Snapshot>>,
}

/// Errors of looking a template up.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No template has this name.
    #[error("template {name:?} not found")]
    NotFound {
        /// Requested name.
        name: String,
    },
    /// The template exists but failed to load.
    #[error("template {name:?} is invalid: {error}")]
    Invalid {
        /// Requested name.
        name: String,
        /// Load error.
        error: String,
    },
}

impl Catalog {
    /// Creates a catalog holding `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// Returns the current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // NB: a poisoned lock only means a writer panicked between two
        // statements that cannot panic; the Arc inside is always whole.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
    }

    /// Looks up a valid template.
    pub fn get(&self, name: &str) -> Result<(Arc<Template>, Arc<Snapshot>), CatalogError> {
        let snapshot = self.snapshot();
        if let Some(template) = snapshot.templates.get(name) {
            return Ok((template.clone(), snapshot));
        }
        if let Some(invalid) = snapshot.invalid.get(name) {
            return Err(CatalogError::Invalid {
                name: name.to_owned(),
                error: invalid.error.clone(),
            });
        }
        Err(CatalogError::NotFound {
            name: name.to_owned(),
        })
    }
}

/// Returns true for a template name that can be a label value and a URL segment.
pub fn is_valid_template_name(name: &str) -> bool {
    render::is_dns1123_label(name)
}
