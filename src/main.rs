//! The `secmon` command: parses the command line, builds the state, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  secmon demo --out /tmp/secmon-demo          the whole flow on a local Graph emulator
  secmon check-config -c secmon.yaml          every problem with its file, line and field
  secmon doctor -c secmon.yaml                the real tenant, Graph and receivers checked, each fix named
  secmon rules test -c secmon.yaml alert.json what the rules and routes decide, offline
  secmon poll --once                          one poll of every tenant, JSON summary
  secmon run --listen 127.0.0.1:7071          the standalone daemon
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
    /// Poll every tenant's alerts and print a JSON summary per tenant.
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
    /// Print each tenant's last successful poll as JSON (exit 1 when any tenant is unhealthy).
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
}

#[derive(Subcommand, Clone, Copy)]
enum SubscriptionsAction {
    /// Print the stored subscriptions (without their secrets) as JSON.
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
}

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
        Command::Run { listen } => with_app(&cli.config, move |app| run(app, listen)),
        Command::Subscriptions { action } => with_app(&cli.config, move |app| subscriptions(app, action)),
        Command::Rules(RulesCommand::Test { now, tenant, paths }) => rules_test(&cli.config, now, tenant, &paths),
        Command::Audit(cmd) => audit(&cli.config, cmd),
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
    let result = runtime.block_on(async {
        let loaded = secmon::setup::load(file, chrono::Utc::now())?;
        for w in &loaded.warnings {
            tracing::warn!("{}", loaded.render(w));
        }
        let app = secmon::setup::app_from_config(loaded.config).await?;
        secmon::host::azure::serve(app, port, secmon::host::standalone::shutdown_signal()).await
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
    // Logs go to stderr: stdout carries the command's JSON.
    let format = secmon::logging::chosen(secmon::logging::Format::Text);
    let logs = secmon::logging::subscriber(format, secmon::logging::Redacting(std::io::stderr));
    let _ = tracing::subscriber::set_global_default(logs);
    let loaded = match secmon::setup::load(file, chrono::Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(async { f(secmon::setup::app_from_config(loaded.config).await?).await }));
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

async fn run(app: secmon::app::App, listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    secmon::host::standalone::run(app, listen, secmon::host::standalone::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
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
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionsAction::Sync => {
            let report = secmon::intake::subscriptions::sync(&app, now).await;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!("subscriptions: {}", report.summary());
            Ok(if report.has_failures() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

async fn poll_once(app: secmon::app::App) -> anyhow::Result<ExitCode> {
    let outcomes = secmon::intake::poll::poll_all(&app, app.clock.now()).await;
    println!("{}", serde_json::to_string_pretty(&outcomes)?);
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
            Ok(report) => println!("{}", serde_json::to_string(&report)?),
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
    println!("{}", serde_json::to_string_pretty(&s)?);
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
