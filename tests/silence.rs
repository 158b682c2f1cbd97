//! Noise control against the Graph emulator (over TLS, with the real Graph client and client-secret
//! credential, Teams through the emulator's Workflows trigger): a silenced alert is not sent and is
//! audited `notify_silenced`; when the silence ends an alert still open is told once and a resolved
//! one is not; route windows in another time zone (across midnight, across a DST change) mute and
//! unmute; a scheduled digest carries N alerts in one message, every alert exactly once, also when the
//! process is killed at any store operation; `check-config` locates unknown windows and warns about
//! windows that mute high-severity alerts; `silence preview` changes nothing.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::{Action, Record};
use secmon::clock::{Clock, ManualClock};
use secmon::graph::client::GraphClient;
use secmon::graph::retry::RetryPolicy;
use secmon::notify::silence::cli::{self, Filter, NewSilence};
use secmon::store::hooked::{Hook, Hooked, Op};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{Store, StoreResult};
use secmon_emulator::{Emulator, Options};
use serde_json::{Value, json};

const TENANT_ID: &str = "9a1f2b3c-4d5e-4f60-8a7b-1c2d3e4f5a6b";
const CLIENT_ID: &str = "2b7e9c1d-0f3a-4b5c-8d6e-7f8091a2b3c4";
const SECRET: &str = "silence-tests~secret";

/// Decides an alert as the `respond` function does, then works the queues until nothing is visible, as
/// the worker would: each receiver's delivery is its own job on the `deliveries` queue.
async fn process_alert(app: &App, tenant: &str, alert: Value) -> Result<String, secmon::respond::RespondError> {
    let summary = secmon::respond::process_alert(app, tenant, alert).await;
    secmon::host::standalone::drain(app, 10_000).await;
    summary
}

fn now() -> DateTime<Utc> {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The emulator and an HTTP client that trusts its CA; seeded with the documented samples.
async fn emulator() -> (Emulator, reqwest::Client) {
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    let http = common::rig::tls_client(&emu);
    (emu, http)
}

/// A config for the emulator's tenant with `tail` (routes, receivers, windows); `${TEAMS_URL}` is the
/// emulator's Workflows trigger `channel`.
fn config(emu: &Emulator, channel: &str, tail: &str) -> secmon::config::Config {
    let text = format!(
        "graph_url: {}\nauthority_url: {}\ntenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\n{tail}",
        emu.graph_url(),
        emu.authority_url()
    );
    let teams = emu.teams_webhook_url(channel);
    let env = move |k: &str| (k == "TEAMS_URL").then(|| teams.clone());
    secmon::setup::load_str(&text, Path::new("test.yaml"), &env, now()).unwrap_or_else(|e| panic!("{e}")).config
}

fn app(
    emu: &Emulator,
    http: &reqwest::Client,
    config: secmon::config::Config,
    store: Arc<dyn Store>,
    queue: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
) -> App {
    let policy = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_retry_after: Duration::ZERO,
        timeout: Duration::from_secs(10),
    };
    let _ = emu;
    let graph = GraphClient::new(&config, http.clone()).unwrap().with_policy(policy);
    App::builder(config)
        .store(store)
        .queue(queue)
        .graph(Arc::new(graph))
        .http(http.clone())
        .clock(clock)
        .build()
        .unwrap()
}

struct Harness {
    emu: Emulator,
    app: App,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
}

async fn harness(tail: &str) -> Harness {
    let (emu, http) = emulator().await;
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let app = app(&emu, &http, config(&emu, "soc", tail), store.clone(), store.clone(), clock.clone());
    Harness { emu, app, store, clock }
}

impl Harness {
    async fn audit(&self) -> Vec<Record> {
        records(self.store.as_ref()).await
    }

    /// Seeds an alert like the first sample with `id`, `title` and `severity`, and returns it.
    fn seed(&self, id: &str, title: &str, severity: &str) -> Value {
        let mut a = self.emu.alerts(TENANT_ID).remove(0);
        a["id"] = json!(id);
        a["title"] = json!(title);
        a["severity"] = json!(severity);
        a["status"] = json!("new");
        self.emu.seed_alerts(TENANT_ID, vec![a.clone()]);
        a
    }
}

async fn records(store: &dyn Store) -> Vec<Record> {
    let mut out = Vec::new();
    for stream in store.list_streams("audit/").await.unwrap() {
        for r in store.read_stream(&stream).await.unwrap() {
            out.push(serde_json::from_slice(&r).unwrap());
        }
    }
    out
}

const TEAMS_AND_MAIL: &str = "routes:\n  - { name: soc, receivers: [soc-teams, soc-email] }\nreceivers:\n  soc-teams: { teams: { webhook_url: \"${TEAMS_URL}\" } }\n  soc-email: { email: { from: secmon@contoso.com, to: [soc@contoso.com] } }\n";

fn silence(when: &str, hours: u64, receivers: &[&str]) -> NewSilence {
    NewSilence {
        when: when.to_string(),
        duration: Duration::from_secs(hours * 3600),
        starts_at: None,
        comment: "patching ex01, CHG-123".into(),
        created_by: "ana".into(),
        receivers: receivers.iter().map(|s| s.to_string()).collect(),
        tenant: None,
        active_during: Vec::new(),
    }
}

#[tokio::test]
async fn a_silenced_alert_is_not_sent_and_each_muted_delivery_is_audited() {
    let h = harness(TEAMS_AND_MAIL).await;
    let muted = h.seed("ex01-1", "Suspicious process on ex01", "medium");
    let other = h.seed("web02-1", "Suspicious process on web02", "medium");
    let (s, warnings) =
        cli::add(&h.app, silence("alert.title.contains(\"ex01\")", 2, &["soc-teams"]), now()).await.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");

    process_alert(&h.app, "contoso", muted.clone()).await.unwrap();
    process_alert(&h.app, "contoso", other.clone()).await.unwrap();
    // Teams heard only of web02; the mail receiver, which the silence does not name, of both.
    let teams = h.emu.teams_messages("soc");
    assert_eq!(teams.len(), 1);
    assert!(teams[0].to_string().contains("web02") && !teams[0].to_string().contains("ex01"));
    assert_eq!(h.emu.mails().len(), 2);

    let records = h.audit().await;
    let created: Vec<_> = records.iter().filter(|r| r.action == Action::SilenceCreated).collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].alert_id, format!("silence-{}", s.id));
    assert!(created[0].detail.contains("CHG-123") && created[0].detail.contains("ana"), "{}", created[0].detail);
    let silenced: Vec<_> = records.iter().filter(|r| r.action == Action::NotifySilenced).collect();
    assert_eq!(silenced.len(), 1, "{records:?}");
    assert_eq!((silenced[0].alert_id.as_str(), silenced[0].receiver.as_deref()), ("ex01-1", Some("soc-teams")));
    let detail: Value = serde_json::from_str(&silenced[0].detail).unwrap();
    assert_eq!(detail["silence"], json!(s.id));
    assert_eq!(detail["routes"], json!(["soc"]));
    // A redelivery is neither sent nor audited again.
    process_alert(&h.app, "contoso", muted).await.unwrap();
    assert_eq!(h.emu.teams_messages("soc").len(), 1);
    assert_eq!(h.audit().await.iter().filter(|r| r.action == Action::NotifySilenced).count(), 1);

    // query: JSON objects with a kind; expired ones only on request.
    let listed = cli::query(&h.app, Filter::Active, now()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["problems"], json!([]));
    assert_eq!((listed[0]["kind"].as_str(), listed[0]["state"].as_str()), (Some("silence"), Some("active")));
    assert!(cli::query(&h.app, Filter::Expired, now()).await.unwrap().is_empty());
    assert!(secmon::audit::verify(h.store.as_ref(), None).await.unwrap().iter().all(|r| r.ok()));
}

#[tokio::test]
async fn a_silence_is_bounded_and_checked_like_a_route() {
    let h = harness(TEAMS_AND_MAIL).await;
    let too_long = NewSilence { duration: Duration::from_secs(8 * 24 * 3600), ..silence("true", 1, &[]) };
    assert!(cli::add(&h.app, too_long, now()).await.unwrap_err().contains("max_duration"));
    let err = cli::add(&h.app, silence("alert.titel == \"x\"", 1, &[]), now()).await.unwrap_err();
    assert!(err.contains("titel"), "{err}");
    let err = cli::add(&h.app, silence("true", 1, &["nobody"]), now()).await.unwrap_err();
    assert!(err.contains("nobody"), "{err}");
    let no_comment = NewSilence { comment: " ".into(), ..silence("true", 1, &[]) };
    assert!(cli::add(&h.app, no_comment, now()).await.unwrap_err().contains("--comment"));
    // Muting every high-severity alert is allowed, with a warning.
    let (high, warnings) = cli::add(&h.app, silence("alert.severity == \"high\"", 1, &[]), now()).await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // A stored silence is checked against the config in force when it is listed.
    let listed = cli::query(&h.app, Filter::Active, now()).await.unwrap();
    assert!(listed[0]["problems"][0].as_str().unwrap().contains("high-severity"), "{listed:?}");
    let mut stale = high.clone();
    stale.receivers = vec!["gone".into()];
    stale.when = "alert.titel == 1".into();
    h.store.put(&format!("silences/{}", high.id), &serde_json::to_vec(&stale).unwrap()).await.unwrap();
    let listed = cli::query(&h.app, Filter::Active, now()).await.unwrap();
    let problems = listed[0]["problems"].to_string();
    assert!(problems.contains("mutes nothing") && problems.contains("\\\"gone\\\""), "{problems}");
    let (_, warnings) = cli::add(&h.app, silence("alert.title.contains(\"ex01\")", 1, &[]), now()).await.unwrap();
    assert!(warnings.is_empty());
    assert!(h.emu.teams_messages("soc").is_empty() && h.emu.mails().is_empty());
}

#[tokio::test]
async fn when_a_silence_ends_an_alert_still_open_is_told_once_and_a_resolved_one_not() {
    let h = harness(TEAMS_AND_MAIL).await;
    let open = h.seed("ex01-open", "Suspicious process on ex01 (open)", "high");
    let closed = h.seed("ex01-closed", "Suspicious process on ex01 (closed)", "medium");
    let (s, _) = cli::add(&h.app, silence("alert.title.contains(\"ex01\")", 2, &[]), now()).await.unwrap();
    process_alert(&h.app, "contoso", open).await.unwrap();
    process_alert(&h.app, "contoso", closed.clone()).await.unwrap();
    assert!(h.emu.teams_messages("soc").is_empty() && h.emu.mails().is_empty());
    // Someone resolves one of them in Defender while the silence holds.
    let mut resolved = closed;
    resolved["status"] = json!("resolved");
    h.emu.seed_alerts(TENANT_ID, vec![resolved]);

    // Before the end nothing happens; after it, the poll timer tells the open one once per receiver.
    let timer = secmon::functions::Timer::default();
    secmon::functions::poll_alerts(&h.app, timer, h.clock.now()).await;
    assert!(h.emu.teams_messages("soc").is_empty());
    h.clock.set(now() + chrono::Duration::hours(2));
    let outcome = secmon::functions::poll_alerts(&h.app, timer, h.clock.now()).await;
    assert!(outcome.summary().contains(&format!("silence {} ended: 2 told again", s.id)), "{}", outcome.summary());
    let teams = h.emu.teams_messages("soc");
    assert_eq!(teams.len(), 1);
    assert!(teams[0].to_string().contains("ex01 \\\\(open\\\\)"), "{}", teams[0]);
    let mails = h.emu.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].2["message"]["subject"].as_str().unwrap().contains("(open)"));
    // Graph was asked for each muted alert's current copy.
    let gets = h.emu.requests().into_iter().filter(|r| r.method == "GET" && r.path.contains("/ex01-")).count();
    assert_eq!(gets, 4, "one GET per muted alert and receiver");

    // Once: later timer runs tell nobody again.
    h.clock.set(now() + chrono::Duration::hours(3));
    secmon::functions::poll_alerts(&h.app, timer, h.clock.now()).await;
    assert_eq!(h.emu.teams_messages("soc").len(), 1);
    assert_eq!(h.emu.mails().len(), 1);

    let records = h.audit().await;
    assert_eq!(records.iter().filter(|r| r.action == Action::SilenceExpired).count(), 1);
    let renotified: Vec<_> =
        records.iter().filter(|r| r.action == Action::Notify && r.detail.contains("silence ended")).collect();
    assert_eq!(renotified.len(), 2, "{renotified:?}");
    assert!(renotified.iter().all(|r| r.alert_id == "ex01-open"));
    let suppressed: Vec<_> = records.iter().filter(|r| r.action == Action::NotifySuppressed).collect();
    assert_eq!(suppressed.len(), 2);
    assert!(suppressed.iter().all(|r| r.alert_id == "ex01-closed" && r.detail.contains("resolved")));
    let listed = cli::query(&h.app, Filter::Expired, h.clock.now()).await.unwrap();
    assert_eq!(listed[0]["settled"], json!(true));
}

#[tokio::test]
async fn expiring_a_silence_early_tells_at_once() {
    let h = harness(TEAMS_AND_MAIL).await;
    let a = h.seed("ex01-2", "Suspicious process on ex01", "low");
    let (s, _) = cli::add(&h.app, silence("alert.title.contains(\"ex01\")", 24, &["soc-teams"]), now()).await.unwrap();
    process_alert(&h.app, "contoso", a).await.unwrap();
    assert!(h.emu.teams_messages("soc").is_empty());
    h.clock.advance(chrono::Duration::minutes(30));
    let settled = cli::expire(&h.app, &s.id, "bo", h.clock.now()).await.unwrap();
    assert_eq!((settled.told, settled.settled), (1, true));
    assert_eq!(h.emu.teams_messages("soc").len(), 1);
    let listed = cli::query(&h.app, Filter::Expired, h.clock.now()).await.unwrap();
    assert_eq!(listed[0]["expired_by"], json!("bo"));
    assert!(cli::expire(&h.app, "nope", "bo", h.clock.now()).await.unwrap_err().contains("no silence"));
    // A new version after the end goes through as usual.
    let mut next = h.emu.alert(TENANT_ID, "ex01-2").unwrap();
    next["severity"] = json!("high");
    next["lastUpdateDateTime"] = json!("2026-11-26T10:45:00Z");
    process_alert(&h.app, "contoso", next).await.unwrap();
    assert_eq!(h.emu.teams_messages("soc").len(), 2);
}

/// An alert whose newer version was told after the silence ended is not told again by the expiry.
#[tokio::test]
async fn a_newer_version_told_after_the_end_is_the_news() {
    let h = harness(TEAMS_AND_MAIL).await;
    let a = h.seed("ex01-3", "Suspicious process on ex01", "low");
    cli::add(&h.app, silence("alert.title.contains(\"ex01\")", 1, &["soc-teams"]), now()).await.unwrap();
    process_alert(&h.app, "contoso", a.clone()).await.unwrap();
    h.clock.set(now() + chrono::Duration::minutes(61));
    let mut newer = a;
    newer["lastUpdateDateTime"] = json!("2026-11-26T11:01:00Z");
    h.emu.seed_alerts(TENANT_ID, vec![newer.clone()]);
    process_alert(&h.app, "contoso", newer).await.unwrap();
    assert_eq!(h.emu.teams_messages("soc").len(), 1);
    let outcome = secmon::functions::poll_alerts(&h.app, secmon::functions::Timer::default(), h.clock.now()).await;
    assert!(
        outcome.summary().contains("0 told again") && outcome.summary().contains("1 told a newer version since"),
        "{}",
        outcome.summary()
    );
    assert_eq!(h.emu.teams_messages("soc").len(), 1);
}

const WINDOWS: &str = "time_intervals:
  - name: tokyo-night
    time_intervals:
      - times: [{ start_time: \"22:00\", end_time: \"24:00\" }, { start_time: \"00:00\", end_time: \"06:00\" }]
        weekdays: [\"monday:friday\"]
        location: Asia/Tokyo
  - name: berlin-office
    time_intervals:
      - times: [{ start_time: \"09:00\", end_time: \"17:00\" }]
        weekdays: [\"monday:friday\"]
        location: Europe/Berlin
routes:
  - { name: tokyo, when: 'alert.title.startsWith(\"tokyo\")', receivers: [soc-teams], mute_during: [tokyo-night] }
  - { name: office, when: 'alert.title.startsWith(\"berlin\")', receivers: [soc-teams], active_during: [berlin-office] }
receivers:
  soc-teams: { teams: { webhook_url: \"${TEAMS_URL}\" } }
";

/// Route windows through delivery: Tokyo's night (22:00–06:00 local, across local midnight) mutes;
/// Berlin's office hours are the only hours told, and they move in UTC across the DST change.
#[tokio::test]
async fn route_windows_mute_across_midnight_and_follow_dst() {
    let h = harness(WINDOWS).await;
    let cases = [
        // (id, title, time, told)
        ("t1", "tokyo a", "2026-11-25T14:30:00Z", false), // Wed 23:30 Tokyo
        ("t2", "tokyo b", "2026-11-25T15:10:00Z", false), // Thu 00:10 Tokyo
        ("t3", "tokyo c", "2026-11-25T21:00:00Z", true),  // Thu 06:00 Tokyo: the end is exclusive
        ("t4", "tokyo d", "2026-11-27T15:30:00Z", true),  // Sat 00:30 Tokyo: the weekend is not muted
        ("b1", "berlin a", "2026-03-27T07:30:00Z", false), // Fri 08:30 CET: before office hours
        ("b2", "berlin b", "2026-03-27T08:30:00Z", true), // Fri 09:30 CET
        ("b3", "berlin c", "2026-03-30T07:30:00Z", true), // Mon 09:30 CEST: the same UTC hour is now inside
        ("b4", "berlin d", "2026-03-30T15:30:00Z", false), // Mon 17:30 CEST
    ];
    for (id, title, t, _) in cases {
        h.clock.set(at(t));
        let a = h.seed(id, title, "medium");
        process_alert(&h.app, "contoso", a).await.unwrap();
    }
    let teams: Vec<String> = h.emu.teams_messages("soc").iter().map(|m| m.to_string()).collect();
    for (id, title, t, told) in cases {
        assert_eq!(teams.iter().any(|m| m.contains(title)), told, "{id} at {t}");
    }
    let records = h.audit().await;
    let silenced: Vec<&Record> = records.iter().filter(|r| r.action == Action::NotifySilenced).collect();
    assert_eq!(silenced.len(), 4);
    let t1 = silenced.iter().find(|r| r.alert_id == "t1").unwrap();
    assert!(t1.detail.contains("inside time interval") && t1.detail.contains("tokyo-night"), "{}", t1.detail);
    let b1 = silenced.iter().find(|r| r.alert_id == "b1").unwrap();
    assert!(b1.detail.contains("outside time intervals berlin-office"), "{}", b1.detail);
}

#[test]
fn check_config_locates_unknown_windows_and_warns_about_muted_high_severity() {
    let load = |tail: &str| {
        let text = format!("tenants:\n  - {{ id: {TENANT_ID}, name: contoso }}\n{tail}");
        let env = |k: &str| (k == "TEAMS_URL").then(|| "https://example.invalid/w?sig=SIGabc0123456789".to_string());
        secmon::setup::load_str(&text, Path::new("c.yaml"), &env, now())
    };
    let err =
        load(&WINDOWS.replace("mute_during: [tokyo-night]", "mute_during: [tokio-night]")).unwrap_err().to_string();
    assert!(
        err.contains("c.yaml:15:") && err.contains("routes[0].mute_during[0]") && err.contains("\"tokio-night\""),
        "{err}"
    );
    let err = load(&WINDOWS.replace("Asia/Tokyo", "Asia/Tokio")).unwrap_err().to_string();
    assert!(err.contains("time_intervals[0].time_intervals[0].location") && err.contains("IANA"), "{err}");
    let err = load(&WINDOWS.replace("\"22:00\", end_time: \"24:00\"", "\"22:00\", end_time: \"06:00\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("two ranges"), "{err}");
    // A route for everything muted at night: nobody hears of a high-severity alert then.
    let loaded = load(&WINDOWS.replace("when: 'alert.title.startsWith(\"tokyo\")', ", "")).unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(|i| format!("{}: {}", i.path, i.message)).collect();
    assert!(w.iter().any(|w| w.starts_with("routes[0].mute_during") && w.contains("high-severity")), "{w:?}");
    assert!(!w.iter().any(|w| w.starts_with("routes[1]")), "{w:?}");
    let always = "time_intervals:\n  - { name: always, time_intervals: [{}] }\nroutes:\n  - { when: 'alert.severity == \"low\"', receivers: [t], mute_during: [always] }\nreceivers:\n  t: { teams: { webhook_url: \"${TEAMS_URL}\" } }\n";
    let loaded = load(always).unwrap();
    assert!(loaded.warnings.iter().any(|i| i.message.contains("all times")), "{:?}", loaded.warnings);
    let two = "routes:\n  - { when: 'alert.severity == \"low\"', receivers: [t], digest: { schedule: \"0 0 8 * * *\" } }\n  - { receivers: [t, h], digest: { schedule: \"0 0 9 * * *\" } }\nreceivers:\n  t: { teams: { webhook_url: \"${TEAMS_URL}\" } }\n  h: { webhook: { url: \"https://hooks.example.net/x\" } }\n";
    let err = load(two).unwrap_err().to_string();
    assert!(err.contains("routes[1].digest") && err.contains("one schedule per receiver"), "{err}");
    assert!(err.contains("digests are for Teams and e-mail"), "{err}");
    let bad_digest = "routes:\n  - { receivers: [t], digest: { schedule: \"0 8 * * *\" } }\nreceivers:\n  t: { teams: { webhook_url: \"${TEAMS_URL}\" } }\n";
    let err = load(bad_digest).unwrap_err().to_string();
    assert!(err.contains("routes[0].digest.schedule") && err.contains("six"), "{err}");
}

#[tokio::test]
async fn preview_shows_what_a_matcher_would_mute_and_changes_nothing() {
    let h = harness(TEAMS_AND_MAIL).await;
    let a = h.seed("ex01-p", "Suspicious process on ex01", "medium");
    process_alert(&h.app, "contoso", a).await.unwrap();
    let before = h.store.list("").await.unwrap();
    let mut out = Vec::new();
    let since = h.emu.now() - chrono::Duration::days(365 * 10);
    let n = cli::preview(&h.app, "alert.title.contains(\"ex01\")", None, since, now(), &mut out).await.unwrap();
    assert_eq!(n, 1);
    let lines: Vec<Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["kind"], "alert");
    assert_eq!(lines[0]["id"], "ex01-p");
    assert_eq!(lines[0]["told"], json!(["soc-teams", "soc-email"]));
    assert_eq!(lines.last().unwrap()["kind"], "summary");
    assert!(lines.last().unwrap()["checked"].as_u64().unwrap() > 1);
    assert_eq!(h.store.list("").await.unwrap(), before, "the store is unchanged");
    assert!(h.emu.patches().is_empty());
}

/// Each process reads the silences at most every `silences.cache`: a silence made by another instance
/// mutes here once the cache is older than that, and deliveries in between cost no listing.
#[tokio::test]
async fn the_silence_list_is_cached_per_process() {
    let (emu, http) = emulator().await;
    let clock = Arc::new(ManualClock::new(now()));
    let inner = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let counted = killable(inner.clone(), usize::MAX);
    let config = config(&emu, "soc", TEAMS_AND_MAIL);
    let here = app(&emu, &http, config.clone(), counted.clone(), inner.clone(), clock.clone());
    let there = app(&emu, &http, config, inner.clone(), inner.clone(), clock.clone());
    let base = emu.alerts(TENANT_ID).remove(0);
    let alert = |i: usize| {
        let mut a = base.clone();
        a["id"] = json!(format!("ex01-c{i}"));
        a["title"] = json!(format!("Suspicious process on ex01 #{i}"));
        a
    };
    for i in 0..10 {
        process_alert(&here, "contoso", alert(i)).await.unwrap();
    }
    // 10 alerts, 2 receivers each: one listing.
    assert_eq!(counted.hook.silence_lists.load(Ordering::SeqCst), 1);
    cli::add(&there, silence("alert.title.contains(\"ex01\")", 2, &[]), clock.now()).await.unwrap();
    clock.advance(chrono::Duration::seconds(10));
    process_alert(&here, "contoso", alert(10)).await.unwrap();
    assert_eq!(emu.teams_messages("soc").len(), 11, "within the cache time the new silence is not seen here");
    clock.advance(chrono::Duration::seconds(25));
    process_alert(&here, "contoso", alert(11)).await.unwrap();
    assert_eq!(emu.teams_messages("soc").len(), 11, "after it, it mutes");
    assert_eq!(counted.hook.silence_lists.load(Ordering::SeqCst), 2);
}

// ----- scheduled digests -----

const DIGEST: &str = "routes:\n  - { receivers: [digest-teams] }\nreceivers:\n  digest-teams: { teams: { webhook_url: \"${TEAMS_URL}\", digest: { schedule: \"0 0 8 * * *\", time_zone: Europe/Berlin } } }\n";

/// The first fire time after `now()`: 08:00 Berlin on 27 November is 07:00 UTC.
fn fire() -> DateTime<Utc> {
    at("2026-11-27T07:00:00Z")
}

fn digest_alerts(h_emu: &Emulator, n: usize, title_len: usize) -> Vec<Value> {
    let base = h_emu.alerts(TENANT_ID).remove(0);
    let severities = ["high", "medium", "low", "informational"];
    (0..n)
        .map(|i| {
            let mut a = base.clone();
            a["id"] = json!(format!("dg-{i:03}"));
            let pad = "x".repeat(title_len.saturating_sub(20));
            a["title"] = json!(format!("Digest alert {i:03} {pad}"));
            a["severity"] = json!(severities[i % 4]);
            a["status"] = json!("new");
            a["serviceSource"] = json!(if i % 3 == 0 { "microsoftSentinel" } else { "microsoftDefenderForEndpoint" });
            a
        })
        .collect()
}

/// How many times each alert of `alerts` appears across `messages`.
fn appearances(alerts: &[Value], messages: &[Value]) -> Vec<usize> {
    let texts: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    alerts
        .iter()
        .map(|a| {
            let needle = a["title"].as_str().unwrap().split(' ').take(3).collect::<Vec<_>>().join(" ");
            texts.iter().map(|t| t.matches(&format!("{needle} ")).count()).sum()
        })
        .collect()
}

#[tokio::test]
async fn a_scheduled_digest_carries_every_alert_once_in_as_few_messages_as_fit() {
    let h = harness(DIGEST).await;
    // 120 alerts with long titles: more than one card's 28,000 bytes.
    let alerts = digest_alerts(&h.emu, 120, 240);
    h.emu.seed_alerts(TENANT_ID, alerts.clone());
    for a in &alerts {
        process_alert(&h.app, "contoso", a.clone()).await.unwrap();
    }
    assert!(h.emu.teams_messages("soc").is_empty(), "nothing before the schedule");
    let timer = secmon::functions::Timer::default();
    h.clock.set(fire() - chrono::Duration::seconds(1));
    secmon::functions::poll_alerts(&h.app, timer, h.clock.now()).await;
    assert!(h.emu.teams_messages("soc").is_empty());
    h.clock.set(fire() + chrono::Duration::seconds(30));
    let outcome = secmon::functions::poll_alerts(&h.app, timer, h.clock.now()).await;
    assert!(
        outcome.summary().contains("scheduled digest of 2026-11-27T07:00:00Z sent: 120 alerts"),
        "{}",
        outcome.summary()
    );
    let messages = h.emu.teams_messages("soc");
    assert!(messages.len() >= 2 && messages.len() <= 3, "{} messages", messages.len());
    for m in &messages {
        assert!(serde_json::to_vec(m).unwrap().len() <= secmon::notify::teams::MAX_MESSAGE_BYTES);
    }
    assert!(appearances(&alerts, &messages).iter().all(|&n| n == 1), "{:?}", appearances(&alerts, &messages));
    let first = messages[0].to_string();
    assert!(first.contains(r"since the last digest (0 0 8 \\* \\* \\* Europe/Berlin)"), "{first}");
    assert!(first.contains("30 High"), "counts by severity: {first}");
    assert!(first.contains("Sources"), "{first}");
    keep_card("scheduled-digest-long", &h.emu.teams_messages("soc")[0]);
    // Nothing more at the next runs; audited per message and per alert.
    secmon::functions::poll_alerts(&h.app, timer, h.clock.now() + chrono::Duration::minutes(5)).await;
    assert_eq!(h.emu.teams_messages("soc").len(), messages.len());
    let records = h.audit().await;
    assert_eq!(records.iter().filter(|r| r.action == Action::NotifyDeferred).count(), 120);
    assert_eq!(records.iter().filter(|r| r.action == Action::NotifyDigest).count(), messages.len());
    assert_eq!(records.iter().filter(|r| r.action == Action::Notify).count(), 120);
}

#[tokio::test]
async fn a_small_digest_for_the_docs() {
    let h = harness(DIGEST).await;
    let mut alerts = digest_alerts(&h.emu, 6, 20);
    let titles = [
        "Suspicious PowerShell command line",
        "Anomalous sign-in from a new country",
        "Mass download by a single user",
        "Possible attempt to access Primary Refresh Token",
        "Suspicious inbox forwarding rule",
        "Unfamiliar sign-in properties",
    ];
    for (a, t) in alerts.iter_mut().zip(titles) {
        a["title"] = json!(t);
    }
    for a in &alerts {
        process_alert(&h.app, "contoso", a.clone()).await.unwrap();
    }
    h.clock.set(fire());
    secmon::notify::silence::tick(&h.app, fire()).await;
    let messages = h.emu.teams_messages("soc");
    assert_eq!(messages.len(), 1);
    let text = messages[0].to_string();
    assert!(text.contains("2 High, 2 Medium, 1 Low, 1 Informational"), "{text}");
    assert!(text.contains("4 microsoftDefenderForEndpoint, 2 microsoftSentinel"), "{text}");
    keep_card("scheduled-digest", &messages[0]);
}

/// Makes a store die: after `left` writes it answers nothing, ever (the process was killed with
/// SIGKILL right after its last write). Reads count too once it is dead.
struct Killable {
    left: AtomicUsize,
    dead: AtomicBool,
    died: tokio::sync::Notify,
    writes: AtomicUsize,
    /// Listings of the silences (`silences/`).
    silence_lists: AtomicUsize,
}

/// A store that dies after `left` writes ([`Killable`]).
fn killable(inner: Arc<SqliteStore>, left: usize) -> Arc<Hooked<Killable>> {
    let hook = Killable {
        left: AtomicUsize::new(left),
        dead: AtomicBool::new(false),
        died: tokio::sync::Notify::new(),
        writes: AtomicUsize::new(0),
        silence_lists: AtomicUsize::new(0),
    };
    Arc::new(Hooked::new(inner, hook))
}

#[async_trait]
impl Hook for Killable {
    async fn before(&self, op: &Op<'_>) -> StoreResult<()> {
        if self.dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if *op == Op::List("silences/") {
            self.silence_lists.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// After a write: dies when it was the last one allowed.
    fn after(&self, op: &Op<'_>) {
        if !op.is_write() {
            return;
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.dead.store(true, Ordering::SeqCst);
            self.died.notify_one();
        }
    }
}

/// One life of the process: every alert delivered, then the digest timer at its fire time. Returns
/// the store's write count, or `None` when the store died first (the life is cut off there).
async fn life(app: &App, killable: &Killable, alerts: &[Value], clock: &ManualClock) -> Option<usize> {
    let work = async {
        for a in alerts {
            let _ = process_alert(app, "contoso", a.clone()).await;
        }
        clock.set(clock.now().max(fire()));
        secmon::notify::silence::tick(app, clock.now()).await;
    };
    tokio::select! {
        biased;
        _ = killable.died.notified() => None,
        () = work => Some(killable.writes.load(Ordering::SeqCst)),
    }
}

/// The digest survives `kill -9` at every store write: the process dies right after write k (for
/// every k), a new one starts on the same store once the leases ran out, the queue redelivers every
/// message, and the timers run. Every alert is in exactly one message, except when the kill fell
/// between a post and the completion of its claim: then that one message is sent again, the same.
#[tokio::test]
async fn a_scheduled_digest_tells_every_alert_once_across_kill_9_at_any_write() {
    let (emu, http) = emulator().await;
    let alerts = digest_alerts(&emu, 5, 20);
    emu.seed_alerts(TENANT_ID, alerts.clone());
    let run = |channel: String, left: usize| {
        let emu = &emu;
        let http = &http;
        let alerts = &alerts;
        async move {
            let clock = Arc::new(ManualClock::new(now()));
            let inner = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
            let killable = killable(inner.clone(), left);
            let config = config(emu, &channel, DIGEST);
            let first = app(emu, http, config.clone(), killable.clone(), inner.clone(), clock.clone());
            let writes = life(&first, &killable.hook, alerts, &clock).await;
            // Restart later (every lease has run out), on the same store; the queue redelivers.
            clock.advance(chrono::Duration::minutes(10));
            let second = app(emu, http, config, inner.clone(), inner.clone(), clock.clone());
            for a in alerts {
                process_alert(&second, "contoso", a.clone()).await.unwrap();
            }
            secmon::notify::silence::tick(&second, clock.now()).await;
            // What came in after the fire time waits for the next day's digest.
            clock.set(fire() + chrono::Duration::days(1));
            secmon::notify::silence::tick(&second, clock.now()).await;
            let told: Vec<String> = records(inner.as_ref())
                .await
                .into_iter()
                .filter(|r| r.action == Action::Notify)
                .map(|r| r.alert_id)
                .collect();
            (writes, emu.teams_messages(&channel), told)
        }
    };
    let (writes, messages, _) = run("kill-none".into(), usize::MAX).await;
    let total = writes.expect("no kill");
    assert_eq!(messages.len(), 1);
    assert!(appearances(&alerts, &messages).iter().all(|&n| n == 1));
    let mut repeats = 0;
    for k in 1..=total {
        let (writes, messages, told) = run(format!("kill-{k}"), k).await;
        for a in &alerts {
            assert!(told.iter().any(|t| t == a["id"].as_str().unwrap()), "kill after write {k}: no notify record");
        }
        assert!(writes.is_none() || k == total, "the store died at write {k}");
        let seen = appearances(&alerts, &messages);
        assert!(seen.iter().all(|&n| n >= 1), "kill after write {k}: an alert was skipped: {seen:?}");
        if seen.iter().any(|&n| n > 1) {
            // Only a whole message sent again, never an alert in two different messages.
            repeats += 1;
            assert_eq!(messages.len(), 2, "kill after write {k}: {seen:?}");
            assert_eq!(messages[0], messages[1], "kill after write {k}: the repeat is the same message");
        }
    }
    println!("kill -9 after each of {total} writes: {repeats} repeated the message that was being posted");
    // The write right before the post (its budget slot) is the only point that can.
    assert!(repeats <= 1, "{repeats} kill points repeat a message");
}

/// Writes a Teams card where `scripts/check-cards.sh` validates and renders it.
fn keep_card(name: &str, message: &Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&message["attachments"][0]["content"]).unwrap(),
    )
    .unwrap();
}
