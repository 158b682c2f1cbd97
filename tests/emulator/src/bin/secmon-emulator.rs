//! `secmon-emulator`: runs the Graph emulator in the foreground and prints its URLs as one JSON line.

use clap::Parser;
use secmon_emulator::{Emulator, Options};

/// Command line of the standalone emulator.
#[derive(Parser)]
#[command(about = "A local Microsoft Graph / Entra ID stand-in for secmon")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Tenant to seed and to issue managed-identity tokens for.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000001")]
    tenant: String,
    /// Client id accepted by the token endpoint.
    #[arg(long, default_value = "11111111-1111-1111-1111-111111111111")]
    client_id: String,
    /// Client secret accepted by the token endpoint.
    #[arg(long, default_value = "emulator-secret")]
    client_secret: String,
    /// Seed the documented sample alerts.
    #[arg(long)]
    samples: bool,
    /// Seed this many generated alerts.
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Seed for generated alerts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Alerts per list page.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
    /// Serve https with a generated test CA (its PEM is printed as `ca_pem`).
    #[arg(long)]
    tls: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let emulator = Emulator::start(Options {
        tls: args.tls,
        page_size: args.page_size,
        default_tenant: args.tenant.clone(),
        port: args.port,
        ..Options::default()
    })
    .await?;
    emulator.add_client(&args.tenant, &args.client_id, &args.client_secret);
    if args.samples {
        emulator.seed_samples(&args.tenant);
    }
    if args.generate > 0 {
        let start = chrono::Utc::now() - chrono::Duration::days(7);
        emulator.generate_alerts(&args.tenant, args.generate, args.seed, start);
    }
    let info = serde_json::json!({
        "base_url": emulator.base_url(),
        "graph_url": emulator.graph_url(),
        "authority_url": emulator.authority_url(),
        "identity_endpoint": emulator.identity_endpoint(),
        "identity_header": emulator.identity_header(),
        "tenant": args.tenant,
        "client_id": args.client_id,
        "client_secret": args.client_secret,
        "teams_webhook_url": emulator.teams_webhook_url("alerts"),
        "webhook_sink_url": emulator.webhook_sink_url("alerts"),
        "ca_pem": emulator.ca_pem(),
    });
    println!("{info}");
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(())
}
