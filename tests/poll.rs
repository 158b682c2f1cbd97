//! Polling against the Graph emulator: paging, overlap, equal timestamps, throttling, 503 storms,
//! dropped connections, crashes before the watermark, bad pages and tokens, many tenants, health.
//! Every test uses the real client-secret credential against the emulator's token endpoint (TLS).

#[path = "poll_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon::functions::{self, Outcome, Timer};
use secmon::graph::retry::RetryPolicy;
use secmon::intake::{health, poll};
use secmon_emulator::{Fault, FaultKind};
use serde_json::{Value, json};
use support::*;

const NOW: &str = "2026-11-26T12:00:00Z";

fn alert(id: &str, ts: &str) -> Value {
    json!({"id": id, "title": format!("alert {id}"), "severity": "medium", "status": "new",
           "serviceSource": "microsoftDefenderForEndpoint", "lastUpdateDateTime": ts, "createdDateTime": ts})
}

/// `n` alerts a minute apart, the newest at `newest`.
fn alerts(prefix: &str, n: usize, newest: DateTime<Utc>) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let ts = newest - chrono::Duration::minutes(i as i64);
            alert(&format!("{prefix}-{i}"), &ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
        .collect()
}

fn versions(list: &[Value]) -> BTreeSet<(String, String)> {
    list.iter().map(version).collect()
}

#[tokio::test]
async fn ten_thousand_alerts_page_through_and_each_version_is_queued_once() {
    let now = t(NOW);
    let r = rig(&["contoso"], 100, now, |c| {
        c.poll.page_size = Some(500);
        c.poll.first_lookback = Duration::from_secs(30 * 86400);
        c.poll.max_versions_per_poll = 20_000;
    })
    .await;
    r.emu.generate_alerts(&tenant_id("contoso"), 10_000, 7, now - chrono::Duration::days(20));
    let seeded = r.emu.alerts(&tenant_id("contoso"));
    assert_eq!(seeded.len(), 10_000);

    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    // Windows that each fit in one page: with $orderby honoured, about two requests per full page
    // (the one that did not fit chooses the split, the window before it fits).
    assert!(report.pages <= 2 * 10_000 / 500 + 2, "{report:?}");
    assert_eq!(report.pages, report.requests as usize, "{report:?}");
    assert_eq!((report.alerts_seen, report.queued), (10_000, 10_000));
    let queued = drain(&r).await;
    let c = counts(&queued);
    assert_eq!(c.len(), 10_000);
    assert!(c.values().all(|n| *n == 1), "each version exactly once");
    assert_eq!(c.keys().cloned().collect::<BTreeSet<_>>(), versions(&seeded));
    let newest = seeded[0]["lastUpdateDateTime"].as_str().unwrap();
    let wm: DateTime<Utc> = report.watermark_after.as_deref().unwrap().parse().unwrap();
    assert_eq!(wm, newest.parse::<DateTime<Utc>>().unwrap(), "the watermark is the newest version");

    // The next poll re-reads only the overlap, and queues nothing again.
    let again = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(again.queued, 0);
    assert!(again.alerts_seen < 100, "{again:?}");
    assert!(drain(&r).await.is_empty());
}

#[tokio::test]
async fn alerts_updated_during_a_poll_are_queued_by_the_same_or_the_next_poll() {
    let now = t(NOW);
    let r = rig(&["contoso"], 5, now, |_| {}).await;
    let tid = tenant_id("contoso");
    let seeded = alerts("a", 30, now - chrono::Duration::minutes(30));
    r.emu.seed_alerts(&tid, seeded.clone());
    // Hold the walk's second request (the first window with an upper bound) back long enough to
    // update two alerts: the newest (a-0) and the oldest (a-29).
    r.emu.faults().push(Fault::new("+lt+", FaultKind::Delay(Duration::from_millis(700))));
    let touched = now - chrono::Duration::minutes(1);
    let emu = &r.emu;
    let tid2 = tid.clone();
    let toucher = async move {
        loop {
            if emu.requests().iter().any(|q| q.path.ends_with("/alerts_v2") && q.status == Some(200)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(emu.touch_alert(&tid2, "a-0", touched));
        assert!(emu.touch_alert(&tid2, "a-29", touched));
    };
    let (first, ()) = tokio::join!(poll::poll_tenant(&r.app, "contoso", now), toucher);
    first.unwrap();
    let second = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    let queued = drain(&r).await;
    let c = counts(&queued);
    let touched_text =
        r.emu.alert(&tenant_id("contoso"), "a-0").unwrap()["lastUpdateDateTime"].as_str().unwrap().to_string();
    // Every version Graph could have shown is queued: the originals that were never superseded, and
    // both new versions (whether an original of a-0 or a-29 was listed before its update depends on
    // where the walk was).
    let mut want = versions(&seeded);
    want.retain(|(id, _)| id != "a-29" && id != "a-0");
    want.insert(("a-0".into(), touched_text.clone()));
    want.insert(("a-29".into(), touched_text));
    let got: BTreeSet<_> = c.keys().cloned().collect();
    assert!(want.is_subset(&got), "missing {:?}", want.difference(&got).collect::<Vec<_>>());
    assert!(c.values().all(|n| *n == 1), "no repeats: {c:?}");
    assert_eq!(second.queued, 0, "the updates were listed by the poll they happened in: {second:?}");
}

#[tokio::test]
async fn late_alerts_within_the_overlap_are_caught() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |c| c.poll.overlap = Duration::from_secs(600)).await;
    let tid = tenant_id("contoso");
    r.emu.seed_alerts(&tid, alerts("a", 10, now - chrono::Duration::minutes(5)));
    let first = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(first.queued, 10);
    // Graph indexes an alert late: its lastUpdateDateTime is before the watermark, inside the overlap.
    let wm: DateTime<Utc> = first.watermark_after.unwrap().parse().unwrap();
    let late = alert("late", &(wm - chrono::Duration::minutes(7)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    r.emu.seed_alerts(&tid, vec![late.clone()]);
    let second = poll::poll_tenant(&r.app, "contoso", now + chrono::Duration::minutes(5)).await.unwrap();
    assert_eq!(second.queued, 1, "{second:?}");
    let queued = drain(&r).await;
    assert_eq!(counts(&queued).len(), 11);
    assert!(queued.iter().any(|(_, a)| a["id"] == "late"));
}

#[tokio::test]
async fn equal_timestamps_at_a_page_boundary_are_all_queued_once() {
    let now = t(NOW);
    let r = rig(&["contoso"], 3, now, |_| {}).await;
    let tid = tenant_id("contoso");
    let same = "2026-11-26T11:50:00.1234567Z";
    r.emu.seed_alerts(&tid, (0..7).map(|i| alert(&format!("s-{i}"), same)).collect());
    let first = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    // Seven in one second do not fit a page of three: that second is walked by nextLink, then
    // listed again until a pass finds nothing new.
    assert_eq!(first.queued, 7, "{first:?}");
    // Two more arrive with the very same timestamp as the watermark.
    r.emu.seed_alerts(&tid, vec![alert("s-7", same), alert("s-8", same)]);
    let second = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!((second.queued, second.already_queued), (2, second.alerts_seen - 2), "{second:?}");
    let c = counts(&drain(&r).await);
    assert_eq!(c.len(), 9);
    assert!(c.values().all(|n| *n == 1));
}

#[tokio::test]
async fn a_429_waits_exactly_as_long_as_retry_after_says() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("a", 5, now));
    r.emu.faults().push(Fault::status("/security/alerts_v2", 429, Some(7)));
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(r.sleeper.waits(), vec![Duration::from_secs(7)]);
    assert_eq!((report.throttled_waits, report.throttled_wait_ms, report.queued), (1, 7000, 5));
    let lists: Vec<_> = r.emu.requests().into_iter().filter(|q| q.path.ends_with("/alerts_v2")).collect();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].status, Some(429));
}

#[tokio::test]
async fn a_503_storm_is_ridden_out_and_a_longer_one_only_delays_the_alerts() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("a", 5, now));
    r.emu.faults().push(Fault::status("/security/alerts_v2", 503, None).times(5));
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!((report.retries, report.queued), (5, 5));
    let waits = r.sleeper.waits();
    assert_eq!(waits.len(), 5);
    assert!(waits.windows(2).all(|w| w[1] <= RetryPolicy::default().max_delay));

    // A storm longer than one poll's attempts: the poll fails, the watermark stays, the next one delivers.
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("b", 3, now + chrono::Duration::minutes(1)));
    r.emu.faults().push(Fault::status("/security/alerts_v2", 503, None).times(8));
    let before = report.watermark_after.clone();
    let e = poll::poll_tenant(&r.app, "contoso", now).await.unwrap_err();
    assert_eq!(e.retry, secmon::graph::Retry::Retryable);
    let status = health::status(&r.app, now).await.unwrap();
    assert_eq!(status.tenants[0].consecutive_failures, 1);
    let after = poll::poll_tenant(&r.app, "contoso", now + chrono::Duration::minutes(2)).await.unwrap();
    assert_eq!(after.watermark_before, before, "the failed poll did not move the watermark");
    assert_eq!(after.queued, 3);
    assert_eq!(counts(&drain(&r).await).len(), 8);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let now = t(NOW);
    let r = rig(&["contoso"], 4, now, |_| {}).await;
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("a", 10, now));
    r.emu.faults().push(Fault::new("/security/alerts_v2", FaultKind::Drop).times(2));
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!((report.queued, report.retries), (10, 2), "{report:?}");
}

#[tokio::test]
async fn a_crash_between_enqueue_and_watermark_repeats_work_and_loses_nothing() {
    let now = t(NOW);
    let r = rig(&["contoso"], 4, now, |_| {}).await;
    let seeded = alerts("a", 10, now);
    r.emu.seed_alerts(&tenant_id("contoso"), seeded.clone());
    r.store.hook.crash_on_watermark.store(true, Ordering::SeqCst);
    let e = poll::poll_tenant(&r.app, "contoso", now).await.unwrap_err();
    assert!(e.message.contains("injected crash"), "{e}");
    use secmon::store::Store;
    assert!(r.sqlite.get("watermark/contoso").await.unwrap().is_none());
    // Meanwhile one alert changes; then the process "restarts".
    r.emu.touch_alert(&tenant_id("contoso"), "a-5", now + chrono::Duration::seconds(30));
    r.store.hook.crash_on_watermark.store(false, Ordering::SeqCst);
    let report = poll::poll_tenant(&r.app, "contoso", now + chrono::Duration::minutes(1)).await.unwrap();
    assert_eq!(report.watermark_before, None, "the crashed poll left no watermark");
    let c = counts(&drain(&r).await);
    for v in versions(&seeded) {
        assert!(c.contains_key(&v), "lost {v:?}");
    }
    assert_eq!(c.len(), 11, "ten originals and a-5's update");
    assert!(c.values().all(|n| *n <= 2), "repeats are bounded: {c:?}");
}

#[tokio::test]
async fn malformed_pages_and_a_garbage_token_answer_are_retried() {
    let now = t(NOW);
    let r = rig(&["contoso"], 4, now, |_| {}).await;
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("a", 10, now));
    r.emu.faults().push(Fault::new("/oauth2/v2.0/token", FaultKind::Garbage));
    r.emu.faults().push(Fault::new("/security/alerts_v2", FaultKind::Garbage));
    r.emu.faults().push(Fault::new(
        "/security/alerts_v2",
        FaultKind::Status { status: 200, retry_after: None, body: Some(json!({"unexpected": true})) },
    ));
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!((report.queued, report.retries), (10, 3), "{report:?}");
    assert_eq!(r.emu.faults().remaining(), 0);
}

#[tokio::test]
async fn unknown_enums_and_evidence_reach_the_queue_intact() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    let odd = json!({"id": "odd", "lastUpdateDateTime": "2026-11-26T11:59:00Z", "severity": "catastrophic",
        "serviceSource": "microsoftSentinel", "detectionSource": "brandNewDetector",
        "evidence": [{"@odata.type": "#microsoft.graph.security.quantumEntanglementEvidence", "verdict": 5,
                      "remediationStatus": "active"}]});
    r.emu.seed_alerts(&tenant_id("contoso"), vec![odd.clone()]);
    let report = poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    assert_eq!(report.queued, 1);
    let queued = drain(&r).await;
    assert_eq!(queued[0].1, odd, "evolvable and unknown values arrive as Graph holds them");
    for q in r.emu.requests().iter().filter(|q| q.path.starts_with("/v1.0/")) {
        assert_eq!(q.headers.get("prefer").map(String::as_str), Some("include-unknown-enum-members"));
    }
}

#[tokio::test]
async fn one_tenants_failure_never_stops_the_others() {
    let now = t(NOW);
    let emu = emulator(50).await;
    let mut config = config_for(&emu, &["good", "badsecret", "throttled"]);
    config.tenants[1].credential.as_mut().unwrap().client_secret = Some("wrong-secret-value-xyz".into());
    let r = rig_with(emu, config, now);
    for name in ["good", "badsecret", "throttled"] {
        r.emu.seed_alerts(&tenant_id(name), alerts(name, 3, now));
    }
    // Graph asks "throttled" to wait an hour: too long for this poll, not a reason to stall "good".
    r.emu.faults().push(Fault::status("/security/alerts_v2", 429, Some(3600)).times(1));
    let outcomes = poll::poll_all(&r.app, now).await;
    let by = |n: &str| outcomes.iter().find(|o| o.tenant == n).unwrap().clone();
    let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).map(|o| o.tenant.clone()).collect();
    assert_eq!(failed.len(), 2, "{outcomes:?}");
    let bad = by("badsecret").error.unwrap();
    assert!(bad.contains("invalid_client") || bad.contains("7000215"), "{bad}");
    assert!(!bad.contains("wrong-secret-value-xyz"), "secrets never reach errors: {bad}");
    let queued = drain(&r).await;
    let tenants: BTreeSet<_> = queued.iter().map(|(t, _)| t.clone()).collect();
    assert!(tenants.len() == 1 || tenants.len() == 2, "{tenants:?}");
    assert_eq!(queued.iter().filter(|(t, _)| t != "badsecret").count() % 3, 0);
    assert!(!tenants.contains("badsecret"));
    // The next poll delivers the throttled tenant's alerts.
    let again = poll::poll_all(&r.app, now).await;
    assert!(again.iter().filter(|o| o.tenant != "badsecret").all(|o| o.error.is_none()), "{again:?}");
    let total: usize = queued.len() + drain(&r).await.len();
    assert_eq!(total, 6);
}

#[tokio::test]
async fn the_dead_mans_switch_raises_one_alert_per_stale_period() {
    let t0 = t(NOW);
    let emu = emulator(50).await;
    let mut config = config_for(&emu, &["broken"]);
    config.tenants[0].credential.as_mut().unwrap().client_secret = Some("not-the-secret-123".into());
    config.poll.stale_after = Duration::from_secs(30 * 60);
    let r = rig_with(emu, config, t0);
    let mut alarms = Vec::new();
    for minutes in [0, 10, 31, 40, 62] {
        let now = t0 + chrono::Duration::minutes(minutes);
        let o = poll::poll_all(&r.app, now).await;
        assert!(o[0].error.is_some());
        alarms.push((minutes, o[0].stale_alarm.clone()));
    }
    let raised: Vec<_> = alarms.iter().filter(|(_, a)| a.is_some()).map(|(m, _)| *m).collect();
    assert_eq!(raised, vec![31, 62], "{alarms:?}");
    let queued = drain(&r).await;
    assert_eq!(queued.len(), 2);
    let a = &queued[0].1;
    assert_eq!(a["id"], "secmon-health-broken-2026112612");
    assert_eq!(
        (a["serviceSource"].as_str(), a["severity"].as_str(), a["status"].as_str()),
        (Some("secmon"), Some("high"), Some("new"))
    );
    assert_eq!(a["lastUpdateDateTime"], "2026-11-26T12:31:00Z");
    assert!(a["description"].as_str().unwrap().contains("never polled"), "{a}");
    assert!(!a.to_string().contains("not-the-secret-123"));
    let status = health::status(&r.app, t0 + chrono::Duration::minutes(62)).await.unwrap();
    assert!(!status.healthy);
    assert_eq!(status.tenants[0].consecutive_failures, 5);
    assert_eq!(health::http(&r.app, t0).await.status, 503);
}

#[tokio::test]
async fn status_and_health_report_the_last_success() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    let before = health::status(&r.app, now).await.unwrap();
    assert!(!before.healthy, "never polled is not healthy");
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("a", 2, now));
    poll::poll_tenant(&r.app, "contoso", now).await.unwrap();
    let later = now + chrono::Duration::minutes(5);
    let s = health::status(&r.app, later).await.unwrap();
    assert!(s.healthy);
    assert_eq!(s.tenants[0].last_success, Some(now));
    assert_eq!(s.tenants[0].seconds_since_success, Some(300));
    assert_eq!(s.tenants[0].watermark, Some(now));
    let resp = health::details_http(&r.app, later).await;
    assert_eq!(resp.status, 200);
    assert_eq!(serde_json::from_str::<Value>(&resp.body).unwrap()["tenants"][0]["tenant"], "contoso");
    assert_eq!(health::http(&r.app, later).await.body, r#"{"status":"up"}"#, "anonymous: one word");
    // And it goes stale when nothing succeeds for longer than stale_after (default 30 minutes).
    assert_eq!(health::http(&r.app, now + chrono::Duration::minutes(31)).await.status, 503);
}

#[tokio::test]
async fn a_past_due_timer_still_polls() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    r.emu.seed_alerts(&tenant_id("contoso"), alerts("a", 3, now));
    let Outcome::Done { logs, value } = functions::poll_alerts(&r.app, Timer { past_due: true }, now).await else {
        panic!("the poll failed")
    };
    assert!(logs[0].contains("past due"), "{logs:?}");
    assert_eq!(value[0]["report"]["queued"], 3);
    assert_eq!(drain(&r).await.len(), 3);
}

#[tokio::test]
async fn backfill_walks_history_with_progress() {
    let now = t(NOW);
    let r = rig(&["contoso"], 10, now, |_| {}).await;
    let tid = tenant_id("contoso");
    // Three days of alerts, one an hour, older than the first poll's look-back.
    let seeded: Vec<Value> = (0..72)
        .map(|h| {
            alert(
                &format!("h-{h}"),
                &(now - chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        })
        .collect();
    r.emu.seed_alerts(&tid, seeded.clone());
    let seen = Mutex::new(Vec::new());
    let progress = |p: &poll::Progress| seen.lock().unwrap().push((p.pages, p.newest));
    let report = poll::backfill(&r.app, "contoso", now - chrono::Duration::days(4), now, &progress).await.unwrap();
    assert_eq!(report.queued, 72, "{report:?}");
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), report.windows, "one call per window listed");
    assert!(seen.windows(2).all(|w| w[1].1 >= w[0].1), "windows go oldest first: {seen:?}");
    assert_eq!(seen.last().unwrap().1, Some(now));
    assert_eq!(counts(&drain(&r).await).len(), 72);
    // A poll afterwards queues nothing again.
    assert_eq!(poll::poll_tenant(&r.app, "contoso", now).await.unwrap().queued, 0);
}

/// `backfill` is idempotent: run twice over the same history (and over what the polls queued), each
/// version is queued once, however old it is, and a version that changed since is queued again.
#[tokio::test]
async fn backfill_twice_queues_each_version_once() {
    let now = t(NOW);
    let r = rig(&["contoso"], 10, now, |_| {}).await;
    let tid = tenant_id("contoso");
    // Ten days of alerts, one every six hours: far older than the seen window remembers.
    let seeded: Vec<Value> = (0..40)
        .map(|i| {
            let at = now - chrono::Duration::hours(6 * i);
            alert(&format!("d-{i}"), &at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
        .collect();
    r.emu.seed_alerts(&tid, seeded);
    // The polls first: they queue the first look-back (a day), then the backfills go further.
    let polled = poll::poll_tenant(&r.app, "contoso", now).await.unwrap().queued;
    assert!(polled > 0 && polled < 40, "{polled}");
    let since = now - chrono::Duration::days(11);
    let first = poll::backfill(&r.app, "contoso", since, now, &|_| {}).await.unwrap();
    assert_eq!(first.queued, 40 - polled, "the polls' versions are not queued again: {first:?}");
    let later = now + chrono::Duration::hours(1);
    let second = poll::backfill(&r.app, "contoso", since, later, &|_| {}).await.unwrap();
    assert_eq!(second.queued, 0, "{second:?}");
    assert_eq!(second.already_queued, 40, "{second:?}");
    let queued = counts(&drain(&r).await);
    assert_eq!(queued.len(), 40);
    assert!(queued.values().all(|n| *n == 1), "each version once: {queued:?}");
    // An alert updated since has a new version: that one is queued.
    r.emu.seed_alerts(&tid, vec![alert("d-39", &later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]);
    let third = poll::backfill(&r.app, "contoso", since, later, &|_| {}).await.unwrap();
    assert_eq!(third.queued, 1, "{third:?}");
}

#[tokio::test]
async fn next_links_to_other_hosts_are_refused_without_sending_the_token() {
    let now = t(NOW);
    let r = rig(&["contoso"], 50, now, |_| {}).await;
    let e = r
        .app
        .graph
        .next_alerts("contoso", "https://evil.example/v1.0/security/alerts_v2?$skiptoken=x")
        .await
        .unwrap_err();
    assert_eq!(e.retry, secmon::graph::Retry::Permanent);
    assert!(r.emu.requests().is_empty());
}

#[tokio::test]
async fn a_workflows_trigger_token_is_asked_for_its_own_scope_and_cached_beside_graphs() {
    let rig = rig(&["contoso"], 100, t("2026-11-26T12:00:00Z"), |_| {}).await;
    let token_requests = || {
        rig.emu
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .collect::<Vec<_>>()
    };
    let scope = "https://service.flow.microsoft.com//.default";
    let flow = rig.app.graph.token_for("contoso", scope).await.unwrap();
    assert_eq!(rig.app.graph.token_for("contoso", scope).await.unwrap(), flow, "cached");
    let asked = token_requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].contains("scope=https%3A%2F%2Fservice.flow.microsoft.com%2F%2F.default"), "{}", asked[0]);
    // Graph's own token is another scope, asked for and cached on its own.
    let query = secmon::graph::AlertQuery {
        filter: "lastUpdateDateTime ge 2026-11-26T00:00:00Z".into(),
        orderby: None,
        top: None,
    };
    rig.app.graph.list_alerts("contoso", &query).await.unwrap();
    let asked = token_requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[1].contains("graph"), "{}", asked[1]);
    assert_eq!(rig.app.graph.token_for("contoso", scope).await.unwrap(), flow);
    assert_eq!(token_requests().len(), 2);
}
