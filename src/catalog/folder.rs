//! Loading templates from YAML files: a folder of ConfigMap manifests (such
//! as `kustomize/base`), or one file such as the output of `kubectl kustomize`.
//!
//! The source polls file names, sizes and modification times instead of using
//! inotify, because Kubernetes updates mounted ConfigMaps by swapping a
//! symlink, which inotify watchers on the old files miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Catalog, FoundConfigMap, Snapshot, SourceError};

/// Largest file read, in bytes: Kubernetes caps a ConfigMap at 1 MiB, so a
/// larger file cannot be one (a `kubectl kustomize` output of many templates
/// can be larger, hence the headroom).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Templates read from the YAML files at one path.
#[derive(Debug, Clone)]
pub struct FolderSource {
    path: PathBuf,
}

/// Names, modification times and sizes of the files, for change detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<SystemTime>, u64)>);

impl FolderSource {
    /// Creates a source for a folder (searched recursively) or a single file.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Reads every file and builds a snapshot. Problems with single files are
    /// recorded in the snapshot, not returned, so one bad file does not hide
    /// the other templates.
    pub fn load(&self) -> Snapshot {
        let mut config_maps = Vec::new();
        let mut errors = Vec::new();
        for file in yaml_files(&self.path) {
            match read_config_maps(&file) {
                Ok(found) => config_maps.extend(found),
                Err(error) => errors.push(SourceError {
                    source: file.display().to_string(),
                    error,
                }),
            }
        }
        Snapshot::build(config_maps, errors)
    }

    /// Returns the current fingerprint of the files. Take it before
    /// [`FolderSource::load`] and pass it to [`FolderSource::watch`], so that
    /// an edit made during the load is not missed.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.path)
    }

    /// Polls for changes every `interval` and replaces the catalog's snapshot
    /// after each change from `loaded` (the files the current snapshot was
    /// loaded from), until `shutdown` is cancelled.
    pub async fn watch(self, catalog: Arc<Catalog>, interval: Duration, shutdown: CancellationToken, loaded: Fingerprint) {
        let mut last = loaded;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let source = self.clone();
            let Ok((current, snapshot)) = tokio::task::spawn_blocking(move || {
                let current = fingerprint(&source.path);
                (current.clone(), source.load())
            })
            .await
            else {
                continue;
            };
            if current == last {
                continue;
            }
            last = current;
            log_snapshot(&self.path, &snapshot);
            catalog.replace(snapshot);
        }
    }
}

/// Logs what a load found: info for the counts, warn for each problem,
/// because an operator has to fix those.
pub fn log_snapshot(path: &Path, snapshot: &Snapshot) {
    tracing::info!(
        path = %path.display(),
        templates = snapshot.templates.len(),
        invalid = snapshot.invalid.len(),
        "templates loaded"
    );
    for invalid in snapshot.invalid.values() {
        tracing::warn!(template = %invalid.name, source = %invalid.source, error = %invalid.error, "template is invalid");
    }
    for error in &snapshot.source_errors {
        tracing::warn!(source = %error.source, error = %error.error, "template file could not be read");
    }
}

/// Lists `.yaml` and `.yml` files below `path` in a stable order, skipping
/// hidden entries (including the `..data` folders of mounted ConfigMaps, whose
/// files are also reachable through the visible symlinks).
fn yaml_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    let mut folders = vec![path.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn fingerprint(path: &Path) -> Fingerprint {
    Fingerprint(
        yaml_files(path)
            .into_iter()
            .map(|file| {
                let metadata = std::fs::metadata(&file).ok();
                let modified = metadata.as_ref().and_then(|m| m.modified().ok());
                let size = metadata.map_or(0, |m| m.len());
                (file, modified, size)
            })
            .collect(),
    )
}

/// Reads the ConfigMaps of one file, which may hold several YAML documents.
fn read_config_maps(file: &Path) -> Result<Vec<FoundConfigMap>, String> {
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "file is {size} bytes; the maximum is {MAX_FILE_BYTES}"
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| format!("YAML document {} is invalid: {e}", index + 1))?;
        if value.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
            continue;
        }
        let config_map: ConfigMap = serde_json::from_value(value)
            .map_err(|e| format!("YAML document {} is not a valid ConfigMap: {e}", index + 1))?;
        found.push(FoundConfigMap {
            config_map,
            source: file.display().to_string(),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: jobgate-template-echo
  labels:
    jobgate.dev/template: echo
data:
  description: Print a message
  parameters.yaml: |
    properties:
      message: {type: string, default: hello}
  job.yaml: |
    apiVersion: batch/v1
    kind: Job
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: {env.image}
              command: ["echo", {params.message}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: jobgate-template-env
  labels:
    jobgate.dev/template-env: "true"
data:
  image: busybox:1.36
  deadline: "900"
"#;

    #[test]
    fn folder_loads_multi_document_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("echo.yaml"), TEMPLATE).unwrap();
        std::fs::write(dir.path().join("kustomization.yaml"), "resources: [echo.yaml]\n").unwrap();
        let snapshot = FolderSource::new(dir.path().into()).load();
        assert!(snapshot.templates.contains_key("echo"), "{snapshot:?}");
        assert_eq!(snapshot.env["image"], Value::from("busybox:1.36"));
        assert_eq!(snapshot.env["deadline"], Value::from(900));
        assert!(snapshot.source_errors.is_empty(), "{:?}", snapshot.source_errors);
    }

    #[test]
    fn broken_file_leaves_others_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("echo.yaml"), TEMPLATE).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "kind: ConfigMap\n  bad: [indent\n").unwrap();
        let snapshot = FolderSource::new(dir.path().into()).load();
        assert!(snapshot.templates.contains_key("echo"));
        assert_eq!(snapshot.source_errors.len(), 1);
        assert!(snapshot.source_errors[0].source.ends_with("broken.yaml"));
    }

    #[test]
    fn invalid_template_is_listed_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let broken = TEMPLATE.replace("command: [\"echo\", {params.message}]", "command: [\"echo {params.message}\"]");
        std::fs::write(dir.path().join("echo.yaml"), broken).unwrap();
        let snapshot = FolderSource::new(dir.path().into()).load();
        let invalid = &snapshot.invalid["echo"];
        assert!(invalid.error.contains("whole YAML value"), "{}", invalid.error);
    }

    #[test]
    fn duplicate_template_names_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), TEMPLATE).unwrap();
        std::fs::write(dir.path().join("b.yaml"), TEMPLATE).unwrap();
        let snapshot = FolderSource::new(dir.path().into()).load();
        assert!(!snapshot.templates.contains_key("echo"));
        assert!(snapshot.invalid["echo"].error.contains("defined twice"));
    }
}
