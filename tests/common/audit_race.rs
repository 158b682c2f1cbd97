//! Concurrent audit appends, for every backend: writers on two store handles (two processes, two
//! Functions instances) append to one stream at once; the chain must come out whole.

use std::collections::HashSet;
use std::sync::Arc;

use secmon::audit::{self, Action, Record};
use secmon::store::Store;

/// Appends `per_writer` records from each of four tasks, alternating between the two handles, then
/// checks that `audit verify` passes and every record is there exactly once.
pub async fn concurrent_appends_keep_one_chain(a: Arc<dyn Store>, b: Arc<dyn Store>, per_writer: usize) {
    let tenant = format!("race{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let now: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let record = Record::new(&format!("w{w}-{i}"), "v1", Action::Notify);
                audit::append(store.as_ref(), &tenant, now, record).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reports = audit::verify(a.as_ref(), Some(&tenant)).await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].ok(), "{:?}", reports[0]);
    assert_eq!(reports[0].records, 4 * per_writer, "{:?}", reports[0]);
    let day = audit::days(a.as_ref(), Some(&tenant)).await.unwrap().remove(0);
    let ids: Vec<String> = day
        .records(a.as_ref())
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<Record>(r).unwrap().alert_id)
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a record was written twice: {ids:?}");
}
