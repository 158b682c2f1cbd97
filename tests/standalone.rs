//! Standalone mode (`secmon run`): the scheduler, the worker and shutdown, against the Graph emulator.

use std::sync::Arc;
use std::time::Duration;

use secmon::config::Config;
use secmon::host::standalone;
use secmon::store::{ALERTS_QUEUE, DELIVERIES_QUEUE};
use secmon_emulator::{Fault, FaultKind};

/// Polls `f` every 50 ms until it holds or 30 s pass.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Starts the daemon without HTTP; send on the returned channel to stop it.
fn start(app: secmon::app::App) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(async move {
        standalone::run(app, None, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, daemon)
}

fn every_second(config: &Config) -> Arc<Config> {
    let mut c = config.clone();
    c.poll.schedule = "* * * * * *".into();
    Arc::new(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_polls_on_schedule_works_the_queue_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = secmon::demo::world(dir.path(), chrono::Utc::now()).await.unwrap();
    world.app.config = every_second(&world.app.config);
    let (stop, daemon) = start(world.app.clone());

    let emulator = &world.emulator;
    eventually("six Teams messages", || emulator.teams_messages(secmon::demo::TEAMS_SINK).len() >= 6).await;
    eventually("two closes", || emulator.patches().len() >= 2).await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();

    // Later polls found nothing new, so nothing was told twice.
    assert_eq!(emulator.teams_messages(secmon::demo::TEAMS_SINK).len(), 6);
    assert_eq!(emulator.patches().len(), 2);
    assert_eq!(world.app.queue.len(ALERTS_QUEUE).await.unwrap(), 0);
    assert_eq!(world.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
}

/// `run` polls every tenant as it starts: with a schedule whose first tick is a year away, the alerts
/// are still told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_polls_every_tenant_at_start_without_waiting_for_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = secmon::demo::world(dir.path(), chrono::Utc::now()).await.unwrap();
    let mut c = (*world.app.config).clone();
    c.poll.schedule = "0 0 0 1 1 *".into();
    world.app.config = Arc::new(c);
    let (stop, daemon) = start(world.app.clone());
    let emulator = &world.emulator;
    eventually("six Teams messages", || emulator.teams_messages(secmon::demo::TEAMS_SINK).len() >= 6).await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert_eq!(emulator.teams_messages(secmon::demo::TEAMS_SINK).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_a_message_is_in_hand_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = secmon::demo::world(dir.path(), chrono::Utc::now()).await.unwrap();
    // One message at a time, so that shutdown finds work not yet started.
    let mut config = (*world.app.config).clone();
    config.worker.concurrency = 1;
    world.app.config = Arc::new(config);
    let emulator = &world.emulator;
    // Queue the work first, then make every Teams post slow so shutdown lands mid-message.
    let polled = secmon::intake::poll::poll_all(&world.app, chrono::Utc::now()).await;
    assert!(polled.iter().all(|p| p.error.is_none()), "{polled:?}");
    let queued = world.app.queue.len(ALERTS_QUEUE).await.unwrap();
    assert_eq!(queued, 8);
    emulator.faults().push(Fault::new("/workflows/", FaultKind::Delay(Duration::from_millis(700))).times(100));

    let (stop, daemon) = start(world.app.clone());
    eventually("the first Teams post to start", || emulator.requests().iter().any(|r| r.path.contains("/workflows/")))
        .await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();

    // The message in hand was finished; the rest are still queued (hidden until their visibility
    // timeout), not lost: alerts not decided yet, deliveries not made yet.
    let told_before = emulator.teams_messages(secmon::demo::TEAMS_SINK).len();
    assert!(told_before >= 1, "the message in hand was finished");
    let alerts_left = world.app.queue.len(ALERTS_QUEUE).await.unwrap();
    let deliveries_left = world.app.queue.len(DELIVERIES_QUEUE).await.unwrap();
    assert!(alerts_left < queued, "some alerts were decided: {alerts_left} of {queued} left");
    assert!(alerts_left + deliveries_left > 0, "some work left for later: {alerts_left} + {deliveries_left}");

    // A restart after the visibility timeout picks up the rest: in total each alert is told once.
    emulator.faults().clear();
    let store = secmon::store::sqlite::SqliteStore::open(dir.path().join("secmon.db")).unwrap().with_clock(Arc::new(
        secmon::clock::ManualClock::new(
            chrono::Utc::now()
                + chrono::Duration::from_std(standalone::VISIBILITY).unwrap()
                + chrono::Duration::seconds(1),
        ),
    ));
    let later = world.app.with_backend(Arc::new(store));
    let results = standalone::drain(&later, 100).await;
    assert!(results.iter().all(|r| matches!(r, standalone::WorkResult::Done(_))), "{results:?}");
    assert_eq!(later.queue.len(ALERTS_QUEUE).await.unwrap(), 0);
    assert_eq!(later.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
    assert_eq!(emulator.teams_messages(secmon::demo::TEAMS_SINK).len(), 6);
    assert_eq!(emulator.patches().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_pool_works_messages_side_by_side_and_shutdown_finishes_every_one_in_hand() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = secmon::demo::world(dir.path(), chrono::Utc::now()).await.unwrap();
    let mut config = (*world.app.config).clone();
    config.worker.concurrency = 4;
    world.app.config = Arc::new(config);
    let emulator = &world.emulator;
    let polled = secmon::intake::poll::poll_all(&world.app, chrono::Utc::now()).await;
    assert!(polled.iter().all(|p| p.error.is_none()), "{polled:?}");
    // Teams hangs for two posts: with a pool, the other deliveries do not wait for them.
    emulator.faults().push(Fault::new("/workflows/", FaultKind::Hang).times(2));
    let (stop, daemon) = start(world.app.clone());
    eventually("every e-mail and four Teams posts while two posts hang", || {
        emulator.mails().len() >= 3 && emulator.teams_messages(secmon::demo::TEAMS_SINK).len() >= 4
    })
    .await;
    let hung = emulator.requests().iter().filter(|r| r.path.contains("/workflows/") && r.status.is_none()).count();
    assert_eq!(hung, 2, "two posts are still hanging while the rest went out");
    // The hung posts time out (10 s), are retried and go out; then stop: nothing in hand is cut off.
    eventually("all six Teams messages", || emulator.teams_messages(secmon::demo::TEAMS_SINK).len() >= 6).await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert_eq!(emulator.teams_messages(secmon::demo::TEAMS_SINK).len(), 6, "each alert told once");
    assert_eq!(emulator.mails().len(), 3);
    assert_eq!(world.app.queue.len(ALERTS_QUEUE).await.unwrap(), 0);
}

/// The worker fills its free slots with deliveries before new alerts (`standalone::fill`): a decided
/// alert is one step from a person, so the first alerts of a burst are told while the rest are still
/// being decided, instead of after all of them.
#[tokio::test]
async fn the_worker_takes_deliveries_before_new_alerts() {
    use secmon::functions::Function;
    let dir = tempfile::tempdir().unwrap();
    let world = secmon::demo::world(dir.path(), chrono::Utc::now()).await.unwrap();
    let app = &world.app;
    let polled = secmon::intake::poll::poll_all(app, chrono::Utc::now()).await;
    assert!(polled.iter().all(|p| p.error.is_none()), "{polled:?}");
    assert_eq!(app.queue.len(ALERTS_QUEUE).await.unwrap(), 8);

    // Nothing decided yet: the slots take alerts.
    let (first, failed) = standalone::fill(app, 4).await;
    assert!(!failed);
    assert_eq!(first.len(), 4);
    assert!(first.iter().all(|(f, _)| *f == Function::Respond));
    for (function, msg) in &first {
        let done = standalone::work(app, *function, msg).await;
        assert!(matches!(done, standalone::WorkResult::Done(_)), "{done:?}");
    }
    let deliveries = app.queue.len(DELIVERIES_QUEUE).await.unwrap();
    assert!(deliveries >= 2, "the decided alerts made delivery jobs: {deliveries}");

    // Four alerts wait and the decided ones' deliveries too: every delivery is taken first.
    let (next, failed) = standalone::fill(app, deliveries + 1).await;
    assert!(!failed);
    let kinds: Vec<Function> = next.iter().map(|(f, _)| *f).collect();
    let mut expected = vec![Function::Deliver; deliveries];
    expected.push(Function::Respond);
    assert_eq!(kinds, expected);
}
