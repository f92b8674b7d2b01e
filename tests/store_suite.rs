//! One suite of store behaviour, run against the filesystem store and the S3
//! store (a real Garage server on loopback).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jobgate::store::fs::FsStore;
use jobgate::store::s3::{S3Settings, S3Store};
use jobgate::store::{ByteStream, Conditional, ObjectStore, StoreError};
use support::s3::S3Server;

fn stream_of(chunks: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
}

async fn read_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    let mut reader = store.open(key).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = reader.body.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

/// Runs every check of the suite against one store.
async fn check_store(store: Arc<dyn ObjectStore>) {
    // Whole objects.
    store.put("jobs/a/request.json", Bytes::from_static(b"{\"x\":1}")).await.unwrap();
    assert_eq!(store.get("jobs/a/request.json").await.unwrap(), Bytes::from_static(b"{\"x\":1}"));
    assert_eq!(store.head("jobs/a/request.json").await.unwrap().size, 7);
    assert!(matches!(store.get("jobs/a/missing.json").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.head("jobs/a/missing.json").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.open("jobs/a/missing.json").await, Err(StoreError::NotFound { .. })));

    // Overwrite replaces the whole object.
    store.put("jobs/a/request.json", Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(store.get("jobs/a/request.json").await.unwrap(), Bytes::from_static(b"{}"));

    // Conditional reads.
    let first = store.get_if_none_match("jobs/a/request.json", None).await.unwrap();
    let Conditional::Found { etag, .. } = first else { panic!("first read must return the object") };
    let etag = etag.expect("the store returns an ETag");
    assert_eq!(
        store.get_if_none_match("jobs/a/request.json", Some(&etag)).await.unwrap(),
        Conditional::NotModified
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.put("jobs/a/request.json", Bytes::from_static(b"{\"y\":2}")).await.unwrap();
    match store.get_if_none_match("jobs/a/request.json", Some(&etag)).await.unwrap() {
        Conditional::Found { bytes, .. } => assert_eq!(bytes, Bytes::from_static(b"{\"y\":2}")),
        Conditional::NotModified => panic!("a changed object must not read as not modified"),
    }

    // Streams, small and multipart-sized, and the size limit.
    let small = store.put_stream("uploads/u/small.bin", stream_of(vec![vec![1; 10], vec![2; 10]]), 100).await.unwrap();
    assert_eq!(small, 20);
    assert_eq!(read_all(&*store, "uploads/u/small.bin").await, [vec![1u8; 10], vec![2u8; 10]].concat());
    let big: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1024 * 1024]).collect();
    let expected: Vec<u8> = big.concat();
    let size = store.put_stream("uploads/u/big.bin", stream_of(big), 64 * 1024 * 1024).await.unwrap();
    assert_eq!(size, expected.len() as u64);
    assert_eq!(store.head("uploads/u/big.bin").await.unwrap().size, expected.len() as u64);
    assert!(read_all(&*store, "uploads/u/big.bin").await == expected, "multipart content differs");
    let too_large = store.put_stream("uploads/u/over.bin", stream_of(vec![vec![0; 600]; 2]), 1000).await;
    assert!(matches!(too_large, Err(StoreError::TooLarge { limit: 1000, .. })), "{too_large:?}");
    assert!(matches!(store.head("uploads/u/over.bin").await, Err(StoreError::NotFound { .. })), "nothing stored");

    // Listing the children of a prefix.
    store.put("jobs/b/request.json", Bytes::from_static(b"{}")).await.unwrap();
    store.put("jobs/b/outputs/x.png", Bytes::from_static(b"png")).await.unwrap();
    let mut children = store.list_children("jobs/").await.unwrap();
    children.sort();
    assert_eq!(children, ["a", "b"]);
    let mut files = store.list_children("jobs/b/").await.unwrap();
    files.sort();
    assert_eq!(files, ["outputs", "request.json"]);
    assert!(store.list_children("nothing/").await.unwrap().is_empty());

    // Deletes, also of missing keys.
    store.delete("jobs/b/outputs/x.png").await.unwrap();
    store.delete("jobs/b/outputs/x.png").await.unwrap();
    assert!(matches!(store.get("jobs/b/outputs/x.png").await, Err(StoreError::NotFound { .. })));

    // Keys that would escape.
    for bad in ["../x", "/abs", "a//b", ""] {
        assert!(matches!(store.get(bad).await, Err(StoreError::InvalidKey { .. })), "{bad:?}");
    }

    store.check().await.unwrap();
}

#[tokio::test]
async fn filesystem_store_passes_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::new(dir.path().into()).await.unwrap());
    assert_eq!(store.presign_get("jobs/a/x", Duration::from_secs(60)).await.unwrap(), None);
    check_store(store).await;
}

fn s3_store_for(server: &S3Server, prefix: &str) -> impl std::future::Future<Output = S3Store> {
    // The test key is the same for every server, so setting it once for the
    // whole process is safe.
    std::env::set_var("AWS_ACCESS_KEY_ID", &server.env["AWS_ACCESS_KEY_ID"]);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &server.env["AWS_SECRET_ACCESS_KEY"]);
    S3Store::new(
        server.bucket().to_owned(),
        prefix.to_owned(),
        S3Settings {
            endpoint: Some(server.endpoint().to_owned()),
            region: Some(server.env["AWS_REGION"].clone()),
            path_style: true,
        },
    )
}

#[tokio::test]
async fn s3_store_passes_suite() {
    let server = S3Server::start();
    let store = Arc::new(s3_store_for(&server, "suite").await);
    check_store(store.clone()).await;

    // Presigned URLs work without credentials.
    store.put("jobs/p/outputs/hello.txt", Bytes::from_static(b"hello")).await.unwrap();
    let url = store.presign_get("jobs/p/outputs/hello.txt", Duration::from_secs(60)).await.unwrap().unwrap();
    let body = reqwest::get(&url).await.unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().await.unwrap(), Bytes::from_static(b"hello"));
    let put_url = store.presign_put("uploads/p/in.txt", Duration::from_secs(60)).await.unwrap().unwrap();
    let response = reqwest::Client::new().put(&put_url).body("uploaded").send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(store.get("uploads/p/in.txt").await.unwrap(), Bytes::from_static(b"uploaded"));
}

#[tokio::test]
async fn s3_store_prefixes_keep_apart() {
    let server = S3Server::start();
    let one = s3_store_for(&server, "one").await;
    let two = s3_store_for(&server, "two/nested").await;
    one.put("jobs/x/request.json", Bytes::from_static(b"1")).await.unwrap();
    assert!(matches!(two.get("jobs/x/request.json").await, Err(StoreError::NotFound { .. })));
    assert!(two.list_children("jobs/").await.unwrap().is_empty());
    assert_eq!(one.worker_url(), "s3://jobgate/one");
}

#[tokio::test]
async fn s3_check_explains_missing_bucket() {
    let server = S3Server::start();
    let mut store = s3_store_for(&server, "").await;
    store = S3Store::new("no-such-bucket".into(), String::new(), store.settings().clone()).await;
    let error = store.check().await.unwrap_err();
    let detail = jobgate::service::error_chain(&error);
    assert!(detail.contains("NoSuchBucket"), "{detail}");
    assert!(jobgate::store::s3::advice(&detail).contains("bucket does not exist"));
}
