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
    /// Azure Functions custom handler: serve every function on 127.0.0.1, JSON logs on stdout.
    Serve {
        /// The port the Functions host chose.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
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
        Command::Serve { port } => serve(&cli.config, port),
    }
}

fn serve(file: &std::path::Path, port: u16) -> ExitCode {
    secmon::logging::init(secmon::logging::Format::Json);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let loaded = secmon::config::load(file, chrono::Utc::now())?;
        for w in &loaded.warnings {
            tracing::warn!("{}", loaded.render(w));
        }
        let app = secmon::setup::app_from_config(loaded.config).await?;
        secmon::host::azure::serve(app, port).await
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
