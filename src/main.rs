//! The `secmon` command: parses the command line, builds the state, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: under load the daemon spent about a fifth of its CPU in glibc's
/// allocator, much of it waiting on its arena locks (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  secmon demo --out /tmp/secmon-demo          the whole flow on a local Graph emulator
  secmon check-config -c secmon.yaml          every problem with its file, line and field
  secmon doctor -c secmon.yaml                the real tenant, Graph and receivers checked, each fix named
  secmon rules test -c secmon.yaml alert.json what the rules and routes decide, offline
  secmon rules replay --since 30d --out rpt/  every close rule judged on the tenant's own history
  secmon rules suggest --since 30d            draft shadow rules for what analysts resolve as benign
  secmon poll --once                          one poll of every tenant, JSON summary
  secmon silence add --when EXPR --for 2h --comment TEXT   mute matching alerts, Defender untouched
  secmon run --listen 127.0.0.1:7071          the standalone daemon
  secmon work --once                          work the queue until it is empty, then exit (cron)
  secmon queue stats                          queue depth, oldest message, poison count, per tenant
  secmon queue poison list                    what could not be processed; then show, redrive, purge
  SECMON_CLOSE=off secmon run                 every close rule in shadow mode

Docs: README.md, docs/configuration.md, docs/rules.md, docs/operations.md";

/// Microsoft 365 security alerts from Graph: notify the right people, close what a reviewed rule
/// proves benign, keep an audit trail.
#[derive(Parser)]
#[command(name = "secmon", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// The YAML config file.
    #[arg(long, short, global = true, env = "SECMON_CONFIG", default_value = "secmon.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Validate the config and print every problem with its file, line and field (exit 1 on errors).
    CheckConfig,
    /// Print the JSON Schema of the config file.
    ConfigSchema,
    /// Check a deployment against the real services: environment, credentials, token claims, Graph,
    /// clock, webhook URL, receivers; one line per check with its fix (exit 1 when any failed).
    /// Read-only unless --send-test.
    Doctor {
        /// Only this tenant (by name).
        #[arg(long)]
        tenant: Option<String>,
        /// Also send one clearly marked test message to every receiver.
        #[arg(long)]
        send_test: bool,
        /// JSON lines (`{"kind":"check",...}`, then `{"kind":"summary",...}`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Known-benign close rules and routes.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Poll every tenant's alerts and print one `{"kind":"poll",...}` line per tenant.
    Poll {
        /// One poll cycle, then exit (the only mode; `secmon run` polls on the schedule).
        #[arg(long)]
        once: bool,
    },
    /// Queue every alert version updated since DATE that was not queued before, with a progress bar.
    Backfill {
        /// RFC 3339 time or a date (`2026-11-01`, midnight UTC).
        #[arg(long, value_parser = parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Print each tenant's last successful poll as one `{"kind":"status",...}` line (exit 1 when any
    /// tenant is unhealthy).
    Status,
    /// Standalone daemon: poll on the schedule, serve the webhook routes, work the queue (embedded store).
    Run {
        /// Where the HTTP routes (`/api/graph-webhook`, `/api/doorbell`, `/api/health`, ...) listen;
        /// none when absent.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// The whole flow on a local Graph emulator with sample alerts: no Azure, no credentials.
    #[cfg(feature = "demo")]
    Demo {
        /// Also write summary.json, the Teams payloads, the e-mails as HTML and the audit records here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Azure Functions custom handler: serve every function on 127.0.0.1, JSON logs on stdout.
    Serve {
        /// The port the Functions host chose.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
    },
    /// Print the functions `secmon serve` answers (`POST /<name>`), one name per line.
    Functions,
    /// Graph change-notification subscriptions (the doorbells).
    Subscriptions {
        #[command(subcommand)]
        action: SubscriptionsAction,
    },
    /// Silences: mute notifications for matching alerts without touching Defender (JSON lines out).
    #[command(subcommand, after_help = SILENCE_EXAMPLES)]
    Silence(SilenceCommand),
    /// The queues: depth, age of the oldest message and poison count (`stats`); the poison queue's
    /// messages: list, show, redrive, purge. JSON lines on stdout. Works on every store (`SECMON_STORE`).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Work the queue: with --once, process every message visible now (and what they queue), then exit
    /// with a JSON summary; exit 1 when any message failed or was poisoned. For cron, after `poll --once`.
    Work {
        /// Drain once, then exit (the only mode; `secmon run` works the queue continuously).
        #[arg(long)]
        once: bool,
    },
}

const SILENCE_EXAMPLES: &str = "\
Examples:
  secmon silence add --when 'alert.title.contains(\"ex01\")' --for 2h --comment 'patching ex01, CHG-123'
  secmon silence add --when 'alert.severity == \"low\"' --for 1d --comment 'noisy' --receiver soc-teams
  secmon silence preview --when 'alert.serviceSource == \"microsoftDefenderForCloudApps\"' --since 24h
  secmon silence query --all
  secmon silence expire 3f2a9c0d1e4b4c8e9a7d6b5c4a3f2e1d

A silence is stored (every instance sees it within silences.cache), lasts at most silences.max_duration,
and is audited (silence_created, notify_silenced per muted delivery, silence_expired). When it ends, each
alert it muted that Graph still has open is told once.";

#[derive(Subcommand, Clone)]
enum SilenceCommand {
    /// Make a silence; prints it as a JSON line (warnings on stderr).
    Add {
        /// CEL expression over the alert, as in a route's `when` (checked the same way).
        #[arg(long)]
        when: String,
        /// How long it lasts (`2h`, `30m`, `1d`), at most silences.max_duration.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (required; shown in every `notify_silenced` record).
        #[arg(long)]
        comment: String,
        /// Only mute these receivers (repeat the flag); default all.
        #[arg(long = "receiver")]
        receivers: Vec<String>,
        /// Only mute this tenant's alerts (by name); default all.
        #[arg(long)]
        tenant: Option<String>,
        /// Only mute while this time interval holds (repeat the flag): a recurring silence.
        #[arg(long = "active-during")]
        active_during: Vec<String>,
        /// Start at this RFC 3339 time instead of now.
        #[arg(long, value_parser = parse_since)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// Who makes it (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// List silences as JSON lines (`{"kind":"silence","state":"active",...}`); default --active.
    Query {
        /// Active and pending ones (the default).
        #[arg(long, conflicts_with_all = ["expired", "all"])]
        active: bool,
        /// Ended ones.
        #[arg(long, conflicts_with = "all")]
        expired: bool,
        /// All of them.
        #[arg(long)]
        all: bool,
    },
    /// End a silence now; the alerts it muted that are still open are told once. Prints a JSON line.
    Expire {
        /// The silence id (from `silence query`).
        id: String,
        /// Who ends it (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// Show which recent alerts a matcher would have muted (read-only: Graph and the audit trail).
    Preview {
        /// CEL expression over the alert.
        #[arg(long)]
        when: String,
        /// How far back (`24h`, `7d`).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Clone)]
enum QueueCommand {
    /// One `{"kind":"queue_stats",...}` line per queue: depth, oldest_age_secs, poison, per tenant.
    Stats {
        /// The queue (repeatable): `alerts`, or another secmon queue.
        #[arg(long = "queue", default_value = secmon::store::ALERTS_QUEUE)]
        queues: Vec<String>,
    },
    /// The poison queue `<queue>-poison`: messages that could not be processed.
    Poison {
        /// The queue whose poison queue to work on.
        #[arg(long, global = true, default_value = secmon::store::ALERTS_QUEUE)]
        queue: String,
        #[command(subcommand)]
        action: PoisonAction,
    },
}

#[derive(Subcommand, Clone)]
enum PoisonAction {
    /// One `{"kind":"poison_message",...}` line per message (id, age, tenant, alert id and version), oldest
    /// first, then `{"kind":"summary",...}`.
    List,
    /// One message whole, its body included.
    Show {
        /// The message id (from `list`).
        id: String,
    },
    /// Move messages back onto the queue with a fresh dequeue count (after fixing what made them fail).
    Redrive {
        /// Message ids (from `list`).
        ids: Vec<String>,
        /// Every message of the poison queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete poison messages for good; each is recorded in the audit trail first (`poison_purged`).
    Purge {
        /// Only messages on the poison queue for longer than this (`7d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Really delete (without it, nothing is deleted).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum SubscriptionsAction {
    /// Print the stored subscriptions (without their secrets), one `{"kind":"subscription",...}` line each.
    List,
    /// Create, renew, re-create and delete subscriptions so Graph matches the config; print what was done.
    Sync,
}

#[derive(Subcommand, Clone)]
enum RulesCommand {
    /// Evaluate the rules and routes against alert JSON files (an alert, an array, or a Graph list
    /// response) and print one JSON decision per alert. No network, no store.
    Test {
        /// Evaluate as of this time (RFC 3339); default now.
        #[arg(long)]
        now: Option<String>,
        /// Tenant name the alerts belong to (`tenant` in expressions); default the first in the config.
        #[arg(long)]
        tenant: Option<String>,
        /// Alert JSON files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Judge the close rules on the tenant's own alert history (read-only), analysts' verdicts as ground
    /// truth; JSON lines per rule and overlap, an HTML report with --out.
    #[command(after_help = REPLAY_HELP)]
    Replay {
        /// How far back: a duration (30d, 12h), a date (2026-11-01) or an RFC 3339 time.
        #[arg(long)]
        since: String,
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this close rule (by id).
        #[arg(long)]
        rule: Option<String>,
        /// Also write replay-{tenant}.html here: self-contained, charts inline, opens offline.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Graph requests per minute per tenant for this walk (default: half of
        /// poll.max_requests_per_minute, leaving the rest of Graph's budget to the running secmon).
        #[arg(long)]
        max_requests_per_minute: Option<u32>,
    },
    /// List what analysts most often resolved as benign, each with a draft close rule in shadow mode
    /// (YAML to paste, or JSON lines with --json).
    #[command(after_help = SUGGEST_HELP)]
    Suggest {
        /// How far back: a duration (30d, 12h), a date (2026-11-01) or an RFC 3339 time.
        #[arg(long)]
        since: String,
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Only detectors analysts resolved as benign at least this many times.
        #[arg(long, default_value_t = 3)]
        min_benign: usize,
        /// At most this many suggestions per tenant.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// JSON lines (`{"kind":"rule_suggestion",...}`) instead of YAML.
        #[arg(long)]
        json: bool,
        /// Graph requests per minute per tenant (default: half of poll.max_requests_per_minute).
        #[arg(long)]
        max_requests_per_minute: Option<u32>,
    },
}

/// `secmon rules replay` and `secmon rules suggest`: read-only walks of a tenant's alert history.
const REPLAY_HELP: &str = "\
Every close rule is evaluated on every alert created since --since, as the alert was when it arrived
(status new, no classification, assignment or comments), with the real engine and guardrails. The
analysts' classification is the ground truth: truePositive means the rule would have hidden a real attack.

Output: one JSON line per rule ({\"kind\":\"replay_rule\", \"rule\", \"would_close\", \"analyst_true_positive\",
\"analyst_benign\", \"unresolved\", \"blocked\", \"true_positive_alerts\", ...}), one per pair of rules matching
the same alerts ({\"kind\":\"replay_overlap\"}), and a {\"kind\":\"replay_summary\"} per tenant. Each rule's
result is stored (replay/{tenant}/{rule}); check-config warns about enforce rules without a clean replay.

Examples:
  secmon rules replay --since 30d
  secmon rules replay --since 2026-11-01 --tenant contoso --rule pentest-2026q4 --out report/";

const SUGGEST_HELP: &str = "\
Groups the alerts created since --since by detector (serviceSource + detectorId, or title) and lists those
analysts resolved as falsePositive / informationalExpectedActivity most often, each with a draft close rule
in shadow mode (exact matches only; set its owner, replay it, then enforce). A detector with a truePositive
gets no draft. Writes nothing.

Examples:
  secmon rules suggest --since 30d >> suggested.yaml
  secmon rules suggest --since 30d --tenant contoso --json";

#[derive(Subcommand, Clone)]
enum AuditCommand {
    /// Check every hash chain; print one JSON line per tenant-day (across its segments); exit 1 if a
    /// record was changed, removed or reordered.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Write the records since a date or time as JSON lines, in tenant, day and chain order, across
    /// every segment of each day (a year: --since 2025-12-01 --until 2026-12-01).
    Export {
        /// A day (2026-11-26) or RFC 3339 time: records at or after it.
        #[arg(long)]
        since: String,
        /// A day or RFC 3339 time: only records before it (a day: before it begins).
        #[arg(long)]
        until: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

fn main() -> ExitCode {
    #[cfg(feature = "aws")]
    if secmon::host::lambda::in_lambda(&|k| std::env::var(k).ok()) {
        return lambda();
    }
    let cli = Cli::parse();
    match cli.command.clone() {
        Command::CheckConfig => check_config(&cli.config),
        Command::Doctor { tenant, send_test, json } => {
            doctor(&cli.config, secmon::doctor::Options { tenant, send_test }, json)
        }
        Command::ConfigSchema => {
            println!("{}", serde_json::to_string_pretty(&secmon::config::Config::json_schema()).expect("schema"));
            ExitCode::SUCCESS
        }
        Command::Poll { once } => {
            if !once {
                eprintln!("secmon poll needs --once (use `secmon run` to poll on the schedule)");
                return ExitCode::from(2);
            }
            with_app(&cli.config, poll_once)
        }
        Command::Backfill { since, tenant } => with_app(&cli.config, move |app| backfill(app, since, tenant)),
        Command::Status => with_app(&cli.config, status),
        Command::Serve { port } => serve(&cli.config, port),
        Command::Functions => {
            secmon::functions::Function::ALL.iter().for_each(|f| println!("{}", f.name()));
            ExitCode::SUCCESS
        }
        #[cfg(feature = "demo")]
        Command::Demo { out } => demo(out),
        Command::Run { listen } => run(&cli.config, listen),
        Command::Subscriptions { action } => with_app(&cli.config, move |app| subscriptions(app, action)),
        Command::Queue(cmd) => queue(&cli.config, cmd),
        Command::Work { once } => {
            if !once {
                eprintln!("secmon work needs --once (use `secmon run` to work the queue continuously)");
                return ExitCode::from(2);
            }
            with_app(&cli.config, work_once)
        }
        Command::Rules(RulesCommand::Test { now, tenant, paths }) => rules_test(&cli.config, now, tenant, &paths),
        Command::Rules(RulesCommand::Replay { since, tenant, rule, out, max_requests_per_minute }) => {
            let budget = max_requests_per_minute;
            with_app_tuned(
                &cli.config,
                move |c| replay_budget(c, budget),
                move |app| rules_replay(app, since, tenant, rule, out),
            )
        }
        Command::Rules(RulesCommand::Suggest { since, tenant, min_benign, top, json, max_requests_per_minute }) => {
            let budget = max_requests_per_minute;
            with_app_tuned(
                &cli.config,
                move |c| replay_budget(c, budget),
                move |app| rules_suggest(app, since, tenant, min_benign, top, json),
            )
        }
        Command::Audit(cmd) => audit(&cli.config, cmd),
        Command::Silence(cmd) => with_app(&cli.config, move |app| silence(app, cmd)),
    }
}

async fn silence(app: secmon::app::App, cmd: SilenceCommand) -> anyhow::Result<ExitCode> {
    use secmon::notify::silence::cli;
    let now = app.clock.now();
    match cmd {
        SilenceCommand::Add { when, duration, comment, receivers, tenant, active_during, start, by } => {
            let new = cli::NewSilence {
                when,
                duration,
                starts_at: start,
                comment,
                created_by: by,
                receivers,
                tenant,
                active_during,
            };
            match cli::add(&app, new, now).await {
                Ok((s, warnings)) => {
                    warnings.iter().for_each(|w| eprintln!("warning: {w}"));
                    secmon::output::print("silence", &s);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        SilenceCommand::Query { active: _, expired, all } => {
            let filter = if all {
                cli::Filter::All
            } else if expired {
                cli::Filter::Expired
            } else {
                cli::Filter::Active
            };
            for line in cli::query(&app, filter, now).await? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::Expire { id, by } => match cli::expire(&app, &id, &by, now).await {
            Ok(settled) => {
                secmon::output::print("expired", &settled);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        },
        SilenceCommand::Preview { when, since, tenant } => {
            let since = now - chrono::Duration::from_std(since)?;
            match cli::preview(&app, &when, tenant.as_deref(), since, now, &mut std::io::stdout()).await {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

fn rules_test(file: &std::path::Path, now: Option<String>, tenant: Option<String>, paths: &[PathBuf]) -> ExitCode {
    let now = match now.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
        None => chrono::Utc::now(),
        Some(Ok(t)) => t.with_timezone(&chrono::Utc),
        Some(Err(e)) => {
            eprintln!("--now: not an RFC 3339 time: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match secmon::setup::load(file, now) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &loaded.warnings {
        eprintln!("{}", loaded.render(w));
    }
    let tenant = tenant.or_else(|| loaded.config.tenants.first().map(|t| t.name.clone())).unwrap_or_default();
    let engine = match secmon::rules::Engine::compile(&loaded.config) {
        Ok(e) => e,
        Err(issues) => {
            issues.iter().for_each(|i| eprintln!("{}", loaded.render(i)));
            return ExitCode::from(1);
        }
    };
    match secmon::rules::dry_run::run(
        &engine,
        loaded.config.closing_disabled,
        paths,
        &tenant,
        now,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn audit(file: &std::path::Path, cmd: AuditCommand) -> ExitCode {
    use secmon::respond::audit;
    let loaded = match secmon::setup::load(file, chrono::Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    // The same store the functions write to: SQLite standalone, or the one SECMON_STORE selects.
    let store = match runtime.block_on(secmon::setup::stores_from_env(&loaded.config)) {
        Ok((store, _)) => store,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout();
    let result = runtime.block_on(async {
        match cmd {
            AuditCommand::Verify { tenant } => audit::verify_command(store.as_ref(), tenant.as_deref(), &mut out).await,
            AuditCommand::Export { since, until, tenant } => {
                let bad = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
                let since = audit::parse_since(&since).map_err(bad)?;
                let until = until.as_deref().map(audit::parse_since).transpose();
                let until = until.map_err(|e| bad(e.replace("--since", "--until")))?;
                audit::export(store.as_ref(), since, until, tenant.as_deref(), &mut out).await.map(|_| true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn serve(file: &std::path::Path, port: u16) -> ExitCode {
    secmon::logging::init(secmon::logging::Format::Json);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    // Caught from the start: the host stopping us while the config loads ends the process cleanly.
    let stop = {
        let _in_runtime = runtime.enter();
        secmon::host::standalone::shutdown_signal()
    };
    let result = runtime.block_on(async {
        let loaded = secmon::setup::load(file, chrono::Utc::now())?;
        for w in &loaded.warnings {
            tracing::warn!("{}", loaded.render(w));
        }
        let app = secmon::setup::app_from_config(loaded.config).await?;
        let store = secmon::host::startup::store_label(&app);
        for line in secmon::host::startup::summary(&app, &store, chrono::Utc::now()) {
            tracing::info!("{line}");
        }
        tracing::info!("serving the Functions host's invocations on 127.0.0.1:{port}");
        secmon::host::azure::serve(app, port, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Before the host's first invocation stdout is the only place this can be seen.
            tracing::error!("secmon serve: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the config, builds the app and runs `f` on a Tokio runtime.
fn with_app<F, Fut>(file: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(secmon::app::App) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    with_app_tuned(file, |_| {}, f)
}

/// [`with_app`] with the loaded config adjusted by `tune` before the app is built.
fn with_app_tuned<F, Fut>(file: &std::path::Path, tune: impl FnOnce(&mut secmon::config::Config), f: F) -> ExitCode
where
    F: FnOnce(secmon::app::App) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => with_app_in(runtime, file, tune, f),
        Err(e) => {
            eprintln!("error: no Tokio runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// [`with_app_tuned`] on `runtime`.
fn with_app_in<F, Fut>(
    runtime: tokio::runtime::Runtime,
    file: &std::path::Path,
    tune: impl FnOnce(&mut secmon::config::Config),
    f: F,
) -> ExitCode
where
    F: FnOnce(secmon::app::App) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    // Logs go to stderr: stdout carries the command's JSON.
    let format = secmon::logging::chosen(secmon::logging::Format::Text);
    let logs = secmon::logging::subscriber(format, secmon::logging::Redacting(std::io::stderr));
    let _ = tracing::subscriber::set_global_default(logs);
    let mut loaded = match secmon::setup::load(file, chrono::Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    tune(&mut loaded.config);
    let result = runtime.block_on(async { f(secmon::setup::app_from_config(loaded.config).await?).await });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", secmon::redact::redact(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "demo")]
fn demo(out: Option<PathBuf>) -> ExitCode {
    // Quiet logs: the demo prints its own summary; problems still show.
    let logs = secmon::logging::subscriber_with_default(
        secmon::logging::chosen(secmon::logging::Format::Text),
        secmon::logging::Redacting(std::io::stderr),
        "warn",
    );
    let _ = tracing::subscriber::set_global_default(logs);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(secmon::demo::run(out.as_deref())) {
        Ok(report) => {
            print!("{}", secmon::demo::render(&report, out.as_deref()));
            if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("secmon demo failed: {}", secmon::redact::redact(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// `secmon run`: SIGTERM and Ctrl-C are caught before the config is even read, so a stop while the
/// process starts ends it cleanly once it is up (nothing half-done), never kills it mid-start.
fn run(file: &std::path::Path, listen: Option<std::net::SocketAddr>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: no Tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = {
        let _in_runtime = runtime.enter();
        secmon::host::standalone::shutdown_signal()
    };
    with_app_in(
        runtime,
        file,
        |_| {},
        move |app| async move {
            secmon::host::standalone::run(app, listen, stop).await?;
            Ok(ExitCode::SUCCESS)
        },
    )
}

/// AWS Lambda: the runtime chooses the function through `_HANDLER` (set from the SAM template).
#[cfg(feature = "aws")]
fn lambda() -> ExitCode {
    use secmon::host::lambda;
    secmon::logging::init(secmon::logging::Format::Json);
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    let function = match lambda::Function::from_handler(&handler) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let http = secmon::setup::http_client().map_err(|e| e.to_string())?;
        let app = lambda::app_from_env(|config| {
            secmon::graph::client::GraphClient::new(config, http)
                .map(|g| std::sync::Arc::new(g) as std::sync::Arc<dyn secmon::graph::Graph>)
        })
        .await?;
        lambda::run(app, function, secmon::host::standalone::shutdown_signal()).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("secmon on Lambda: {}", secmon::redact::redact(&e));
            ExitCode::from(1)
        }
    }
}

async fn subscriptions(app: secmon::app::App, action: SubscriptionsAction) -> anyhow::Result<ExitCode> {
    let now = app.clock.now();
    match action {
        SubscriptionsAction::List => {
            let list = secmon::intake::subscriptions::list(&app, now).await?;
            for subscription in list.as_array().into_iter().flatten() {
                secmon::output::print("subscription", &subscription);
            }
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionsAction::Sync => {
            let report = secmon::intake::subscriptions::sync(&app, now).await;
            secmon::output::print("subscriptions_sync", &report);
            eprintln!("subscriptions: {}", report.summary());
            Ok(if report.has_failures() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

async fn poll_once(app: secmon::app::App) -> anyhow::Result<ExitCode> {
    let outcomes = secmon::intake::poll::poll_all(&app, app.clock.now()).await;
    for o in &outcomes {
        secmon::output::print("poll", o);
    }
    Ok(if outcomes.iter().any(|o| o.error.is_some()) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn backfill(
    app: secmon::app::App,
    since: chrono::DateTime<chrono::Utc>,
    only: Option<String>,
) -> anyhow::Result<ExitCode> {
    let now = app.clock.now();
    let tenants: Vec<String> = match only {
        Some(t) if app.config.tenant(&t).is_none() => anyhow::bail!("no tenant named {t:?} in the config"),
        Some(t) => vec![t],
        None => app.config.tenants.iter().map(|t| t.name.clone()).collect(),
    };
    let mut failed = false;
    for tenant in tenants {
        // Windows are listed oldest first, so the newest time listed so far measures the way from `since`.
        let total = (now - since).num_seconds().max(1) as u64;
        let bar = indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {percent}% {msg}")?.progress_chars("=> "),
        );
        bar.set_prefix(tenant.clone());
        let progress = |p: &secmon::intake::poll::Progress| {
            if let Some(newest) = p.newest {
                bar.set_position(((newest - since).num_seconds().max(0) as u64).min(total));
            }
            bar.set_message(format!("{} pages, {} alerts, {} queued", p.pages, p.alerts_seen, p.queued));
        };
        let result = secmon::intake::poll::backfill(&app, &tenant, since, now, &progress).await;
        bar.finish();
        match result {
            Ok(report) => secmon::output::print("backfill", &report),
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn status(app: secmon::app::App) -> anyhow::Result<ExitCode> {
    let s = secmon::intake::health::status(&app, app.clock.now()).await?;
    secmon::output::print("status", &s);
    Ok(if s.healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn doctor(file: &std::path::Path, options: secmon::doctor::Options, json: bool) -> ExitCode {
    use secmon::doctor::{self, Check};
    let logs = secmon::logging::subscriber_with_default(
        secmon::logging::Format::Text,
        secmon::logging::Redacting(std::io::stderr),
        "error",
    );
    let _ = tracing::subscriber::set_global_default(logs);
    let env: secmon::graph::auth::Env = std::sync::Arc::new(|k: &str| std::env::var(k).ok());
    let mut checks = match std::fs::read_to_string(file) {
        Ok(text) => doctor::variables(&text, &*env),
        Err(e) => vec![Check::failure("config", format!("cannot read {}: {e}", file.display()), "pass -c FILE")],
    };
    let loaded = secmon::setup::load(file, chrono::Utc::now());
    checks.extend(doctor::loaded(&loaded));
    if let Ok(loaded) = loaded {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(async {
            match secmon::setup::app_from_config(loaded.config).await {
                Ok(app) => checks.extend(doctor::run(&app, env, &options).await),
                Err(e) => checks.push(Check::failure("setup", e.to_string(), "fix the store settings it names")),
            }
        });
    }
    print!("{}", doctor::render(&checks, json));
    if doctor::failed(&checks) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match secmon::setup::load(file, chrono::Utc::now()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}", loaded.render(w));
            }
            let replay = replay_findings(&loaded.config);
            for issue in &replay {
                eprintln!("{}", loaded.render(issue));
            }
            if replay.iter().any(|i| i.level == secmon::config::Level::Error) {
                return ExitCode::from(1);
            }
            println!(
                "{}: ok ({} tenants, {} close rules, {} routes, {} receivers)",
                file.display(),
                loaded.config.tenants.len(),
                loaded.config.close_rules.len(),
                loaded.config.routes.len(),
                loaded.config.receivers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The replay budget: `--max-requests-per-minute`, else half of `poll.max_requests_per_minute`, so a
/// replay next to a running secmon leaves it the rest of Graph's per-tenant budget.
fn replay_budget(config: &mut secmon::config::Config, per_minute: Option<u32>) {
    config.poll.max_requests_per_minute = per_minute.unwrap_or(config.poll.max_requests_per_minute / 2).max(1);
}

/// The tenants a replay or suggestion run covers.
fn replay_tenants(app: &secmon::app::App, only: Option<String>) -> anyhow::Result<Vec<String>> {
    match only {
        Some(t) if app.config.tenant(&t).is_none() => anyhow::bail!("no tenant named {t:?} in the config"),
        Some(t) => Ok(vec![t]),
        None => Ok(app.config.tenants.iter().map(|t| t.name.clone()).collect()),
    }
}

/// A progress bar over a history walk's days, drawn on stderr only when it is a terminal.
fn history_bar(tenant: &str) -> anyhow::Result<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} days {msg}")?
                .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_prefix(tenant.to_string());
    Ok(bar)
}

async fn rules_replay(
    app: secmon::app::App,
    since: String,
    tenant: Option<String>,
    rule: Option<String>,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let until = app.clock.now();
    let since = secmon::replay::parse_since(&since, until).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--out {}: {e}", dir.display()))?;
    }
    let mut failed = false;
    for tenant in replay_tenants(&app, tenant)? {
        let bar = history_bar(&tenant)?;
        let progress = |p: &secmon::intake::history::Progress| {
            bar.set_length(p.days as u64);
            bar.set_position(p.days_done as u64);
            bar.set_message(format!("{} pages, {} alerts", p.pages, p.alerts));
        };
        let result = secmon::replay::replay_tenant(&app, &tenant, rule.as_deref(), since, until, &progress).await;
        bar.finish_and_clear();
        let replayed = match result {
            Ok(r) => r,
            Err(e) => {
                failed = true;
                eprintln!("{}", secmon::redact::redact(&e.to_string()));
                continue;
            }
        };
        let report = &replayed.report;
        for r in &report.rules {
            println!("{}", serde_json::to_string(r)?);
        }
        for o in &report.overlaps {
            println!("{}", serde_json::to_string(o)?);
        }
        let mut summary = serde_json::to_value(report)?;
        summary["graph"] = serde_json::to_value(&replayed.walked)?;
        println!("{summary}");
        if let Some(dir) = &out {
            let file = dir.join(format!("replay-{tenant}.html"));
            std::fs::write(&file, secmon::rules::report::render(report))
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            eprintln!("report: {}", file.display());
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn rules_suggest(
    app: secmon::app::App,
    since: String,
    tenant: Option<String>,
    min_benign: usize,
    top: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let until = app.clock.now();
    let since = secmon::replay::parse_since(&since, until).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let mut failed = false;
    for tenant in replay_tenants(&app, tenant)? {
        let bar = history_bar(&tenant)?;
        let progress = |p: &secmon::intake::history::Progress| {
            bar.set_length(p.days as u64);
            bar.set_position(p.days_done as u64);
            bar.set_message(format!("{} pages, {} alerts", p.pages, p.alerts));
        };
        let result = secmon::replay::suggest_tenant(&app, &tenant, since, until, min_benign, top, &progress).await;
        bar.finish_and_clear();
        let suggestions = match result {
            Ok((s, _)) => s,
            Err(e) => {
                failed = true;
                eprintln!("{}", secmon::redact::redact(&e.to_string()));
                continue;
            }
        };
        if json {
            for s in &suggestions {
                println!("{}", serde_json::to_string(s)?);
            }
            continue;
        }
        print!("{}", secmon::rules::suggest::render_yaml(&tenant, since, until, &suggestions));
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `check-config`'s findings about enforce rules without a supporting replay, read from the store the
/// functions use. A standalone SQLite file that does not exist yet holds no replay (and is not created).
fn replay_findings(config: &secmon::config::Config) -> Vec<secmon::config::Issue> {
    if !config.close_rules.iter().any(|r| r.mode == secmon::rules::Mode::Enforce) {
        return Vec::new();
    }
    let sqlite = !matches!(std::env::var("SECMON_STORE").ok().as_deref().map(str::trim), Some("azure"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    runtime.block_on(async {
        if sqlite && !config.store.sqlite.exists() {
            let empty = secmon::store::sqlite::SqliteStore::in_memory().expect("an in-memory store");
            return secmon::replay::enforcement_issues(config, &empty).await;
        }
        match secmon::setup::stores_from_env(config).await {
            Ok((store, _)) => secmon::replay::enforcement_issues(config, store.as_ref()).await,
            Err(e) => {
                let empty = secmon::store::sqlite::SqliteStore::in_memory().expect("an in-memory store");
                let mut issues = vec![secmon::config::Issue::warning(
                    "store",
                    format!("cannot read the stored replays ({e}); every enforce rule counts as never replayed"),
                )];
                issues.extend(secmon::replay::enforcement_issues(config, &empty).await);
                issues
            }
        }
    })
}

/// `secmon work --once`: the standalone worker's drain, once.
async fn work_once(app: secmon::app::App) -> anyhow::Result<ExitCode> {
    use secmon::host::standalone::WorkResult;
    let results = secmon::host::standalone::drain(&app, usize::MAX).await;
    let count = |f: fn(&WorkResult) -> bool| results.iter().filter(|r| f(r)).count();
    let (done, poisoned, retry) = (
        count(|r| matches!(r, WorkResult::Done(_))),
        count(|r| matches!(r, WorkResult::Poisoned(_))),
        count(|r| matches!(r, WorkResult::Retry(_))),
    );
    secmon::output::print(
        "work",
        &serde_json::json!({
            "queues": [secmon::store::ALERTS_QUEUE, secmon::store::DELIVERIES_QUEUE],
            "done": done, "poisoned": poisoned, "retry": retry
        }),
    );
    Ok(if poisoned + retry > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `secmon queue …`: the store the environment selects, without Graph or credentials.
fn queue(file: &std::path::Path, cmd: QueueCommand) -> ExitCode {
    let format = secmon::logging::chosen(secmon::logging::Format::Text);
    let logs = secmon::logging::subscriber_with_default(format, secmon::logging::Redacting(std::io::stderr), "warn");
    let _ = tracing::subscriber::set_global_default(logs);
    let loaded = match secmon::setup::load(file, chrono::Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let result = runtime.block_on(async {
        let (store, queue, admin) = secmon::setup::queue_tools_from_env(&loaded.config).await?;
        let tools = secmon::queue_tools::Tools { queue: queue.as_ref(), admin: admin.as_ref(), store: store.as_ref() };
        queue_command(tools, cmd, chrono::Utc::now()).await
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", secmon::redact::redact(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

async fn queue_command(
    tools: secmon::queue_tools::Tools<'_>,
    cmd: QueueCommand,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<ExitCode> {
    use secmon::output::print;
    let (queue, action) = match cmd {
        QueueCommand::Stats { queues } => {
            for s in tools.stats(&queues, now).await? {
                print("queue_stats", &s);
            }
            return Ok(ExitCode::SUCCESS);
        }
        QueueCommand::Poison { queue, action } => (queue, action),
    };
    let settled = |done: &[secmon::queue_tools::Done]| {
        for d in done {
            print("poison_action", d);
        }
        let missing = done.iter().filter(|d| d.outcome == "not_found").count();
        print(
            "summary",
            &serde_json::json!({"queue": secmon::store::poison_name(&queue), "messages": done.len(), "not_found": missing}),
        );
        if missing > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
    };
    Ok(match action {
        PoisonAction::List => {
            let (entries, complete) = tools.list(&queue, now).await?;
            for e in &entries {
                print("poison_message", e);
            }
            print(
                "summary",
                &serde_json::json!({"queue": secmon::store::poison_name(&queue), "messages": entries.len(), "complete": complete}),
            );
            ExitCode::SUCCESS
        }
        PoisonAction::Show { id } => match tools.show(&queue, &id, now).await? {
            Some(shown) => {
                print("poison_message", &shown);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("no message {id:?} on {}", secmon::store::poison_name(&queue));
                ExitCode::from(1)
            }
        },
        PoisonAction::Redrive { ids, all } => {
            if ids.is_empty() && !all {
                eprintln!("name the messages to redrive (ids from `secmon queue poison list`), or pass --all");
                return Ok(ExitCode::from(2));
            }
            settled(&tools.redrive(&queue, &ids).await?)
        }
        PoisonAction::Purge { older_than, yes } => {
            let before = older_than.map(|d| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            if !yes {
                let (entries, _) = tools.list(&queue, now).await?;
                let n = entries
                    .iter()
                    .filter(|e| {
                        before.is_none_or(|b| {
                            e.enqueued_at.as_deref().and_then(|t| parse_since(t).ok()).is_some_and(|t| t < b)
                        })
                    })
                    .count();
                eprintln!(
                    "would purge {n} messages of {}; nothing deleted. Add --yes to delete them (each is recorded in the audit trail)",
                    secmon::store::poison_name(&queue)
                );
                return Ok(ExitCode::from(2));
            }
            settled(&tools.purge(&queue, before, now).await?)
        }
    })
}
