//! Watch streams: one JSON watch event per line over a chunked response.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use poem::{Body, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::api::flag_set;
use crate::cluster::Shared;
use crate::error::ApiError;
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::StoredEvent;

/// Maximum watch duration when the client sets no `timeoutSeconds`. The
/// real API server picks between 30 and 60 minutes.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Watch events buffered per stream before the writer waits for the client.
const STREAM_BUFFER: usize = 256;

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches_object(object)
            && self.fields.matches(object)
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(resource: Resource, version: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": version.to_string(), "creationTimestamp": null });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line(
        "BOOKMARK",
        &json!({ "kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": metadata }),
    )
}

/// Where a watch starts.
enum Start {
    /// Synthetic ADDED events for the current objects, then live events.
    State(Vec<Value>, u64, broadcast::Receiver<StoredEvent>),
    /// Events from the history, then live events.
    History(Vec<StoredEvent>, u64, broadcast::Receiver<StoredEvent>),
    /// The requested version is no longer in the history.
    Expired(ApiError),
}

impl Shared {
    /// Starts a watch. Errors in the request get a Status response;
    /// an expired `resourceVersion` is reported as an ERROR event in a 200
    /// stream, as the real API server's watch cache does.
    pub(crate) fn watch(
        self: &Arc<Self>,
        resource: Resource,
        namespace: Option<String>,
        query: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let filter = Filter {
            namespace: namespace.clone(),
            labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
            fields: FieldSelector::parse(resource, query.get("fieldSelector").map_or("", String::as_str))?,
        };
        let timeout = match query.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            Some(text) => Duration::from_secs(text.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {text:?}: expected a whole number of seconds"))
            })?),
            None => DEFAULT_WATCH_TIMEOUT,
        };
        let bookmarks = flag_set(query, "allowWatchBookmarks");
        let send_initial = flag_set(query, "sendInitialEvents");
        let version = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version {text:?}: expected a decimal number"))
            })?),
            None => None,
        };
        let start = match version {
            // Unset and "0" both start from the current state: the real
            // server sends it as ADDED events before the changes.
            None | Some(0) => {
                let (items, version, live) = self.store.subscribe_with_state(resource, namespace.as_deref());
                Start::State(items, version, live)
            }
            Some(_) if send_initial => {
                let (items, version, live) = self.store.subscribe_with_state(resource, namespace.as_deref());
                Start::State(items, version, live)
            }
            Some(since) => match self.store.subscribe(resource, since) {
                Ok(subscription) => Start::History(subscription.backlog, since, subscription.live),
                Err(error) => Start::Expired(error),
            },
        };

        let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        let shared = self.clone();
        tokio::spawn(async move {
            shared
                .stream_watch(resource, filter, start, timeout, bookmarks, send_initial, sender)
                .await;
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|line| (Ok::<_, std::io::Error>(line), receiver))
        });
        Ok(Response::builder()
            .content_type("application/json")
            .header("Transfer-Encoding", "chunked")
            .body(Body::from_bytes_stream(stream)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream_watch(
        &self,
        resource: Resource,
        filter: Filter,
        start: Start,
        timeout: Duration,
        bookmarks: bool,
        send_initial: bool,
        sender: mpsc::Sender<Bytes>,
    ) {
        let mut closes = self.faults.watch_closes();
        closes.borrow_and_update();
        let (mut live, mut last_seen) = match start {
            Start::Expired(error) => {
                let _ = sender.send(event_line("ERROR", &error.to_status())).await;
                return;
            }
            Start::State(items, version, live) => {
                for item in items {
                    let namespace = item.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                    if filter.matches(namespace, &item) && sender.send(event_line("ADDED", &item)).await.is_err() {
                        return;
                    }
                }
                if send_initial && sender.send(bookmark(resource, version, true)).await.is_err() {
                    return;
                }
                (live, version)
            }
            Start::History(backlog, since, live) => {
                let mut last = since;
                for event in backlog {
                    last = event.resource_version;
                    if filter.matches(&event.namespace, &event.object)
                        && sender.send(event_line(event.event_type.as_str(), &event.object)).await.is_err()
                    {
                        return;
                    }
                }
                (live, last)
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.bookmark_interval);
        ticker.tick().await;
        loop {
            let line = tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = closes.changed() => return,
                () = &mut deadline => return,
                () = sender.closed() => return,
                _ = ticker.tick(), if bookmarks => bookmark(resource, last_seen, false),
                received = live.recv() => match received {
                    Ok(event) => {
                        // Events older than the start were already sent from
                        // the state or the history.
                        if event.resource_version <= last_seen {
                            continue;
                        }
                        last_seen = event.resource_version;
                        if !filter.matches(&event.namespace, &event.object) {
                            continue;
                        }
                        event_line(event.event_type.as_str(), &event.object)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let error = ApiError::expired(last_seen, self.store.current_version());
                        let _ = sender.send(event_line("ERROR", &error.to_status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if sender.send(line).await.is_err() {
                return;
            }
        }
    }
}
