//! The `secmon` command: parses the command line, builds the state, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Microsoft 365 security alerts from Graph: notify the right people, close what a reviewed rule
/// proves benign, keep an audit trail.
#[derive(Parser)]
#[command(name = "secmon", version, about, long_about = None)]
struct Cli {
    /// The YAML config file.
    #[arg(long, short, global = true, env = "SECMON_CONFIG", default_value = "secmon.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and print every problem with its file, line and field (exit 1 on errors).
    CheckConfig,
    /// Print the JSON Schema of the config file.
    ConfigSchema,
    /// Known-benign close rules and routes.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every hash chain; print one JSON line per stream; exit 1 if a record was changed, removed
    /// or reordered.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Write the records since a date or time as JSON lines.
    Export {
        /// A day (2026-11-26) or RFC 3339 time.
        #[arg(long)]
        since: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::ConfigSchema => {
            println!("{}", serde_json::to_string_pretty(&secmon::config::Config::json_schema()).expect("schema"));
            ExitCode::SUCCESS
        }
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
    let loaded = match secmon::config::load(file, now) {
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
    match secmon::rules::dry_run::run(&engine, paths, &tenant, now, &mut std::io::stdout(), &mut std::io::stderr()) {
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
    let loaded = match secmon::config::load(file, chrono::Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let store = match secmon::store::sqlite::SqliteStore::open(&loaded.config.store.sqlite) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let mut out = std::io::stdout();
    let result = runtime.block_on(async {
        match cmd {
            AuditCommand::Verify { tenant } => audit::verify_command(&store, tenant.as_deref(), &mut out).await,
            AuditCommand::Export { since, tenant } => {
                let since =
                    audit::parse_since(&since).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                audit::export(&store, since, tenant.as_deref(), &mut out).await.map(|_| true)
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

fn check_config(file: &std::path::Path) -> ExitCode {
    match secmon::config::load(file, chrono::Utc::now()) {
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
