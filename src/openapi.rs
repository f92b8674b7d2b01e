//! The OpenAPI document, generated from the API's code.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::executor::local::{LocalConfig, LocalExecutor};
use crate::service::{Gateway, Limits};
use crate::status::{StatusConfig, StatusReader};
use crate::store::fs::FsStore;

/// Returns the OpenAPI document as `yaml` or `json`.
pub fn document(format: &str) -> String {
    let service = crate::api::service(unused_gateway(), Arc::new(Catalog::default()));
    match format {
        "json" => service.spec(),
        _ => service.spec_yaml(),
    }
}

/// Builds a gateway whose parts are never called: the document depends only
/// on the operations' types, but poem-openapi needs the API values.
fn unused_gateway() -> Gateway {
    let store = Arc::new(FsStore::unopened("/nonexistent".into()));
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    let executor = Arc::new(LocalExecutor::new(
        LocalConfig {
            data_dir: "/nonexistent".into(),
            max_running: 1,
            bin_dirs: Vec::new(),
            retry_backoff: Duration::ZERO,
        },
        events,
    ));
    let status = StatusReader::new(
        store.clone(),
        executor.clone(),
        StatusConfig {
            progress_ttl: Duration::from_secs(1),
            final_ttl: Duration::from_secs(1),
            public_url: String::new(),
            presign_expiry: Duration::from_secs(1),
        },
    );
    Gateway::new(
        Arc::new(Catalog::default()),
        executor,
        store,
        status,
        Limits {
            max_upload_bytes: crate::config::DEFAULT_MAX_UPLOAD_BYTES,
            presign_expiry: Duration::from_secs(1),
        },
    )
}
