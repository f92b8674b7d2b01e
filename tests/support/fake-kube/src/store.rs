//! In-memory object store with one global `resourceVersion` counter and a
//! bounded event history per resource, which feeds watches.
//!
//! Every write bumps the counter and stamps the object with it, as etcd's
//! revision does for the real API server. A watch may start from any
//! `resourceVersion` still in the history; older ones get 410 Expired.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::resource::Resource;

/// Capacity of each resource's live event channel; a watcher that falls this
/// far behind is ended with 410 Expired and relists, as it would after a
/// real API server's watch cache dropped it.
const LIVE_EVENT_CAPACITY: usize = 4096;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Resource type.
    pub resource: Resource,
    /// Namespace.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl Key {
    /// Builds a key.
    pub fn new(resource: Resource, namespace: &str, name: &str) -> Self {
        Key {
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// Watch event types, as the `type` field writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
}

impl EventType {
    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// What happened.
    pub event_type: EventType,
    /// `resourceVersion` of the change.
    pub resource_version: u64,
    /// Namespace of the object.
    pub namespace: String,
    /// The object after the change (before it, for deletes, with the new version).
    pub object: Arc<Value>,
}

struct Feed {
    history: VecDeque<StoredEvent>,
    /// Highest `resourceVersion` dropped from the history; a watch from an
    /// older version cannot be served.
    compacted: u64,
    sender: broadcast::Sender<StoredEvent>,
}

struct State {
    last_version: u64,
    objects: BTreeMap<Key, Value>,
    feeds: HashMap<Resource, Feed>,
}

/// What a watch starts from.
pub struct Subscription {
    /// Events after the requested version, already in the history.
    pub backlog: Vec<StoredEvent>,
    /// Later events.
    pub live: broadcast::Receiver<StoredEvent>,
}

/// The object store.
pub struct Store {
    state: Mutex<State>,
    history_limit: usize,
    changes: watch::Sender<u64>,
}

/// Reads `metadata.resourceVersion` as a number.
pub fn resource_version_of(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok())
}

fn set_resource_version(object: &mut Value, version: u64) {
    object["metadata"]["resourceVersion"] = json!(version.to_string());
}

/// Returns true for an object whose deletion nothing holds up any more: no
/// finalizers, and no grace period in which a kubelet stops its containers
/// (the kubelet removes such a pod itself once they have stopped).
fn is_finalized_deletion(object: &Value) -> bool {
    let deleting = object.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    let finalizers = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|list| !list.is_empty());
    let graceful = object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|seconds| seconds > 0);
    deleting && !finalizers && !graceful
}

impl Store {
    /// Creates an empty store whose watch history keeps `history_limit`
    /// events per resource.
    pub fn new(history_limit: usize) -> Self {
        let feeds = Resource::ALL
            .into_iter()
            .map(|resource| {
                let (sender, _) = broadcast::channel(LIVE_EVENT_CAPACITY);
                (
                    resource,
                    Feed {
                        history: VecDeque::new(),
                        compacted: 0,
                        sender,
                    },
                )
            })
            .collect();
        Store {
            state: Mutex::new(State {
                // The real API server's versions never start at 0 either;
                // 0 means "any version" in requests.
                last_version: 100,
                objects: BTreeMap::new(),
                feeds,
            }),
            history_limit: history_limit.max(1),
            changes: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent, because
        // every write finishes before it records its event.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns a receiver that changes after every write, for the controllers.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Returns the latest `resourceVersion`.
    pub fn current_version(&self) -> u64 {
        self.lock().last_version
    }

    /// Returns a copy of one object.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Returns the objects of a resource, in one namespace or all, and the
    /// version the list is consistent with.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.lock();
        let items = state
            .objects
            .iter()
            .filter(|(key, _)| key.resource == resource)
            .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, object)| object.clone())
            .collect();
        (items, state.last_version)
    }

    /// Stores a new object, stamping its version.
    pub fn create(&self, key: Key, mut object: Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(key.resource, &key.name));
        }
        state.last_version += 1;
        let version = state.last_version;
        set_resource_version(&mut object, version);
        state.objects.insert(key.clone(), object.clone());
        self.record(&mut state, &key, EventType::Added, object.clone());
        Ok(object)
    }

    /// Changes an object in place. A change that leaves it equal keeps its
    /// version and sends no event. An object marked for deletion whose last
    /// finalizer is removed goes away, as in the real API server.
    pub fn update(
        &self,
        key: &Key,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let current = state
            .objects
            .get(key)
            .ok_or_else(|| ApiError::not_found(key.resource, &key.name))?;
        let mut object = current.clone();
        change(&mut object)?;
        if object == *current {
            return Ok(object);
        }
        state.last_version += 1;
        let version = state.last_version;
        set_resource_version(&mut object, version);
        if is_finalized_deletion(&object) {
            state.objects.remove(key);
            self.record(&mut state, key, EventType::Deleted, object.clone());
        } else {
            state.objects.insert(key.clone(), object.clone());
            self.record(&mut state, key, EventType::Modified, object.clone());
        }
        Ok(object)
    }

    /// Removes an object, returning it stamped with the deletion's version.
    pub fn remove(&self, key: &Key) -> Option<Value> {
        let mut state = self.lock();
        let mut object = state.objects.remove(key)?;
        state.last_version += 1;
        let version = state.last_version;
        set_resource_version(&mut object, version);
        self.record(&mut state, key, EventType::Deleted, object.clone());
        Some(object)
    }

    fn record(&self, state: &mut State, key: &Key, event_type: EventType, object: Value) {
        let event = StoredEvent {
            event_type,
            resource_version: state.last_version,
            namespace: key.namespace.clone(),
            object: Arc::new(object),
        };
        let feed = state
            .feeds
            .get_mut(&key.resource)
            .expect("every resource has a feed");
        feed.history.push_back(event.clone());
        while feed.history.len() > self.history_limit {
            if let Some(dropped) = feed.history.pop_front() {
                feed.compacted = dropped.resource_version;
            }
        }
        // Having no receivers is fine, because no watch of this resource is open.
        let _ = feed.sender.send(event);
        self.changes.send_replace(state.last_version);
    }

    /// Starts a watch after `since`. Events are taken and the live channel
    /// joined under one lock, so none is missed or sent twice.
    pub fn subscribe(&self, resource: Resource, since: u64) -> Result<Subscription, ApiError> {
        let state = self.lock();
        let feed = &state.feeds[&resource];
        if since < feed.compacted {
            let oldest = feed
                .history
                .front()
                .map_or(state.last_version, |event| event.resource_version);
            return Err(ApiError::expired(since, oldest));
        }
        Ok(Subscription {
            backlog: feed
                .history
                .iter()
                .filter(|event| event.resource_version > since)
                .cloned()
                .collect(),
            live: feed.sender.subscribe(),
        })
    }

    /// Starts a watch from the current state: the objects as they are now
    /// and every later change.
    pub fn subscribe_with_state(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> (Vec<Value>, u64, broadcast::Receiver<StoredEvent>) {
        let state = self.lock();
        let items = state
            .objects
            .iter()
            .filter(|(key, _)| key.resource == resource)
            .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, object)| object.clone())
            .collect();
        (items, state.last_version, state.feeds[&resource].sender.subscribe())
    }

    /// Drops every resource's event history, so that a watch from any
    /// version before now gets 410 Expired, as after etcd compaction.
    pub fn compact(&self) {
        let mut state = self.lock();
        let now = state.last_version;
        for feed in state.feeds.values_mut() {
            feed.history.clear();
            feed.compacted = now;
        }
    }
}
