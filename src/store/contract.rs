//! The contract every backend passes: call these from each backend's tests.
//!
//! The suites use real time with short leases (about a second), because some backends (Azure Storage)
//! count visibility timeouts in whole seconds on the server's clock. Keys carry a random prefix so
//! the suites can run against a shared server.

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Claim, Once, Precondition, Queue, Space, Store, StoreError, StoreResult, Token, once, poison_name};

fn prefix() -> String {
    format!("contract-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Checks get / put_if / put / delete / list, claims and streams.
pub async fn store_contract(store: &dyn Store) {
    let p = prefix();
    let key = format!("{p}/watermark/contoso");

    // Versioned values: create-only, compare-and-swap, and the loser of a race gets Conflict.
    assert!(store.get(&key).await.unwrap().is_none(), "fresh key must be absent");
    let e1 = store.put_if(&key, b"one", Precondition::Absent).await.unwrap();
    assert!(
        matches!(store.put_if(&key, b"dup", Precondition::Absent).await, Err(StoreError::Conflict { .. })),
        "create-only on an existing key must conflict"
    );
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!(got.value, b"one");
    assert_eq!(got.etag, e1);
    let e2 = store.put_if(&key, b"two", Precondition::Matches(e1.clone())).await.unwrap();
    assert_ne!(e1, e2, "a write must change the etag");
    assert!(
        matches!(store.put_if(&key, b"stale", Precondition::Matches(e1)).await, Err(StoreError::Conflict { .. })),
        "a stale etag must conflict"
    );
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"two");
    let e3 = store.put(&key, b"three").await.unwrap();
    assert_ne!(e2, e3);
    assert_eq!(store.get(&key).await.unwrap().unwrap().etag, e3);

    // Listing by prefix is exact and sorted.
    store.put(&format!("{p}/watermark/fabrikam"), b"x").await.unwrap();
    store.put(&format!("{p}/other/z"), b"x").await.unwrap();
    let listed = store.list(&format!("{p}/watermark/")).await.unwrap();
    assert_eq!(listed, vec![format!("{p}/watermark/contoso"), format!("{p}/watermark/fabrikam")]);
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());

    // Claims: first caller wins; a completed claim is done for good; a released one is free again;
    // an abandoned one (crash between claim and complete) is free once its lease runs out.
    let c = format!("{p}/claim/a");
    let token = acquired(store.claim(&c, Duration::from_secs(60)).await.unwrap());
    assert_eq!(store.claim(&c, Duration::from_secs(60)).await.unwrap(), Claim::Held);
    store.complete(&c, &token).await.unwrap();
    store.complete(&c, &token).await.unwrap();
    assert_eq!(store.claim(&c, Duration::from_secs(60)).await.unwrap(), Claim::Done);
    store.release(&c, &token).await.unwrap();
    assert_eq!(
        store.claim(&c, Duration::from_secs(60)).await.unwrap(),
        Claim::Done,
        "release must not undo a completed claim"
    );

    let r = format!("{p}/claim/b");
    let token = acquired(store.claim(&r, Duration::from_secs(60)).await.unwrap());
    store.release(&r, &token).await.unwrap();
    assert!(matches!(store.claim(&r, Duration::from_secs(60)).await.unwrap(), Claim::Acquired(_)));

    let l = format!("{p}/claim/c");
    acquired(store.claim(&l, Duration::from_secs(1)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        matches!(store.claim(&l, Duration::from_secs(60)).await.unwrap(), Claim::Acquired(_)),
        "an expired lease must be claimable"
    );

    // Concurrent claims: exactly one winner.
    let race = format!("{p}/claim/race");
    let results = futures_join(store, &race).await;
    assert_eq!(results.iter().filter(|c| matches!(c, Claim::Acquired(_))).count(), 1, "{results:?}");

    // Streams: append-only, in order, listed by prefix; each number is written once.
    let s = format!("{p}/audit/contoso/2026-11-26");
    for i in 0..5u8 {
        store.append(&s, u64::from(i) + 1, &[i]).await.unwrap();
    }
    assert!(
        matches!(store.append(&s, 5, b"again").await, Err(StoreError::Conflict { .. })),
        "a number already written must conflict"
    );
    store.append(&format!("{p}/audit/fabrikam/2026-11-26"), 1, b"f").await.unwrap();
    assert_eq!(store.read_stream(&s).await.unwrap(), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(store.read_stream(&format!("{p}/audit/none")).await.unwrap().is_empty());
    assert_eq!(store.list_streams(&format!("{p}/audit/")).await.unwrap().len(), 2);

    // Two writers of one number: exactly one wins, the stream holds its record once.
    let w = format!("{p}/audit/race/2026-11-26");
    let (a, b) = tokio::join!(store.append(&w, 1, b"a"), store.append(&w, 1, b"b"));
    assert_eq!([&a, &b].iter().filter(|r| r.is_ok()).count(), 1, "{a:?} {b:?}");
    assert!([&a, &b].iter().all(|r| matches!(r, Ok(()) | Err(StoreError::Conflict { .. }))), "{a:?} {b:?}");
    let got = store.read_stream(&w).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], if a.is_ok() { b"a".to_vec() } else { b"b".to_vec() });

    // A batch whose first number is already taken (a writer that finished part of it): that record
    // stands, the others are written, and writing the batch again changes nothing. Numbers go in order,
    // as every caller appends (an append blob takes record n only as its nth block).
    let n = format!("{p}/audit/batch/2026-11-26");
    store.append(&n, 1, b"first writer").await.unwrap();
    let batch = [(1, b"r1".to_vec()), (2, b"r2".to_vec()), (3, b"r3".to_vec())];
    store.append_new(&n, &batch).await.unwrap();
    store.append_new(&n, &batch).await.unwrap();
    let want: Vec<Vec<u8>> = vec![b"first writer".to_vec(), b"r2".to_vec(), b"r3".to_vec()];
    assert_eq!(store.read_stream(&n).await.unwrap(), want, "a number already taken must stand");
    assert!(
        matches!(store.append(&n, 3, b"late").await, Err(StoreError::Conflict { .. })),
        "a number written by a batch must conflict"
    );
}

fn acquired(claim: Claim) -> Token {
    match claim {
        Claim::Acquired(token) => token,
        other => panic!("expected to acquire the claim, got {other:?}"),
    }
}

fn not_holder(result: StoreResult<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(StoreError::NotHolder { .. }))
}

/// Checks that claims are fenced: only the holder's token renews, completes or releases, a taken-over
/// claim's old holder can do neither, and two workers racing one [`once`] with an act slower than the
/// lease perform it once. Uses leases of about a second of real time.
pub async fn fencing_contract(store: &dyn Store) {
    let p = prefix();
    let lease = Duration::from_secs(1);

    // A non-holder can neither complete nor release, and leaves the holder's claim as it was.
    let k = format!("{p}/fence/a");
    let holder = acquired(store.claim(&k, Duration::from_secs(60)).await.unwrap());
    let stranger = Token("not-the-holder".into());
    assert!(not_holder(store.complete(&k, &stranger).await), "a stranger must not complete");
    assert!(not_holder(store.release(&k, &stranger).await), "a stranger must not release");
    assert!(not_holder(store.renew(&k, &stranger, lease).await), "a stranger must not renew");
    assert_eq!(store.claim(&k, Duration::from_secs(60)).await.unwrap(), Claim::Held, "the holder's claim stays");
    store.complete(&k, &holder).await.unwrap();
    assert_eq!(store.claim(&k, lease).await.unwrap(), Claim::Done);
    assert!(not_holder(store.renew(&k, &holder, lease).await), "a completed claim is not renewed");

    // An expired claim taken over: the old holder can no longer renew, complete or release it.
    let k = format!("{p}/fence/b");
    let old = acquired(store.claim(&k, lease).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let new = acquired(store.claim(&k, Duration::from_secs(60)).await.unwrap());
    assert!(not_holder(store.renew(&k, &old, lease).await), "the old holder must not renew");
    assert!(not_holder(store.complete(&k, &old).await), "the old holder must not complete");
    assert!(not_holder(store.release(&k, &old).await), "the old holder must not release");
    assert_eq!(store.claim(&k, lease).await.unwrap(), Claim::Held, "the new holder's claim stays");
    store.release(&k, &new).await.unwrap();
    assert!(matches!(store.claim(&k, lease).await.unwrap(), Claim::Acquired(_)), "released by its holder");

    // Renewing extends the lease past its first end; a renewed claim completes with the renewed token.
    let k = format!("{p}/fence/c");
    let mut token = acquired(store.claim(&k, lease).await.unwrap());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        token = store.renew(&k, &token, Duration::from_secs(2)).await.unwrap();
    }
    assert_eq!(store.claim(&k, lease).await.unwrap(), Claim::Held, "a renewed claim is still held");
    store.complete(&k, &token).await.unwrap();
    assert_eq!(store.claim(&k, lease).await.unwrap(), Claim::Done);

    // A claim taken with a read: the value comes only with an acquired claim, and a completion with
    // records writes them, even when the claim is no longer the caller's (it then says so).
    let (k, v) = (format!("{p}/fence/read"), format!("{p}/fence/read-value"));
    let (claim, value) = store.claim_reading(&k, Duration::from_secs(60), &v).await.unwrap();
    assert!(value.is_none(), "nothing stored yet");
    let token = acquired(claim);
    store.put(&v, b"before").await.unwrap();
    assert_eq!(store.claim_reading(&k, lease, &v).await.unwrap(), (Claim::Held, None), "held: no read");
    let puts = [(v.clone(), b"told".to_vec()), (format!("{p}/fence/read-other"), b"2".to_vec())];
    assert!(not_holder(store.complete_with(&k, &stranger, &puts[..1]).await), "a stranger must not complete");
    assert_eq!(store.claim(&k, lease).await.unwrap(), Claim::Held, "the holder's claim stays");
    assert_eq!(store.get(&v).await.unwrap().unwrap().value, b"told", "the records stand all the same");
    store.put(&v, b"before").await.unwrap();
    store.complete_with(&k, &token, &puts).await.unwrap();
    assert_eq!(store.claim_reading(&k, lease, &v).await.unwrap(), (Claim::Done, None), "done: no read");
    assert_eq!(store.get(&v).await.unwrap().unwrap().value, b"told");
    assert_eq!(store.get(&puts[1].0).await.unwrap().unwrap().value, b"2");
    let k = format!("{p}/fence/read-again");
    let (claim, value) = store.claim_reading(&k, lease, &v).await.unwrap();
    assert!(matches!(claim, Claim::Acquired(_)));
    assert_eq!(value.unwrap().value, b"told", "an acquired claim reads the value as it is");

    // Two workers race one `once` with an act three leases long: exactly one act runs and completes.
    let k = format!("{p}/fence/race");
    let acts = AtomicUsize::new(0);
    let act = || async {
        tokio::time::sleep(lease * 3).await;
        acts.fetch_add(1, Ordering::SeqCst);
        Ok::<_, ()>(())
    };
    let late = async {
        // Arrives after the first worker's first lease would have run out without renewal.
        tokio::time::sleep(lease + Duration::from_millis(600)).await;
        once(store, &k, lease, act).await.unwrap()
    };
    let (first, second, late) = tokio::join!(once(store, &k, lease, act), once(store, &k, lease, act), late);
    let mut outcomes = [first.unwrap(), second.unwrap(), late];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Once::Done(()), Once::Held, Once::Held]);
    assert_eq!(acts.load(Ordering::SeqCst), 1, "the act must run once");
    assert_eq!(store.claim(&k, lease).await.unwrap(), Claim::Done);
}

async fn futures_join(store: &dyn Store, key: &str) -> Vec<Claim> {
    let lease = Duration::from_secs(60);
    let (a, b, c, d) = tokio::join!(
        store.claim(key, lease),
        store.claim(key, lease),
        store.claim(key, lease),
        store.claim(key, lease)
    );
    vec![a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()]
}

/// Checks send / delayed send / receive / visibility / delete / dequeue count / poison.
pub async fn queue_contract(queue: &dyn Queue) {
    let q = prefix();
    let max = queue.max_dequeue();
    assert!(max >= 2, "the suite needs max_dequeue >= 2");

    queue.send(&q, b"first").await.unwrap();
    queue.send(&q, b"second").await.unwrap();
    assert_eq!(queue.len(&q).await.unwrap(), 2);

    let got = queue.receive(&q, 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 2);
    let mut bodies: Vec<_> = got.iter().map(|m| m.body.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"first".to_vec(), b"second".to_vec()]);
    assert!(got.iter().all(|m| m.dequeue_count == 1));
    // Hidden while being processed.
    assert!(queue.receive(&q, 10, Duration::from_secs(1)).await.unwrap().is_empty());

    // Delete one; the other reappears after the visibility timeout (at-least-once), counted again.
    let done = got.iter().find(|m| m.body == b"first").unwrap();
    queue.delete(&q, done).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = queue.receive(&q, 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, b"second");
    assert_eq!(again[0].dequeue_count, 2);
    // A stale receipt cannot delete.
    let stale = got.iter().find(|m| m.body == b"second").unwrap();
    assert!(queue.delete(&q, stale).await.is_err(), "a stale receipt must not delete");

    // Keep failing it: after max receives it moves to the poison queue, never lost.
    let mut count = again[0].dequeue_count;
    while count < max {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let m = queue.receive(&q, 10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(m.len(), 1);
        count = m[0].dequeue_count;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(queue.receive(&q, 10, Duration::from_secs(1)).await.unwrap().is_empty());
    let poison = queue.receive(&poison_name(&q), 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(poison.len(), 1, "the message must be in the poison queue");
    assert_eq!(poison[0].body, b"second");

    // Explicit poison: an unprocessable message is set aside at once.
    queue.send(&q, b"garbage").await.unwrap();
    let m = queue.receive(&q, 1, Duration::from_secs(30)).await.unwrap();
    queue.poison(&q, &m[0]).await.unwrap();
    assert_eq!(queue.len(&q).await.unwrap(), 0);
    assert_eq!(queue.len(&poison_name(&q)).await.unwrap(), 2);

    // A delayed message stays invisible for its delay, then arrives like any other, counted from one.
    queue.send_after(&q, b"later", Duration::from_secs(2)).await.unwrap();
    queue.send_after(&q, b"now", Duration::ZERO).await.unwrap();
    let m = queue.receive(&q, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(m.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [b"now"], "only the undelayed one is visible");
    queue.delete(&q, &m[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let m = queue.receive(&q, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(m.len(), 1, "the delayed message appears after its delay");
    assert_eq!((m[0].body.as_slice(), m[0].dequeue_count), (&b"later"[..], 1));
    queue.delete(&q, &m[0]).await.unwrap();

    // Several at once: each arrives once, as a message of its own, and an empty batch sends nothing.
    let many: Vec<Vec<u8>> = (0..5).map(|i| format!("many-{i}").into_bytes()).collect();
    queue.send_many(&q, &many).await.unwrap();
    queue.send_many(&q, &[]).await.unwrap();
    assert_eq!(queue.len(&q).await.unwrap(), 5);
    let m = queue.receive(&q, 10, Duration::from_secs(30)).await.unwrap();
    let mut got: Vec<Vec<u8>> = m.iter().map(|m| m.body.clone()).collect();
    got.sort();
    assert_eq!(got, many, "every body of the batch, once each");
    assert!(m.iter().all(|m| m.dequeue_count == 1));
    for msg in &m {
        queue.delete(&q, msg).await.unwrap();
    }

    // Binary-safe bodies up to the Azure Storage Queue limit's content size.
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    queue.send(&q, &big).await.unwrap();
    let m = queue.receive(&q, 1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(m[0].body, big);
    queue.delete(&q, &m[0]).await.unwrap();
}

/// Checks the operator's side of a queue ([`super::admin::QueueAdmin`]): look without taking, move a
/// poison message back (redrive), delete one for good, on any queue name, and the stats built on them.
pub async fn queue_admin_contract(queue: &dyn Queue, admin: &dyn super::admin::QueueAdmin) {
    use super::admin::{stats, tenant_of};
    let q = prefix();
    let dead = poison_name(&q);
    let now = chrono::Utc::now();

    for tenant in ["contoso", "contoso", "fabrikam"] {
        queue.send(&q, format!(r#"{{"kind":"poll","tenant":"{tenant}"}}"#).as_bytes()).await.unwrap();
    }
    queue.send(&q, b"not json").await.unwrap();
    if admin.peek_is_free() {
        let seen = admin.peek(&q, 100).await.unwrap();
        assert!(seen.complete);
        assert_eq!(seen.messages.len(), 4);
        assert_eq!(tenant_of(&seen.messages[0].body).as_deref(), Some("contoso"), "oldest first");
        assert_eq!(seen.messages[3].body, b"not json");
        assert!(seen.messages.iter().all(|m| m.dequeue_count == 0 && m.enqueued_at.is_some()));
        let first = admin.peek(&q, 1).await.unwrap();
        assert_eq!((first.messages.len(), first.complete), (1, false));
        let s = stats(queue, admin, &q, now + chrono::Duration::seconds(90)).await.unwrap();
        assert_eq!((s.depth, s.poison), (4, 0));
        assert_eq!(s.tenants["contoso"].depth, 2);
        assert_eq!(s.tenants["fabrikam"].depth, 1);
        assert!(s.oldest_age_secs.is_some_and(|a| a >= 80), "{s:?}");
    }

    // Peeking took nothing: every message is received, each for the first time.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(queue.receive(&q, 10, Duration::from_secs(60)).await.unwrap());
        if got.len() >= 4 {
            break;
        }
    }
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|m| m.dequeue_count == 1), "peek must not count as a receive");
    for m in &got {
        queue.poison(&q, m).await.unwrap();
    }
    assert_eq!(queue.len(&q).await.unwrap(), 0);

    // The poison queue is looked at, one message moved back, one deleted.
    let listed = admin.peek(&dead, 100).await.unwrap();
    assert_eq!(listed.messages.len(), 4, "{listed:?}");
    let s = stats(queue, admin, &q, now).await.unwrap();
    assert_eq!((s.depth, s.poison), (0, 4));
    assert_eq!(s.tenants["contoso"].poison, 2);
    let fabrikam = listed.messages.iter().find(|m| tenant_of(&m.body).as_deref() == Some("fabrikam")).unwrap();
    assert!(admin.move_message(&dead, &fabrikam.id, &q).await.unwrap());
    assert!(!admin.move_message(&dead, &fabrikam.id, &q).await.unwrap(), "moved once");
    assert_eq!(queue.len(&dead).await.unwrap(), 3);
    let back = queue.receive(&q, 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, fabrikam.body);
    assert_eq!(back[0].dequeue_count, 1, "a redriven message starts afresh");
    queue.delete(&q, &back[0]).await.unwrap();

    let garbage = listed.messages.iter().find(|m| m.body == b"not json").unwrap();
    assert!(admin.remove(&dead, &garbage.id).await.unwrap());
    assert!(!admin.remove(&dead, &garbage.id).await.unwrap(), "removed once");
    assert!(!admin.remove(&dead, "no-such-message").await.unwrap());
    let left = admin.peek(&dead, 100).await.unwrap();
    assert_eq!(left.messages.len(), 2, "{left:?}");
    assert!(left.messages.iter().all(|m| tenant_of(&m.body).as_deref() == Some("contoso")));
    for m in &left.messages {
        assert!(admin.remove(&dead, &m.id).await.unwrap());
    }
    assert_eq!(queue.len(&dead).await.unwrap(), 0);
}

/// Checks what retention needs: [`Store::scan`] lists each space by prefix in key order, in batches
/// resumed after a cursor, with the current version and a write time; [`Store::delete_if`] removes a
/// key only at the version listed (never a value or claim written since); [`Store::delete_stream`]
/// removes one stream whole and nothing else.
pub async fn retention_contract(store: &dyn Store) {
    let p = prefix();
    let before = chrono::Utc::now() - chrono::Duration::minutes(5);

    // Values: listed in order, in batches, within the prefix only.
    for i in 0..5 {
        store.put(&format!("{p}/v/k{i}"), b"x").await.unwrap();
    }
    store.put(&format!("{p}/vx"), b"outside").await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let batch = store.scan(Space::Values, &format!("{p}/v/"), after.as_deref(), 2).await.unwrap();
        assert!(batch.len() <= 2, "{batch:?}");
        let Some(last) = batch.last() else { break };
        after = Some(last.key.clone());
        seen.extend(batch);
    }
    assert_eq!(
        seen.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
        (0..5).map(|i| format!("{p}/v/k{i}")).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|l| l.written > before), "write times are recent: {seen:?}");
    assert!(store.scan(Space::Claims, &format!("{p}/v/"), None, 10).await.unwrap().is_empty(), "values are not claims");

    // A value written since the scan is not removed at its old version; at its current one it is.
    let k0 = &seen[0];
    store.put(&k0.key, b"newer").await.unwrap();
    assert!(!store.delete_if(Space::Values, &k0.key, &k0.etag).await.unwrap(), "a newer value must stay");
    assert_eq!(store.get(&k0.key).await.unwrap().unwrap().value, b"newer");
    let now = store.scan(Space::Values, &k0.key, None, 1).await.unwrap().remove(0);
    assert_eq!(now.etag, store.get(&k0.key).await.unwrap().unwrap().etag, "scan gives the version get gives");
    assert!(store.delete_if(Space::Values, &now.key, &now.etag).await.unwrap());
    assert!(store.get(&k0.key).await.unwrap().is_none());
    assert!(!store.delete_if(Space::Values, &now.key, &now.etag).await.unwrap(), "gone: nothing removed");

    // Claims: a renewed or completed claim has a new version, so a scan's version cannot remove it.
    let c = format!("{p}/c/close");
    let token = acquired(store.claim(&c, Duration::from_secs(60)).await.unwrap());
    let held = store.scan(Space::Claims, &format!("{p}/c/"), None, 10).await.unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(store.get(&c).await.unwrap().is_none(), "a claim is not a value");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = store.renew(&c, &token, Duration::from_secs(60)).await.unwrap();
    assert!(!store.delete_if(Space::Claims, &c, &held[0].etag).await.unwrap(), "a renewed claim must stay");
    assert_eq!(store.claim(&c, Duration::from_secs(60)).await.unwrap(), Claim::Held);
    store.complete(&c, &token).await.unwrap();
    let done = store.scan(Space::Claims, &format!("{p}/c/"), None, 10).await.unwrap().remove(0);
    assert!(store.delete_if(Space::Claims, &c, &done.etag).await.unwrap());
    assert!(matches!(store.claim(&c, Duration::from_secs(60)).await.unwrap(), Claim::Acquired(_)), "removed");

    // A live claim (its lease still running) is never removed, even at its current version.
    let live = format!("{p}/c/live");
    acquired(store.claim(&live, Duration::from_secs(3600)).await.unwrap());
    let listed = store.scan(Space::Claims, &live, None, 1).await.unwrap().remove(0);
    assert!(!store.delete_if(Space::Claims, &live, &listed.etag).await.unwrap(), "a live claim must stay");
    assert_eq!(store.claim(&live, Duration::from_secs(60)).await.unwrap(), Claim::Held);

    // Streams: one removed whole; its segments (other streams) stay.
    let day = format!("{p}/audit/contoso/2026-11-26");
    let segment = format!("{day}/000001");
    for seq in 1..=3 {
        store.append(&day, seq, b"old").await.unwrap();
        store.append(&segment, seq, b"new").await.unwrap();
    }
    store.delete_stream(&day).await.unwrap();
    store.delete_stream(&day).await.unwrap();
    assert!(store.read_stream(&day).await.unwrap().is_empty());
    assert_eq!(store.read_stream(&segment).await.unwrap().len(), 3);
    assert_eq!(store.list_streams(&format!("{p}/audit/")).await.unwrap(), vec![segment.clone()]);
}
