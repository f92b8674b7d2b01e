//! The gateway's Role against the requests the gateway makes: every
//! request kind an executor needs is allowed, and every grant is used.
//!
//! The requests below are the ones the Kubernetes executor is designed to
//! make (watch template ConfigMaps; create, read, watch and delete Jobs;
//! read pods, their logs and Events; a SelfSubjectAccessReview at start).

mod common;

use std::collections::BTreeSet;

use common::{client, shell_job, start, wait_for};
use futures::StreamExt;
use jobgate_fake_kube::User;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchParams};
use serde_json::json;

#[tokio::test]
async fn role_grants_match_gateway_usage() {
    let cluster = start().await;
    let namespace = cluster.namespace().to_string();
    let admin = client(&cluster, User::Admin).await;
    let gateway = client(&cluster, User::Gateway).await;
    let template: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "template" } })).unwrap();
    Api::<ConfigMap>::namespaced(admin, &namespace).create(&PostParams::default(), &template).await.unwrap();

    let config_maps: Api<ConfigMap> = Api::namespaced(gateway.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(gateway.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(gateway.clone(), &namespace);
    let events: Api<Event> = Api::namespaced(gateway.clone(), &namespace);
    let reviews: Api<SelfSubjectAccessReview> = Api::all(gateway);
    let watch = WatchParams::default().timeout(1);

    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.clone()),
                verb: Some("create".into()),
                group: Some("batch".into()),
                resource: Some("jobs".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    reviews.create(&PostParams::default(), &review).await.unwrap();
    config_maps.get("template").await.unwrap();
    config_maps.list(&ListParams::default()).await.unwrap();
    config_maps.watch(&watch, "0").await.unwrap().boxed().next().await;
    jobs.create(&PostParams::default(), &shell_job("used", "echo used", json!({}))).await.unwrap();
    jobs.list(&ListParams::default()).await.unwrap();
    jobs.watch(&watch, "0").await.unwrap().boxed().next().await;
    let pod_name = wait_for("the Job's pod to finish", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("batch.kubernetes.io/job-name=used")).await.unwrap();
            let pod = list.items.into_iter().next()?;
            let done = pod.status.as_ref()?.phase.as_deref() == Some("Succeeded");
            done.then(|| pod.metadata.name.unwrap())
        }
    })
    .await;
    pods.get(&pod_name).await.unwrap();
    pods.watch(&watch, "0").await.unwrap().boxed().next().await;
    pods.logs(&pod_name, &LogParams::default()).await.unwrap();
    events.list(&ListParams::default()).await.unwrap();
    events.watch(&watch, "0").await.unwrap().boxed().next().await;
    let some_event = events.list(&ListParams::default()).await.unwrap().items[0].metadata.name.clone().unwrap();
    events.get(&some_event).await.unwrap();
    jobs.get("used").await.unwrap();
    jobs.delete("used", &DeleteParams::background()).await.unwrap();

    let accesses = cluster.gateway_accesses();
    let denied: Vec<_> = accesses.iter().filter(|access| !access.allowed).collect();
    let used: BTreeSet<(String, String, String)> = accesses
        .iter()
        .map(|access| (access.verb.clone(), access.group.clone(), access.resource.clone()))
        .collect();
    let granted: BTreeSet<(String, String, String)> = cluster.role_grants().into_iter().collect();
    assert!(denied.is_empty(), "the Role denied {denied:?}");
    assert_eq!(used, granted, "the Role's grants differ from what the gateway uses");
}
