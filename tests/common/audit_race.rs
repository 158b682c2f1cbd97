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

/// Appends `n` records to one tenant-day in segments of `segments.records`, `batch` at a time
/// ([`audit::append_all`]; 1 is [`audit::append_in`]), then checks that the day verifies as one chain
/// across every segment, that no segment holds more than a segment's worth, and that `audit export`
/// returns every record once, in order. Returns the day's segment count.
pub async fn a_long_day_rolls_over_and_verifies(
    store: &dyn Store,
    segments: audit::Segments,
    n: u64,
    batch: u64,
) -> usize {
    let tenant = format!("storm{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let now: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
    let mut next = 0;
    while next < n {
        let records: Vec<Record> =
            (next..n.min(next + batch)).map(|i| Record::new(&format!("a{i}"), "v1", Action::WouldClose)).collect();
        let stored = if batch == 1 {
            vec![audit::append_in(store, segments, &tenant, now, records.into_iter().next().unwrap()).await.unwrap()]
        } else {
            audit::append_all(store, segments, &tenant, now, records).await.expect("append")
        };
        for r in stored {
            next += 1;
            assert_eq!(r.seq, next);
        }
    }
    let reports = audit::verify(store, Some(&tenant)).await.unwrap();
    assert_eq!(reports.len(), 1, "one tenant-day: {reports:?}");
    assert!(reports[0].ok(), "{:?}", reports[0]);
    assert_eq!(reports[0].records as u64, n);
    let day = audit::days(store, Some(&tenant)).await.unwrap().remove(0);
    assert_eq!(day.segments.len() as u64, n.div_ceil(segments.records), "{:?}", day.segments);
    for (_, name) in &day.segments {
        let len = store.read_stream(name).await.unwrap().len() as u64;
        assert!(len <= segments.records, "{name} holds {len} records");
    }
    let mut out = Vec::new();
    let since = "2026-11-26T00:00:00Z".parse().unwrap();
    assert_eq!(audit::export(store, since, None, Some(&tenant), &mut out).await.unwrap() as u64, n);
    for (expected, line) in (1..).zip(String::from_utf8(out).unwrap().lines()) {
        // An export line is the record with `"kind":"audit_record"` in front.
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["kind"], "audit_record", "{line}");
        value.as_object_mut().unwrap().remove("kind");
        assert_eq!(serde_json::from_value::<Record>(value).unwrap().seq, expected);
    }
    day.segments.len()
}
