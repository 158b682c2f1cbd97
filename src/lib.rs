//! secmon: Microsoft 365 security alerts from Microsoft Graph (`/security/alerts_v2`), told to the right
//! people and closed when a reviewed rule proves them benign, with an audit trail.
//!
//! # Layout
//! In pipeline order:
//! - [`alert`]: the alerts_v2 model; tolerant of everything Graph may add.
//! - [`config`]: the one YAML config, validated at load with file, line and field in every error.
//! - [`graph`]: Microsoft Graph: auth, alerts, mail; one retry policy.
//! - [`intake`]: how alerts come in: `poll` (timer, windowed paging, reconciliation), `webhook`
//!   (change notifications, doorbells), `coalesce` (one pending poll per tenant), `subscriptions`, and
//!   `health` (last successful poll and reconciliation, the dead man's switch); all end as an
//!   [`intake::Message`] on the queue.
//! - [`rules`]: known-benign close rules and routes; pure evaluation.
//! - [`respond`]: one alert version through decide (on Graph's current copy before a close) → claim →
//!   act → record, ending in one delivery job per receiver on the `deliveries` queue.
//! - [`notify`]: receivers (Teams, e-mail, signed webhook), each one [`notify::Notifier`], their
//!   posting budgets ([`notify::budget`]), and the delivery of one alert version to one receiver as its
//!   own unit of work ([`notify::deliver`]: breaker, claim, realert, grouping on the queue, send; what a
//!   budget holds back goes out in one digest), and noise control ([`notify::silence`]: silences,
//!   recurring mute windows, re-notification when a silence ends, scheduled digests).
//! - [`audit`]: the hash-chained audit trail every effect is recorded in, in segments per tenant-day.
//! - [`retention`]: the `sweep` timer: what outlived its lifetime is removed, a bounded batch a run.
//! - [`replay`]: close rules judged on a tenant's history before they enforce (`secmon rules replay`,
//!   `secmon rules suggest`), and the `check-config` findings about enforce rules without that proof.
//! - [`triage`]: acting on an alert from Teams: the Bot Connector token check ([`triage::botauth`]).
//! - [`doctor`]: the preflight of a real deployment: every check with its fix (`secmon doctor`,
//!   `/api/doctor`).
//! - [`store`]: state, claims, audit streams and the queue behind one contract; SQLite, Azure
//!   (Blob + Queue) and, with feature `aws`, S3 + SQS.
//! - [`functions`]: every function as a plain async fn of `(app, payload, now)`, and the one HTTP
//!   router; what the hosts call.
//! - [`host`]: how functions are invoked: Azure custom handler, standalone, and (feature `aws`) Lambda;
//!   each only translates its envelope.
//! - [`app`], [`setup`], [`clock`], [`redact`]: the shared state and how it is built from config and
//!   environment, time as an input, and secret hygiene.
//! - [`logging`], [`metrics`]: JSON logs carrying the invocation id, counters, the poll heartbeat.
//! - [`output`]: the one shape of every command's machine output (JSON lines with a `kind`).
//! - [`queue_tools`]: the operator's queue tools (`secmon queue stats`, `secmon queue poison …`).
//! - `demo` (feature `demo`, on by default): the whole flow against the bundled Graph emulator.
//!
//! Start reading at [`functions`] (what each host calls), then [`intake::poll`], then [`respond`].
//! `docs/architecture.md` states which module may import which; `tests/layering.rs` checks it.
#![warn(missing_docs)]

pub mod alert;
pub mod app;
pub mod audit;
pub mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
pub mod functions;
pub mod graph;
pub mod host;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod queue_tools;
pub mod redact;
pub mod replay;
pub mod respond;
pub mod retention;
pub mod rules;
pub mod setup;
pub mod store;
pub mod triage;
