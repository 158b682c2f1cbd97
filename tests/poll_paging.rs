//! Intake that never misses and never floods, against the Graph emulator: paging while alerts change
//! between pages in every order the server may choose, `$orderby` refused, reconciliation of alerts
//! that became visible after the overlap, concurrent polls of one tenant, a doorbell storm next to a
//! quiet tenant.

#[path = "poll_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon::functions::{self, Outcome};
use secmon::host::standalone::{self, WorkResult};
use secmon::intake::http::HttpRequest;
use secmon::intake::{coalesce, health, poll};
use secmon_emulator::{Listing, OrderBy, Paging, ServerOrder};
use serde_json::{Value, json};
use support::*;

const NOW: &str = "2026-11-26T12:00:00Z";

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn alert(id: &str, ts: DateTime<Utc>) -> Value {
    json!({"id": id, "title": format!("alert {id}"), "severity": "medium", "status": "new",
           "serviceSource": "microsoftDefenderForEndpoint", "lastUpdateDateTime": stamp(ts), "createdDateTime": stamp(ts)})
}

/// Every listing a server may use: its own order, `$orderby` honoured, ignored or refused, and how it pages.
fn listings() -> Vec<Listing> {
    let mut out = Vec::new();
    for paging in [Paging::Offset, Paging::Snapshot] {
        out.push(Listing { order: ServerOrder::RecentFirst, orderby: OrderBy::Honoured, paging });
        for orderby in [OrderBy::Ignored, OrderBy::Refused] {
            for order in [ServerOrder::RecentFirst, ServerOrder::OldestFirst, ServerOrder::ById] {
                out.push(Listing { order, orderby, paging });
            }
        }
    }
    out
}

/// The latest version of each alert as the emulator holds it.
fn current(r: &Rig, tid: &str) -> BTreeSet<(String, String)> {
    r.emu.alerts(tid).iter().map(version).collect()
}

#[tokio::test]
async fn every_version_is_queued_whatever_the_order_while_alerts_change_between_pages() {
    let now = t(NOW);
    for listing in listings() {
        let r = rig(&["contoso"], 10, now, |c| c.poll.overlap = Duration::from_secs(600)).await;
        r.emu.set_listing(listing);
        let tid = tenant_id("contoso");
        // 200 alerts over the last 50 minutes, all inside the first poll's look-back.
        let seeded: Vec<Value> =
            (0..200).map(|i| alert(&format!("a-{i:03}"), now - chrono::Duration::seconds(15 * i))).collect();
        r.emu.seed_alerts(&tid, seeded.clone());
        // While secmon reads, every page served updates three alerts spread over the range and adds one:
        // under offset paging each update shifts the alerts behind it by one.
        let mut touched = BTreeSet::new();
        let batches: Vec<Vec<Value>> = (0..40)
            .map(|b| {
                let later = now + chrono::Duration::seconds(b + 1);
                let mut batch: Vec<Value> = (0..3)
                    .map(|j| {
                        let id = format!("a-{:03}", (b * 37 + j * 71) % 200);
                        touched.insert(id.clone());
                        alert(&id, later + chrono::Duration::milliseconds(j))
                    })
                    .collect();
                batch.push(alert(&format!("new-{b}"), later));
                batch
            })
            .collect();
        r.emu.change_between_pages(&tid, batches);

        let first = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
        let after_first = counts(&drain(&r).await);
        // Nothing that stood still was skipped: every alert never updated is queued by the first poll.
        for a in seeded.iter().filter(|a| !touched.contains(a["id"].as_str().unwrap())) {
            assert!(after_first.contains_key(&version(a)), "{listing:?}: skipped {:?} ({first:?})", version(a));
        }
        // The watermark never passes a version that was not listed.
        let wm: DateTime<Utc> = first.watermark_after.as_deref().unwrap().parse().unwrap();
        for (id, ts) in current(&r, &tid) {
            if !after_first.contains_key(&(id.clone(), ts.clone())) {
                let at: DateTime<Utc> = ts.parse().unwrap();
                assert!(at >= wm, "{listing:?}: watermark {wm} passed unlisted {id} at {ts}");
            }
        }
        // The next poll picks up the rest; every version then on the server is queued, each once.
        let second = poll::poll_tenant(&r.app, "contoso", now + chrono::Duration::minutes(5)).await.unwrap();
        let mut all = after_first.clone();
        for (v, n) in counts(&drain(&r).await) {
            *all.entry(v).or_insert(0) += n;
        }
        for v in current(&r, &tid) {
            assert!(all.contains_key(&v), "{listing:?}: never queued {v:?} ({first:?} {second:?})");
        }
        assert!(all.values().all(|n| *n == 1), "{listing:?}: a version queued twice");
        let asked_orderby = r.emu.requests().iter().any(|q| q.query.as_deref().is_some_and(|q| q.contains("orderby")));
        assert!(asked_orderby, "secmon asks for an order");
    }
}

#[tokio::test]
async fn a_refused_orderby_falls_back_and_is_remembered() {
    let now = t(NOW);
    let r = rig(&["contoso"], 5, now, |_| {}).await;
    r.emu.set_listing(Listing { orderby: OrderBy::Refused, ..Listing::default() });
    let tid = tenant_id("contoso");
    r.emu.seed_alerts(&tid, (0..23).map(|i| alert(&format!("r-{i}"), now - chrono::Duration::minutes(i))).collect());
    let first = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!((first.queued, first.orderby), (23, false), "{first:?}");
    let refused = r.emu.requests().iter().filter(|q| q.status == Some(400)).count();
    assert_eq!(refused, 1, "one refusal, then listing without $orderby");
    r.emu.seed_alerts(&tid, vec![alert("r-new", now + chrono::Duration::seconds(30))]);
    let before = r.emu.requests().len();
    let second = poll::poll_tenant(&r.app, "contoso", now + chrono::Duration::minutes(1)).await.unwrap();
    assert_eq!(second.queued, 1);
    let later: Vec<_> = r.emu.requests().into_iter().skip(before).collect();
    assert!(later.iter().all(|q| !q.query.as_deref().unwrap_or("").contains("orderby")), "remembered per tenant");
    assert!(later.iter().all(|q| q.status == Some(200)));
}

#[tokio::test]
async fn reconciliation_queues_an_alert_that_became_visible_after_the_overlap_and_health_counts_it() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |c| c.poll.overlap = Duration::from_secs(600)).await;
    let tid = tenant_id("contoso");
    r.emu.seed_alerts(&tid, (0..5).map(|i| alert(&format!("v-{i}"), now - chrono::Duration::minutes(i))).collect());
    let first = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(first.queued, 5);
    // Graph makes an alert queryable 40 minutes after its timestamp: past the 10-minute overlap.
    let late = alert("late", now - chrono::Duration::minutes(40));
    r.emu.seed_alerts(&tid, vec![late.clone()]);
    let later = now + chrono::Duration::minutes(5);
    assert_eq!(poll::poll_tenant(&r.app, "contoso", later).await.unwrap().queued, 0, "the overlap cannot see it");
    assert_eq!(drain(&r).await.len(), 5);

    let Outcome::Done { logs, .. } = functions::reconcile_alerts(&r.app, Default::default(), later).await else {
        panic!("reconciliation failed")
    };
    assert!(logs[0].contains("1 missing"), "{logs:?}");
    let queued = drain(&r).await;
    assert_eq!(queued.iter().map(|(_, a)| version(a)).collect::<Vec<_>>(), vec![version(&late)]);
    let status = health::status(&r.app, later).await.unwrap();
    assert_eq!((status.tenants[0].last_reconciled, status.tenants[0].reconcile_missing), (Some(later), Some(1)));
    let body: Value = serde_json::from_str(&health::details_http(&r.app, later).await.body).unwrap();
    assert_eq!(body["tenants"][0]["reconcile_missing"], 1);
    // Claims make repeats harmless, and the seen window makes them rare: a second run finds nothing.
    let again = poll::reconcile_tenant(&r.app, "contoso", later).await.unwrap();
    assert_eq!((again.queued, again.alerts_seen), (0, 6));
    assert!(drain(&r).await.is_empty());
    assert_eq!(health::status(&r.app, later).await.unwrap().tenants[0].reconcile_missing, Some(0));
}

#[tokio::test]
async fn two_concurrent_polls_of_one_tenant_queue_each_version_once() {
    let now = t(NOW);
    let r = rig(&["contoso"], 40, now, |_| {}).await;
    r.emu.set_listing(Listing { paging: Paging::Offset, ..Listing::default() });
    let tid = tenant_id("contoso");
    let seeded: Vec<Value> =
        (0..600).map(|i| alert(&format!("c-{i:03}"), now - chrono::Duration::seconds(2 * i))).collect();
    r.emu.seed_alerts(&tid, seeded.clone());
    let (a, b) = tokio::join!(poll::poll_tenant(&r.app, "contoso", now), poll::poll_tenant(&r.app, "contoso", now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.queued + b.queued, 600, "{a:?} {b:?}");
    let c = counts(&drain(&r).await);
    assert_eq!(c.len(), 600);
    assert!(c.values().all(|n| *n == 1), "each version once");
    let want: BTreeSet<_> = seeded.iter().map(version).collect();
    assert_eq!(c.keys().cloned().collect::<BTreeSet<_>>(), want);
}

#[tokio::test]
async fn a_capped_poll_stops_at_a_window_and_the_next_polls_finish_the_backlog() {
    let now = t(NOW);
    let r = rig(&["big", "small"], 100, now, |c| c.poll.max_versions_per_poll = 300).await;
    let seeded: Vec<Value> =
        (0..1000).map(|i| alert(&format!("b-{i:04}"), now - chrono::Duration::seconds(60 * i))).collect();
    r.emu.seed_alerts(&tenant_id("big"), seeded.clone());
    let first = poll::poll_tenant(&r.app, "big", now).await.unwrap();
    assert!(first.more && first.queued >= 300 && first.queued < 400, "{first:?}");
    let wm: DateTime<Utc> = first.watermark_after.as_deref().unwrap().parse().unwrap();
    let queued = counts(&drain(&r).await);
    // Everything before the watermark was listed and queued; nothing after it was.
    for a in &seeded {
        let at: DateTime<Utc> = a["lastUpdateDateTime"].as_str().unwrap().parse().unwrap();
        assert_eq!(queued.contains_key(&version(a)), at < wm, "{a}");
    }
    // Follow-ups continue until done, each capped, each version once.
    let mut all = queued;
    for _ in 0..10 {
        let r2 = poll::poll_tenant(&r.app, "big", now).await.unwrap();
        for (v, n) in counts(&drain(&r).await) {
            *all.entry(v).or_insert(0) += n;
        }
        if !r2.more {
            break;
        }
    }
    assert_eq!(all.len(), 1000);
    assert!(all.values().all(|n| *n == 1));
}

fn doorbell(secret: &str, tenant: &str, at: i64) -> HttpRequest {
    let body = serde_json::to_vec(&json!({"tenant": tenant})).unwrap();
    let mut headers = BTreeMap::new();
    headers.insert("content-type".into(), "application/json".into());
    headers.insert("x-secmon-timestamp".into(), at.to_string());
    headers.insert("x-secmon-signature".into(), secmon::intake::webhook::sign_doorbell(secret.as_bytes(), at, &body));
    HttpRequest { method: "POST".into(), query: Vec::new(), headers, body }
}

fn polls_of(results: &[WorkResult], tenant: &str) -> usize {
    results.iter().filter(|r| matches!(r, WorkResult::Done(l) if l.starts_with(&format!("polled {tenant} ")))).count()
}

#[tokio::test]
async fn six_hundred_doorbells_run_at_most_two_polls_and_another_tenant_is_polled_on_time() {
    const SECRET: &str = "doorbell-secret-0123456789";
    let now = t(NOW);
    let r = rig(&["stormy", "quiet"], 50, now, |c| c.webhook.doorbell_secret = Some(SECRET.into())).await;
    r.emu.seed_alerts(
        &tenant_id("stormy"),
        (0..20).map(|i| alert(&format!("s-{i}"), now - chrono::Duration::minutes(i))).collect(),
    );
    let base = now.timestamp() - 299;
    // The first 300 within seconds: one poll is queued, the rest coalesce into it.
    for i in 0..300 {
        let resp = functions::http(&r.app, "doorbell", doorbell(SECRET, "stormy", base + i)).await;
        assert_eq!(resp.status, 202, "{}", resp.body);
    }
    // The worker takes that poll while 300 more ring: exactly one follow-up is queued.
    use secmon::store::Queue;
    let got = r.sqlite.receive(secmon::store::ALERTS_QUEUE, 1, Duration::from_secs(300)).await.unwrap();
    assert_eq!(got.len(), 1);
    let storm = async {
        for i in 300..600 {
            let resp = functions::http(&r.app, "doorbell", doorbell(SECRET, "stormy", base + i)).await;
            assert_eq!(resp.status, 202, "{}", resp.body);
            tokio::task::yield_now().await;
        }
    };
    let (first, ()) = tokio::join!(standalone::work_one(&r.app, &got[0]), storm);
    let mut results = vec![first];

    // The quiet tenant's alert arrives; the next timer tick polls it at once, whatever the storm did.
    r.emu.seed_alerts(&tenant_id("quiet"), vec![alert("q-1", now)]);
    let tick = poll::poll_all(&r.app, now).await;
    let quiet = tick.iter().find(|o| o.tenant == "quiet").unwrap();
    assert_eq!(quiet.report.as_ref().map(|r| r.queued), Some(1), "{tick:?}");
    let stormy = tick.iter().find(|o| o.tenant == "stormy").unwrap();
    assert!(stormy.coalesced.is_some(), "the storm's follow-up is pending, so the tick coalesces: {stormy:?}");

    results.extend(standalone::drain(&r.app, 10_000).await);
    let polls = polls_of(&results, "stormy");
    assert!((1..=2).contains(&polls), "{polls} polls for 600 doorbells: {results:?}");
    let slot = coalesce::load(&r.app, "stormy").await.unwrap();
    assert!(slot.coalesced >= 598, "{slot:?}");
    let status = health::status(&r.app, now).await.unwrap();
    assert_eq!(status.tenants.iter().find(|t| t.tenant == "stormy").unwrap().polls_coalesced, slot.coalesced);
}

#[tokio::test]
async fn the_emulators_offset_paging_does_skip_under_change_when_next_links_are_followed() {
    // The mode the tests above run against is real: the old walk (one query, `$orderby` ascending,
    // follow nextLink) loses the alerts at the page boundaries when alerts change between pages.
    let now = t(NOW);
    let r = rig(&["contoso"], 10, now, |_| {}).await;
    r.emu.set_listing(Listing { paging: Paging::Offset, ..Listing::default() });
    let tid = tenant_id("contoso");
    let seeded: Vec<Value> =
        (0..100).map(|i| alert(&format!("o-{i:03}"), now - chrono::Duration::seconds(30 * (100 - i)))).collect();
    r.emu.seed_alerts(&tid, seeded.clone());
    // After each page, the oldest three alerts not yet touched are updated: they move to the end.
    let batches: Vec<Vec<Value>> = (0..9)
        .map(|b| (0..3).map(|j| alert(&format!("o-{:03}", b * 3 + j), now + chrono::Duration::seconds(b))).collect())
        .collect();
    r.emu.change_between_pages(&tid, batches);
    let query = secmon::graph::AlertQuery {
        filter: poll::filter_since(now - chrono::Duration::hours(1)),
        orderby: Some(poll::ORDERBY.into()),
        top: Some(10),
    };
    let mut page = r.app.graph.list_alerts("contoso", &query).await.unwrap();
    let mut listed = BTreeSet::new();
    loop {
        listed.extend(page.values().iter().map(|a| a["id"].as_str().unwrap().to_string()));
        let Some(next) = page.next_link.take() else { break };
        page = r.app.graph.next_alerts("contoso", &next).await.unwrap();
    }
    let never: Vec<_> = seeded.iter().filter(|a| !listed.contains(a["id"].as_str().unwrap())).collect();
    assert!(!never.is_empty(), "offset paging under change skipped nothing");
}

#[tokio::test]
async fn a_backfill_of_one_tenant_delays_another_tenants_alert_by_at_most_one_cap() {
    use secmon::intake::Message;
    use secmon::store::Queue;
    let now = t(NOW);
    let cap = 300;
    let r = rig(&["big", "small"], 100, now, |c| c.poll.max_versions_per_poll = cap).await;
    let backlog: Vec<Value> =
        (0..2000).map(|i| alert(&format!("b-{i:04}"), now - chrono::Duration::seconds(30 * i))).collect();
    r.emu.seed_alerts(&tenant_id("big"), backlog);
    r.emu.seed_alerts(&tenant_id("small"), vec![alert("urgent", now)]);
    // One timer tick polls both tenants; the big one stops at its cap and queues its follow-up.
    let Outcome::Done { .. } = functions::poll_alerts(&r.app, Default::default(), now).await else { panic!() };
    // A FIFO worker: alerts are taken off in order, poll requests run (and queue more behind).
    let (mut position, mut taken, mut big_polls) = (None, 0usize, 0);
    loop {
        let got = r.sqlite.receive(secmon::store::ALERTS_QUEUE, 1, Duration::from_secs(300)).await.unwrap();
        let Some(m) = got.into_iter().next() else { break };
        match Message::parse(&m.body).unwrap().resolve(r.sqlite.as_ref()).await.unwrap() {
            Message::Alert { tenant, alert } => {
                taken += 1;
                if tenant == "small" && alert["id"] == "urgent" {
                    position = Some(taken);
                }
                Queue::delete(r.sqlite.as_ref(), secmon::store::ALERTS_QUEUE, &m).await.unwrap();
            }
            Message::Poll { tenant, .. } => {
                assert_eq!(tenant, "big");
                big_polls += 1;
                assert!(matches!(standalone::work_one(&r.app, &m).await, WorkResult::Done(_)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let position = position.expect("the urgent alert was queued");
    assert!(position <= cap + 100 + 1, "behind {position} messages, more than one cap of the backfill");
    assert_eq!(taken, 2001, "the backfill completes: every version once");
    assert!(big_polls >= 2000 / (cap + 100), "{big_polls} follow-up polls");
}

#[tokio::test]
async fn reconciliation_does_not_count_what_an_older_seen_window_could_not_remember() {
    use secmon::store::Store;
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |c| c.poll.overlap = Duration::from_secs(600)).await;
    let tid = tenant_id("contoso");
    let seeded: Vec<Value> =
        (0..12).map(|i| alert(&format!("u-{i}"), now - chrono::Duration::minutes(10 * i))).collect();
    r.emu.seed_alerts(&tid, seeded.clone());
    poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(drain(&r).await.len(), 12);
    // What a version before reconciliation left: the overlap behind the watermark, no `since`.
    let mut old = serde_json::json!({"versions": {}});
    for a in seeded.iter().take(2) {
        let (key, at) = poll::version_key(a);
        old["versions"][key] = json!(at.unwrap());
    }
    r.sqlite.put("seen/contoso/window", old.to_string().as_bytes()).await.unwrap();
    let report = poll::reconcile_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(report.queued, 0, "only the overlap is re-listed: {report:?}");
    assert!(drain(&r).await.is_empty());
}

/// The seen window a poll left in the store.
async fn seen_window(r: &Rig, tenant: &str) -> poll::SeenWindow {
    let stored = secmon::store::Store::get(r.sqlite.as_ref(), &secmon::store::keys::seen(tenant)).await.unwrap();
    serde_json::from_slice(&stored.expect("a seen window").value).unwrap()
}

/// A rig whose tenant `contoso` holds 500 alerts seven seconds apart, listed 50 a page.
async fn five_hundred_alerts_in_pages_of_fifty() -> (Rig, Vec<Value>, DateTime<Utc>) {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    let seeded: Vec<Value> =
        (0..500).map(|i| alert(&format!("w-{i:03}"), now - chrono::Duration::seconds(7 * i))).collect();
    r.emu.seed_alerts(&tenant_id("contoso"), seeded.clone());
    (r, seeded, now)
}

#[tokio::test]
async fn a_walk_reads_the_seen_window_once_and_writes_it_once_a_page() {
    use std::sync::atomic::Ordering::SeqCst;
    let (r, seeded, now) = five_hundred_alerts_in_pages_of_fifty().await;
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(report.queued, 500, "{report:?}");
    let (reads, writes) = (r.store.hook.seen_reads.load(SeqCst), r.store.hook.seen_writes.load(SeqCst));
    // Each page that queued something wrote its claims together with the previous page's versions,
    // and the end of the walk wrote the last page's: one write a page plus one, from one read.
    assert_eq!(reads, 1, "{report:?}");
    assert!(writes <= report.windows + 1, "{writes} writes for {report:?}");
    let w = seen_window(&r, "contoso").await;
    assert_eq!(w.versions.len(), 500);
    assert!(w.queueing.is_empty(), "every claim given back: {:?}", w.queueing);
    let c = counts(&drain(&r).await);
    assert_eq!(c.keys().cloned().collect::<BTreeSet<_>>(), seeded.iter().map(version).collect());
    assert!(c.values().all(|n| *n == 1), "each version once");
}

#[tokio::test]
async fn another_polls_write_between_two_pages_is_kept_and_each_version_queued_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let (r, seeded, now) = five_hundred_alerts_in_pages_of_fifty().await;
    // Another writer changes the window just before this walk's third write, so the copy the walk
    // kept is out of date: its write must fail, and the window be read and changed again.
    r.store.hook.interlope_before_write.store(3, SeqCst);
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(report.queued, 500, "{report:?}");
    assert_eq!(r.store.hook.seen_reads.load(SeqCst), 2, "read again once, after the conflict");
    let w = seen_window(&r, "contoso").await;
    assert!(w.versions.contains_key(support::INTERLOPER), "the other writer's version was overwritten");
    assert_eq!(w.versions.len(), 501);
    assert!(w.queueing.is_empty(), "{:?}", w.queueing);
    let c = counts(&drain(&r).await);
    let want: BTreeSet<_> = seeded.iter().map(version).collect();
    assert_eq!(c.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(c.values().all(|n| *n == 1), "each version once");
}
