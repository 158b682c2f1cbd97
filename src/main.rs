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
    /// Graph change-notification subscriptions (the doorbells).
    Subscriptions {
        #[command(subcommand)]
        action: SubscriptionsAction,
    },
}

#[derive(Subcommand)]
enum SubscriptionsAction {
    /// Print the stored subscriptions (without their secrets) as JSON.
    List,
    /// Create, renew, re-create and delete subscriptions so Graph matches the config; print what was done.
    Sync,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::ConfigSchema => {
            println!("{}", serde_json::to_string_pretty(&secmon::config::Config::json_schema()).expect("schema"));
            ExitCode::SUCCESS
        }
        Command::Subscriptions { action } => subscriptions(&cli.config, action),
    }
}

fn subscriptions(file: &std::path::Path, action: SubscriptionsAction) -> ExitCode {
    let loaded = match secmon::config::load(file, chrono::Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let app = match local::app_from_config(&loaded) {
            Ok(app) => app,
            Err(e) => {
                eprintln!("{}", secmon::redact::redact(&format!("{e:#}")));
                return ExitCode::from(1);
            }
        };
        let now = chrono::Utc::now();
        match action {
            SubscriptionsAction::List => match secmon::intake::subscriptions::list(&app, now).await {
                Ok(list) => {
                    println!("{}", serde_json::to_string_pretty(&list).expect("json"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reading subscription records: {e}");
                    ExitCode::from(1)
                }
            },
            SubscriptionsAction::Sync => {
                let report = secmon::intake::subscriptions::sync(&app, now).await;
                println!("{}", serde_json::to_string_pretty(&report).expect("json"));
                eprintln!("subscriptions: {}", report.summary());
                if report.has_failures() { ExitCode::from(1) } else { ExitCode::SUCCESS }
            }
        }
    })
}

/// Builds the App until `secmon::setup::app_from_config` (the real Graph client) is on this branch:
/// the store from the config, and a Graph that says it is not there.
mod local {
    use std::sync::Arc;

    use secmon::graph::{AlertPage, AlertUpdate, Graph, GraphError, Retry};
    use serde_json::Value;

    pub fn app_from_config(loaded: &secmon::config::Loaded) -> anyhow::Result<secmon::app::App> {
        let store = Arc::new(secmon::store::sqlite::SqliteStore::open(&loaded.config.store.sqlite)?);
        Ok(secmon::app::App {
            config: Arc::new(loaded.config.clone()),
            store: store.clone(),
            queue: store,
            graph: Arc::new(NoGraph),
            http: reqwest::Client::new(),
            clock: Arc::new(secmon::clock::SystemClock),
        })
    }

    struct NoGraph;

    fn missing() -> GraphError {
        GraphError {
            operation: "Graph".into(),
            status: None,
            code: None,
            message: "this build has no Graph client yet (secmon::setup)".into(),
            retry: Retry::Permanent,
        }
    }

    #[async_trait::async_trait]
    impl Graph for NoGraph {
        async fn list_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
            Err(missing())
        }
        async fn next_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
            Err(missing())
        }
        async fn get_alert(&self, _: &str, _: &str) -> Result<Value, GraphError> {
            Err(missing())
        }
        async fn update_alert(&self, _: &str, _: &str, _: &AlertUpdate) -> Result<Value, GraphError> {
            Err(missing())
        }
        async fn add_comment(&self, _: &str, _: &str, _: &str) -> Result<(), GraphError> {
            Err(missing())
        }
        async fn send_mail(&self, _: &str, _: &str, _: &Value) -> Result<(), GraphError> {
            Err(missing())
        }
        async fn create_subscription(&self, _: &str, _: &Value) -> Result<Value, GraphError> {
            Err(missing())
        }
        async fn renew_subscription(&self, _: &str, _: &str, _: &str) -> Result<Value, GraphError> {
            Err(missing())
        }
        async fn reauthorize_subscription(&self, _: &str, _: &str) -> Result<(), GraphError> {
            Err(missing())
        }
        async fn delete_subscription(&self, _: &str, _: &str) -> Result<(), GraphError> {
            Err(missing())
        }
        async fn list_subscriptions(&self, _: &str) -> Result<Vec<Value>, GraphError> {
            Err(missing())
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
