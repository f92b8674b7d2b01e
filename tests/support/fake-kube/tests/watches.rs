//! Watch streams, 410 Expired, and kube-runtime watchers and reflectors.

mod common;

use std::time::Duration;

use common::{client, start, wait_for};
use futures::{StreamExt, TryStreamExt};
use jobgate_fake_kube::User;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({ "metadata": { "name": name }, "data": { "n": "0" } })).unwrap()
}

async fn next_any_event(stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin)) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event arrives within 10 s")
        .expect("the stream is open")
        .expect("the event decodes")
}

/// Returns the next event that is not a BOOKMARK.
async fn next_event(stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin)) -> WatchEvent<ConfigMap> {
    loop {
        match next_any_event(stream).await {
            WatchEvent::Bookmark(_) => continue,
            event => return event,
        }
    }
}

#[tokio::test]
async fn watch_streams_changes_in_order() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let list = api.list(&Default::default()).await.unwrap();
    let version = list.metadata.resource_version.unwrap();
    let mut stream = api.watch(&WatchParams::default().timeout(30), &version).await.unwrap().boxed();

    api.create(&PostParams::default(), &config_map("watched")).await.unwrap();
    let patch = json!({ "data": { "n": "1" } });
    api.patch("watched", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    api.delete("watched", &DeleteParams::default()).await.unwrap();

    let added = next_event(&mut stream).await;
    let modified = next_event(&mut stream).await;
    let deleted = next_event(&mut stream).await;
    assert!(matches!(added, WatchEvent::Added(ref cm) if cm.metadata.name.as_deref() == Some("watched")), "{added:?}");
    assert!(matches!(modified, WatchEvent::Modified(ref cm) if cm.data.as_ref().unwrap()["n"] == "1"), "{modified:?}");
    assert!(matches!(deleted, WatchEvent::Deleted(_)), "{deleted:?}");
}

#[tokio::test]
async fn watch_filters_by_field_selector() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let params = WatchParams::default().fields("metadata.name=wanted").timeout(30);
    let mut stream = api.watch(&params, "0").await.unwrap().boxed();

    api.create(&PostParams::default(), &config_map("other")).await.unwrap();
    api.create(&PostParams::default(), &config_map("wanted")).await.unwrap();

    let event = next_event(&mut stream).await;
    assert!(matches!(event, WatchEvent::Added(ref cm) if cm.metadata.name.as_deref() == Some("wanted")), "{event:?}");
}

#[tokio::test]
async fn watch_from_compacted_version_expires() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let created = api.create(&PostParams::default(), &config_map("old")).await.unwrap();
    let old_version = created.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &config_map("newer")).await.unwrap();
    cluster.compact();

    let mut stream = api.watch(&WatchParams::default().timeout(30), &old_version).await.unwrap().boxed();
    let event = next_event(&mut stream).await;

    let WatchEvent::Error(status) = event else { panic!("expected an ERROR event, got {event:?}") };
    assert_eq!(status.code, 410);
    assert_eq!(status.reason, "Expired");
    assert!(status.message.starts_with("too old resource version"), "{}", status.message);
}

#[tokio::test]
async fn watch_sends_bookmarks_when_allowed() {
    let cluster = jobgate_fake_kube::FakeCluster::start(jobgate_fake_kube::Options {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    let version = api.list(&Default::default()).await.unwrap().metadata.resource_version.unwrap();

    let mut stream = api.watch(&WatchParams::default().timeout(30), &version).await.unwrap().boxed();
    let event = next_any_event(&mut stream).await;

    let WatchEvent::Bookmark(bookmark) = event else { panic!("expected a BOOKMARK, got {event:?}") };
    assert_eq!(bookmark.metadata.resource_version, version);
}

#[tokio::test]
async fn reflector_relists_after_expired_watch() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    api.create(&PostParams::default(), &config_map("first")).await.unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    wait_for("the reflector to see the first ConfigMap", || {
        let reader = reader.clone();
        async move { (reader.state().len() == 1).then_some(()) }
    })
    .await;

    // Changes made while the watch is closed and the history is gone can
    // only be seen by relisting after 410 Expired.
    cluster.faults().close_watches();
    api.create(&PostParams::default(), &config_map("second")).await.unwrap();
    api.delete("first", &DeleteParams::default()).await.unwrap();
    cluster.compact();

    let names = wait_for("the reflector to relist", || {
        let reader = reader.clone();
        async move {
            let names: Vec<String> = reader.state().iter().map(|cm| cm.metadata.name.clone().unwrap()).collect();
            (names == ["second"]).then_some(names)
        }
    })
    .await;
    task.abort();
    assert_eq!(names, ["second"]);
}

#[tokio::test]
async fn streaming_list_watcher_sees_objects() {
    let cluster = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster, User::Admin).await, cluster.namespace());
    api.create(&PostParams::default(), &config_map("streamed")).await.unwrap();

    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                watcher::Event::InitApply(cm) => seen.push(cm.metadata.name.unwrap()),
                watcher::Event::InitDone => return true,
                _ => {}
            }
        }
        false
    })
    .await;

    assert_eq!(ready, Ok(true));
    assert_eq!(seen, ["streamed"]);
}
