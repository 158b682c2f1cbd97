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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::ConfigSchema => {
            println!("{}", serde_json::to_string_pretty(&secmon::config::Config::json_schema()).expect("schema"));
            ExitCode::SUCCESS
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
