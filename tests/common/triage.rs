//! The triage harness: the Graph emulator with its Bot Connector stand-in (over TLS), an App with two
//! configured tenants and two bots (`soc` serving contoso, `fabrikam-bot` serving fabrikam), the real
//! Graph client, and the card the clicks come from, posted as the receiver does.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::Record;
use secmon::clock::ManualClock;
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::{Emulator, Options};
use serde_json::{Value, json};

/// Contoso's Entra tenant.
pub const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
/// Fabrikam's Entra tenant.
pub const FABRIKAM_ID: &str = "5e1f0c2a-3b4d-4e6f-8a9b-0c1d2e3f4a5b";
/// secmon's Graph app registration (in both tenants).
pub const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
/// Its secret.
pub const SECRET: &str = "triage-tests~secret";
/// The `soc` bot's app id (serves contoso).
pub const BOT_APP: &str = "7d1e3b5a-1111-4222-8333-444455556666";
/// The `fabrikam-bot` bot's app id (serves fabrikam).
pub const BOT_B: &str = "7d1e3b5a-2222-4222-8333-444455556666";
/// Both bots' secret.
pub const BOT_SECRET: &str = "bot-tests~secret";
/// The alert the card shows (a contoso sample alert).
pub const HIDDEN_FILE: &str = "da637551227677560813_-961444813";
/// The channel thread the card is in.
pub const CONVERSATION: &str = "19:secops@thread.tacv2";
/// Dana, listed in `triage.allowed.users` by object id.
pub const DANA: &str = "0b6c8e2a-dana-4c1e-9f00-000000000042";
/// The Entra group whose members may act.
pub const SOC_GROUP: &str = "6f1b2c3d-0000-4000-8000-000000000001";

/// The harness's clock.
pub fn now() -> DateTime<Utc> {
    "2026-12-01T10:42:00Z".parse().unwrap()
}

/// The emulator, the App, its store, and the card's activity id.
pub struct Triage {
    /// The Graph emulator and Bot Connector stand-in.
    pub emu: Emulator,
    /// secmon.
    pub app: App,
    /// The App's store and queue.
    pub store: Arc<SqliteStore>,
    /// The card the clicks come from.
    pub card_id: String,
}

/// A harness whose config's `triage:` section ends with `allowed` (e.g. `  allowed: { users: [...] }\n`).
pub async fn start(allowed: &str) -> Triage {
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emu.set_now(Some(now()));
    emu.seed_samples(TENANT_ID);
    for tenant in [TENANT_ID, FABRIKAM_ID] {
        emu.add_client(tenant, CLIENT_ID, SECRET);
        emu.add_client(tenant, BOT_APP, BOT_SECRET);
        emu.add_client(tenant, BOT_B, BOT_SECRET);
    }
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let http = super::rig::tls_client(&emu);
    let (graph, authority, metadata) = (emu.graph_url(), emu.authority_url(), emu.bot_openid_url());
    let credential = format!("credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }}");
    let text = format!(
        "graph_url: {graph}\nauthority_url: {authority}\ntenants:\n  \
         - {{ id: {TENANT_ID}, name: contoso, {credential} }}\n  \
         - {{ id: {FABRIKAM_ID}, name: fabrikam, {credential} }}\n\
         triage:\n  bots:\n    \
         soc: {{ app_id: {BOT_APP}, app_secret: {BOT_SECRET}, tenant_id: {TENANT_ID}, openid_metadata: '{metadata}', tenants: [contoso] }}\n    \
         fabrikam-bot: {{ app_id: {BOT_B}, app_secret: {BOT_SECRET}, tenant_id: {FABRIKAM_ID}, openid_metadata: '{metadata}', tenants: [fabrikam] }}\n\
         {allowed}"
    );
    let config =
        secmon::setup::load_str(&text, std::path::Path::new("test.yaml"), &|_: &str| None, now()).unwrap().config;
    let app = super::rig::app(config, store.clone(), http.clone(), clock.clone());
    let token = emu.issue_token(TENANT_ID, BOT_APP);
    let posted: Value = http
        .post(format!("{}v3/conversations/{CONVERSATION}/activities", emu.bot_service_url()))
        .bearer_auth(token)
        .json(&json!({"type": "message", "attachments": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let card_id = posted["id"].as_str().unwrap().to_string();
    Triage { emu, app, store, card_id }
}

impl Triage {
    /// The activity Teams sends when `from` clicks "Resolve as benign" on the card (for `tenant`'s alert).
    pub fn activity(&self, tenant: &str, from: &str) -> Value {
        let alert = self.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap();
        json!({
            "type": "message", "id": "1701234567890", "channelId": "msteams", "serviceUrl": self.emu.bot_service_url(),
            "from": {"id": "29:1abc", "name": "Dana Lee", "aadObjectId": from},
            "conversation": {"id": CONVERSATION, "conversationType": "channel"},
            "recipient": {"id": format!("28:{BOT_APP}")},
            "replyToId": self.card_id,
            "value": {"secmon": "resolve-benign", "tenant": tenant, "alert": HIDDEN_FILE,
                      "version": alert["lastUpdateDateTime"], "classification": "informationalExpectedActivity",
                      "determination": "securityTesting"},
        })
    }

    /// Every audit record, in order.
    pub async fn audit(&self) -> Vec<Record> {
        super::rig::audit_records(self.store.as_ref()).await
    }

    /// The texts of the updated cards (second line), in order.
    pub fn card_updates(&self) -> Vec<String> {
        self.emu
            .bot_calls()
            .iter()
            .filter(|c| c.method == "PUT")
            .map(|c| c.activity["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap().to_string())
            .collect()
    }

    /// The texts the bot replied in the card's thread.
    pub fn replies(&self) -> Vec<String> {
        self.emu
            .bot_calls()
            .iter()
            .filter(|c| c.method == "POST" && c.activity.get("replyToId").is_some())
            .map(|c| c.activity["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The messages on the alerts queue.
    pub async fn queued(&self) -> usize {
        use secmon::store::Queue;
        self.store.len(secmon::store::ALERTS_QUEUE).await.unwrap()
    }
}
