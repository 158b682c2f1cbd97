//! The store contract suite on the AWS backend (S3 + SQS) against a local AWS emulator.
//!
//! `scripts/moto.sh start` prints `export SECMON_MOTO=http://127.0.0.1:PORT`; without `SECMON_MOTO`
//! these tests skip, saying so loudly (scripts/test.sh always sets it).
#![cfg(feature = "aws")]

use std::sync::Arc;

use secmon::store::aws::{S3Store, SqsQueue, s3_client};
use secmon::store::contract;

mod common;
use common::moto::{moto, sdk};

async fn store(endpoint: &str) -> S3Store {
    let client = s3_client(&sdk(endpoint).await, true);
    let bucket = format!("secmon-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    client.create_bucket().bucket(&bucket).send().await.expect("create the test bucket");
    S3Store::new(client, &bucket, "secmon")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refuses_conditional_writes_that_lose() {
    // A direct probe of the emulator, so that an emulator that ignores the headers is named as the
    // cause instead of surfacing as a confusing contract failure.
    let Some(endpoint) = moto() else { return };
    let client = s3_client(&sdk(&endpoint).await, true);
    let bucket = format!("secmon-probe-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let put = |body: &'static [u8]| client.put_object().bucket(&bucket).key("k").body(body.to_vec().into());
    let first = put(b"one").if_none_match("*").send().await.expect("create-only on a new key");
    let again = put(b"two").if_none_match("*").send().await;
    assert_eq!(
        again.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
        Some(412),
        "the emulator must refuse If-None-Match: * on an existing key"
    );
    let etag = first.e_tag().unwrap().to_string();
    put(b"three").if_match(&etag).send().await.expect("If-Match with the current etag");
    let stale = put(b"four").if_match(&etag).send().await;
    assert_eq!(
        stale.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
        Some(412),
        "the emulator must refuse a stale If-Match"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_passes_the_store_contract() {
    let Some(endpoint) = moto() else { return };
    contract::store_contract(&store(&endpoint).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_passes_the_retention_contract() {
    let Some(endpoint) = moto() else { return };
    contract::retention_contract(&store(&endpoint).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_passes_the_fencing_contract() {
    let Some(endpoint) = moto() else { return };
    contract::fencing_contract(&store(&endpoint).await).await;
}

/// Two store instances (two Lambdas) append to one audit stream at once: one whole chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_appends_keep_one_chain() {
    let Some(endpoint) = moto() else { return };
    let a = store(&endpoint).await;
    let b = S3Store::new(s3_client(&sdk(&endpoint).await, true), a.bucket(), "secmon");
    common::audit_race::concurrent_appends_keep_one_chain(Arc::new(a), Arc::new(b), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_passes_the_queue_contract() {
    let Some(endpoint) = moto() else { return };
    let receipts = Arc::new(store(&endpoint).await);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk(&endpoint).await), receipts)
        .with_create_missing(true)
        .with_max_dequeue(3);
    contract::queue_contract(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_passes_the_queue_admin_contract() {
    let Some(endpoint) = moto() else { return };
    let receipts = Arc::new(store(&endpoint).await);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk(&endpoint).await), receipts).with_create_missing(true);
    contract::queue_admin_contract(&queue, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_nested_names_stay_apart() {
    // `audit/a` and `audit/a/b` share an S3 prefix; neither may see the other's records.
    use secmon::store::Store;
    let Some(endpoint) = moto() else { return };
    let s = store(&endpoint).await;
    s.append("audit/a", 1, b"1").await.unwrap();
    s.append("audit/a/b", 1, b"2").await.unwrap();
    s.append("audit/a", 2, b"3").await.unwrap();
    assert_eq!(s.read_stream("audit/a").await.unwrap(), vec![b"1".to_vec(), b"3".to_vec()]);
    assert_eq!(s.read_stream("audit/a/b").await.unwrap(), vec![b"2".to_vec()]);
    assert_eq!(s.list_streams("audit/").await.unwrap(), vec!["audit/a".to_string(), "audit/a/b".to_string()]);
    // A second instance (another Lambda) cannot overwrite record 1 or 2, and appends after them.
    let other = S3Store::new(s3_client(&sdk(&endpoint).await, true), s.bucket(), "secmon");
    assert!(other.append("audit/a", 2, b"4").await.is_err());
    other.append("audit/a", 3, b"4").await.unwrap();
    s.append("audit/a", 4, b"5").await.unwrap();
    assert_eq!(
        s.read_stream("audit/a").await.unwrap(),
        vec![b"1".to_vec(), b"3".to_vec(), b"4".to_vec(), b"5".to_vec()]
    );
}

/// The validation handshake's "creating" marker on S3: written by the worker's store handle, seen by the
/// edge's (a second handle on the same bucket), not counted after its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creating_marker_is_seen_by_another_instance() {
    use secmon::intake::subscriptions::{CREATING_WINDOW_SECONDS, creating, mark_creating, unmark_creating};
    use secmon::store::Store;
    let Some(endpoint) = moto() else { return };
    let worker = store(&endpoint).await;
    let edge = S3Store::new(s3_client(&sdk(&endpoint).await, true), worker.bucket(), "secmon");
    let now = chrono::Utc::now();
    assert!(!creating(&edge, now).await.unwrap(), "a fresh bucket has no marker");
    let key = mark_creating(&worker, "contoso", now).await.unwrap();
    assert!(creating(&edge, now).await.unwrap());
    assert!(!creating(&edge, now + chrono::Duration::seconds(CREATING_WINDOW_SECONDS)).await.unwrap());
    unmark_creating(&worker, "contoso", &key).await;
    assert!(edge.get(&key).await.unwrap().is_none());
    assert!(!creating(&edge, now).await.unwrap());
}

/// A tenant-day in small segments on S3: the chain rolls over and verifies and exports across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_day_rolls_over_into_segments() {
    let Some(endpoint) = moto() else { return };
    let s = store(&endpoint).await;
    let segments = secmon::audit::Segments { records: 4 };
    assert_eq!(common::audit_race::a_long_day_rolls_over_and_verifies(&s, segments, 10, 1).await, 3);
    assert_eq!(common::audit_race::a_long_day_rolls_over_and_verifies(&s, segments, 10, 3).await, 3);
}
