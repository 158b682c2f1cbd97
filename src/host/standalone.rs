//! Standalone mode: one process runs the scheduler, the HTTP server and the queue worker on the
//! embedded store — the same functions the Functions host would invoke, driven from here.
//!
//! Shutdown (SIGTERM or Ctrl-C) stops the scheduler and the HTTP server, lets the message in hand
//! finish, and exits. A message is deleted only after it was processed, so one in flight when the
//! process dies reappears after its visibility timeout: work is repeated, never lost.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::app::App;
use crate::functions::{self, Outcome, Timer};
use crate::store::{ALERTS_QUEUE, Received};

/// How long a received message stays hidden while it is processed (a poll of many pages can be slow).
pub const VISIBILITY: Duration = Duration::from_secs(300);

/// How often the subscription manager runs.
pub const SUBSCRIPTIONS_EVERY: Duration = Duration::from_secs(6 * 3600);

/// What happened to one queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkResult {
    /// Processed and deleted.
    Done(String),
    /// Unprocessable: moved to the poison queue.
    Poisoned(String),
    /// Failed in a way a retry may fix: left on the queue, it reappears after the visibility timeout.
    Retry(String),
}

/// Processes one received message and settles it on the queue.
pub async fn work_one(app: &App, msg: &Received) -> WorkResult {
    match functions::respond(app, &msg.body, app.clock.now()).await {
        Outcome::Done { logs, .. } => match app.queue.delete(ALERTS_QUEUE, msg).await {
            Ok(()) => WorkResult::Done(logs.join("; ")),
            // Processed, but the delete failed: it will be redelivered, and the claims make that harmless.
            Err(e) => WorkResult::Retry(format!("processed but not deleted: {e}")),
        },
        Outcome::Poison(reason) => match app.queue.poison(ALERTS_QUEUE, msg).await {
            Ok(()) => {
                tracing::error!(message_id = %msg.id, "moved to the poison queue: {reason}");
                WorkResult::Poisoned(reason)
            }
            Err(e) => WorkResult::Retry(format!("could not poison ({reason}): {e}")),
        },
        Outcome::Retry(reason) => {
            tracing::warn!(message_id = %msg.id, dequeue_count = msg.dequeue_count, "will retry: {reason}");
            WorkResult::Retry(reason)
        }
    }
}

/// Processes messages until the queue has none visible (or `max_messages` were handled); returns
/// each result. Used by `secmon demo` and tests; the daemon uses [`worker`].
pub async fn drain(app: &App, max_messages: usize) -> Vec<WorkResult> {
    let mut results = Vec::new();
    while results.len() < max_messages {
        let batch = match app.queue.receive(ALERTS_QUEUE, 16, VISIBILITY).await {
            Ok(b) if b.is_empty() => break,
            Ok(b) => b,
            Err(e) => {
                results.push(WorkResult::Retry(format!("receive: {e}")));
                break;
            }
        };
        for msg in &batch {
            results.push(work_one(app, msg).await);
        }
    }
    results
}

/// The queue worker: receives and processes messages until `shutdown` turns true.
pub async fn worker(app: App, mut shutdown: watch::Receiver<bool>) {
    let idle = Duration::from_millis(500);
    while !*shutdown.borrow() {
        match app.queue.receive(ALERTS_QUEUE, 16, VISIBILITY).await {
            Ok(batch) if !batch.is_empty() => {
                for msg in &batch {
                    // Finish the message in hand even when shutdown was asked for meanwhile; the rest of
                    // the batch stays hidden until its visibility timeout, then comes back.
                    work_one(&app, msg).await;
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
            Ok(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!("queue receive failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// The next time `schedule` fires after `now`.
pub fn next_fire(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&now).next()
}

/// Runs the `poll-alerts` function on its schedule until shutdown.
async fn poll_scheduler(app: App, schedule: cron::Schedule, mut shutdown: watch::Receiver<bool>) {
    loop {
        let now = app.clock.now();
        let Some(next) = next_fire(&schedule, now) else { return };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let now = app.clock.now();
        let past_due = (now - next).num_seconds() > 60;
        if let Outcome::Retry(e) = functions::poll_alerts(&app, Timer { past_due }, now).await {
            tracing::error!("poll-alerts failed: {e}");
        }
    }
}

/// Runs the `graph-subscriptions` function at start and then every [`SUBSCRIPTIONS_EVERY`].
async fn subscriptions_scheduler(app: App, mut shutdown: watch::Receiver<bool>) {
    if app.config.subscriptions.is_empty() {
        return;
    }
    loop {
        if let Outcome::Retry(e) = functions::graph_subscriptions(&app, Timer::default(), app.clock.now()).await {
            tracing::error!("graph-subscriptions failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(SUBSCRIPTIONS_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the daemon until `shutdown` resolves: scheduler, HTTP server on `listen` (if any), worker.
pub async fn run(app: App, listen: Option<SocketAddr>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let schedule = cron::Schedule::from_str(&app.config.poll.schedule)
        .map_err(|e| anyhow::anyhow!("poll.schedule {:?}: {e}", app.config.poll.schedule))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            tracing::info!("listening on http://{}", listener.local_addr()?);
            let mut rx = stop_rx.clone();
            let router = functions::router(app.clone());
            Some(tokio::spawn(async move {
                let graceful = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                axum::serve(listener, router).with_graceful_shutdown(graceful).await
            }))
        }
        None => None,
    };
    let poller = tokio::spawn(poll_scheduler(app.clone(), schedule, stop_rx.clone()));
    let subscriptions = tokio::spawn(subscriptions_scheduler(app.clone(), stop_rx.clone()));
    let worker = tokio::spawn(worker(app.clone(), stop_rx));

    shutdown.await;
    tracing::info!("shutting down: finishing the message in hand");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(poller, subscriptions, worker);
    if let Some(server) = server {
        server.await??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_fires_every_five_minutes() {
        let s = cron::Schedule::from_str("0 */5 * * * *").unwrap();
        let now: DateTime<Utc> = "2026-11-26T10:02:30Z".parse().unwrap();
        assert_eq!(next_fire(&s, now).unwrap(), "2026-11-26T10:05:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
