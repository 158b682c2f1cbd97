//! The `receivers` section (Teams, e-mail, signed webhook) and what a route may set (`set:`), with the
//! checks of their settings. Templates are compiled and test-rendered by `notify::check`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// One receiver; exactly one kind.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ReceiverConfig {
    /// A Teams channel through a Workflows webhook.
    Teams(TeamsConfig),
    /// E-mail through Graph sendMail.
    Email(EmailConfig),
    /// A generic JSON webhook signed with HMAC-SHA256.
    Webhook(WebhookReceiverConfig),
}

impl ReceiverConfig {
    /// The kind's own checks of its settings (its templates are compiled by `notify::check`).
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        match self {
            ReceiverConfig::Teams(t) => t.validate(&format!("{path}.teams"), out),
            ReceiverConfig::Email(e) => e.validate(&format!("{path}.email"), out),
            ReceiverConfig::Webhook(w) => w.validate(&format!("{path}.webhook"), out),
        }
        let (kind, timeout, breaker) = match self {
            ReceiverConfig::Teams(t) => ("teams", t.timeout, &t.breaker),
            ReceiverConfig::Email(e) => ("email", e.timeout, &e.breaker),
            ReceiverConfig::Webhook(w) => ("webhook", w.timeout, &w.breaker),
        };
        if timeout < std::time::Duration::from_millis(100) || timeout > MAX_RECEIVER_TIMEOUT {
            out.push(Issue::error(
                format!("{path}.{kind}.timeout"),
                "a receiver's timeout must be between 100ms and 2m (default 10s)",
            ));
        }
        breaker.validate(&format!("{path}.{kind}.breaker"), out);
    }

    /// How long one attempt to reach this receiver may take (`timeout`).
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            ReceiverConfig::Teams(t) => t.timeout,
            ReceiverConfig::Email(e) => e.timeout,
            ReceiverConfig::Webhook(w) => w.timeout,
        }
    }

    /// The receiver's circuit breaker (`breaker`).
    pub fn breaker(&self) -> BreakerConfig {
        match self {
            ReceiverConfig::Teams(t) => t.breaker,
            ReceiverConfig::Email(e) => e.breaker,
            ReceiverConfig::Webhook(w) => w.breaker,
        }
    }

    /// The kind's name as the config spells it: `teams`, `email`, `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverConfig::Teams(_) => "teams",
            ReceiverConfig::Email(_) => "email",
            ReceiverConfig::Webhook(_) => "webhook",
        }
    }

    /// The receiver's own digest schedule, if it sends scheduled digests (Teams and e-mail).
    pub fn digest(&self) -> Option<&super::silence::DigestConfig> {
        match self {
            ReceiverConfig::Teams(t) => t.digest.as_ref(),
            ReceiverConfig::Email(e) => e.digest.as_ref(),
            ReceiverConfig::Webhook(_) => None,
        }
    }
}

/// The longest `timeout` a receiver may have.
pub const MAX_RECEIVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A receiver's default `timeout`: one attempt that takes longer failed ("timed out after 10s").
pub const DEFAULT_RECEIVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn default_timeout() -> std::time::Duration {
    DEFAULT_RECEIVER_TIMEOUT
}

/// A receiver's circuit breaker: after `failures` deliveries in a row failed in a way a retry may fix
/// (timeouts, refused connections, 5xx, 429), the receiver is paused for `cool_down`: its deliveries wait
/// on the queue (not counted as tries), then one probe is let through; its success closes the breaker,
/// its failure pauses the receiver again. Shared by every worker through the store.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker (default 5).
    #[serde(default = "BreakerConfig::default_failures")]
    pub failures: u32,
    /// How long the receiver is paused before a probe (default 1m).
    #[serde(default = "BreakerConfig::default_cool_down", with = "super::duration")]
    #[schemars(with = "String")]
    pub cool_down: std::time::Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: Self::default_failures(), cool_down: Self::default_cool_down() }
    }
}

impl BreakerConfig {
    fn default_failures() -> u32 {
        5
    }

    fn default_cool_down() -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }

    /// Checks the breaker is usable.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        if self.failures == 0 {
            out.push(Issue::error(format!("{path}.failures"), "at least 1"));
        }
        if self.cool_down < std::time::Duration::from_secs(1) || self.cool_down > std::time::Duration::from_secs(900) {
            out.push(Issue::error(format!("{path}.cool_down"), "between 1s and 15m"));
        }
    }
}

/// The status update a route may apply after notifying (`set:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    /// New status: `new` or `inProgress` (closing is for close rules).
    #[serde(default)]
    pub status: Option<String>,
    /// New owner (a user principal name).
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// The longest incident grouping window: the first alert's delivery waits this long for the others.
pub const MAX_GROUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Teams receiver: a Workflows webhook (`webhook_url`) or a Teams bot (`bot`), exactly one of them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The Workflows "When a Teams webhook request is received" URL; it carries a `sig=`, so write
    /// `${NAME}` and keep it in the environment or Key Vault.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Post through a Teams bot instead (cards with triage buttons, updated in place; docs/triage.md).
    #[serde(default)]
    pub bot: Option<TeamsBotConfig>,
    /// A minijinja template for the Adaptive Card (the attachment's `content`) instead of the built-in
    /// one; values are written as JSON.
    #[serde(default)]
    pub template: Option<String>,
    /// How many posts this receiver makes at most (default 20 per 5 minutes, under the Flow bot's
    /// ~25 per 5 minutes per connection; for a bot 5 per 12 s, under the Bot Connector's per-thread
    /// limits). Alerts beyond it wait and go out together in one digest card.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// For a trigger set to "any user in my tenant": get an Entra token with this tenant's credential
    /// and send it as `Authorization: Bearer`.
    #[serde(default)]
    pub auth: Option<TeamsAuthConfig>,
    /// Send what is routed here as one scheduled digest card instead of a card per alert.
    #[serde(default)]
    pub digest: Option<super::silence::DigestConfig>,
    /// How long one attempt to reach the receiver may take before it counts as failed (default 10s).
    #[serde(default = "default_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub timeout: std::time::Duration,
    /// The receiver's circuit breaker (default: 5 failures in a row pause it for 1m).
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// A Teams receiver that posts through a bot (`teams: { bot: … }`): proactive posts to one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsBotConfig {
    /// The bot (its name in `triage.bots`) that posts.
    pub name: String,
    /// The Bot Connector service URL of the conversation (`https://smba.trafficmanager.net/emea/`; the
    /// `serviceUrl` of any activity from that team).
    pub service_url: String,
    /// The channel or chat id (`19:…@thread.tacv2`).
    pub conversation_id: String,
}

/// The Bot Connector's per-thread limits (a bot's posts and updates in one conversation): at most this
/// many operations per window, every one of them holds at once.
pub const BOT_CONNECTOR_LIMITS: [(u32, std::time::Duration); 4] = [
    (7, std::time::Duration::from_secs(1)),
    (8, std::time::Duration::from_secs(2)),
    (60, std::time::Duration::from_secs(30)),
    (1_800, std::time::Duration::from_secs(3_600)),
];

/// How a Teams receiver authenticates to its Workflows trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsAuthConfig {
    /// The configured tenant (by name) whose credential gets the token.
    pub tenant: String,
    /// The token audience; defaults to the Power Automate service of the config's cloud
    /// (`https://service.flow.microsoft.com/` for `global`). GCC tenants write
    /// `https://gov.service.flow.microsoft.us/`.
    #[serde(default)]
    pub audience: Option<String>,
}

/// A posting budget: at most `posts` sends in any `per` (a sliding window), counted in the store so
/// that every instance shares it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Sends in one window.
    pub posts: u32,
    /// The window.
    #[serde(with = "super::duration")]
    #[schemars(with = "String")]
    pub per: std::time::Duration,
}

/// The Flow bot's reported limit: about 25 posts per 300 s per connection.
pub const FLOW_BOT_POSTS: u32 = 25;
/// The window of [`FLOW_BOT_POSTS`].
pub const FLOW_BOT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

impl BudgetConfig {
    /// A Teams receiver's default: 20 posts per 5 minutes, well under the Flow bot's limit.
    pub fn teams() -> Self {
        Self { posts: 20, per: FLOW_BOT_WINDOW }
    }

    /// A Teams bot receiver's default: 5 posts per 12 s. A burst of 5 is under the Bot Connector's 7 per
    /// second and 8 per 2 s, and 1,500 an hour leaves 300 of its 1,800 per hour for in-place updates.
    pub fn teams_bot() -> Self {
        Self { posts: 5, per: std::time::Duration::from_secs(12) }
    }

    /// A mailbox's default: Exchange Online's 30 messages per minute.
    pub fn email() -> Self {
        Self { posts: 30, per: std::time::Duration::from_secs(60) }
    }

    /// Checks the budget is usable; `limit` is the service's own (posts, window), when known.
    pub fn validate(&self, path: &str, limit: (u32, std::time::Duration), service: &str, out: &mut Vec<Issue>) {
        if self.posts == 0 || self.per < std::time::Duration::from_secs(1) {
            out.push(Issue::error(path, "a budget needs at least 1 post per at least 1s"));
            return;
        }
        // Above the service's rate (posts per second), sends beyond it are lost or refused.
        let (posts, window) = limit;
        if u128::from(self.posts) * window.as_millis() > u128::from(posts) * self.per.as_millis() {
            out.push(Issue::warning(
                path,
                format!(
                    "{} posts per {} is more than {service} takes ({posts} per {}); what it cannot post is lost",
                    self.posts,
                    humantime::format_duration(self.per),
                    humantime::format_duration(window)
                ),
            ));
        }
    }
}

impl TeamsConfig {
    /// The posting budget: the one configured, else the default of its kind (Workflows or bot).
    pub fn budget(&self) -> BudgetConfig {
        self.budget.unwrap_or(if self.bot.is_some() { BudgetConfig::teams_bot() } else { BudgetConfig::teams() })
    }

    /// Checks the receiver: exactly one of `webhook_url` and `bot`; a URL in https with its signature
    /// taken from the environment rather than the file; a bot's service URL in https. That the bot is
    /// one of `triage.bots` is checked by the config as a whole.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        let webhook_url = match (&self.webhook_url, &self.bot) {
            (Some(_), Some(_)) => {
                out.push(Issue::error(
                    path,
                    "set either webhook_url (a Workflows webhook) or bot (a Teams bot), not both",
                ));
                return;
            }
            (None, None) => {
                out.push(Issue::error(path, "set webhook_url (a Workflows webhook) or bot (a Teams bot)"));
                return;
            }
            (None, Some(bot)) => return self.validate_bot(bot, path, out),
            (Some(url), None) => url,
        };
        let field = format!("{path}.webhook_url");
        let Some(url) = check_url(&field, webhook_url, out) else { return };
        self.budget().validate(&format!("{path}.budget"), (FLOW_BOT_POSTS, FLOW_BOT_WINDOW), "the Flow bot", out);
        if let Some(cloud) = url.host_str().and_then(flow_bot_unavailable) {
            out.push(Issue::warning(
                field.clone(),
                format!(
                    "this Workflows URL is in {cloud}, where the Flow bot that posts the card is reported unavailable: \
                     check that a test alert reaches the channel (the webhook answers 202 even when nothing is posted)"
                ),
            ));
        }
        if let Some(auth) = &self.auth
            && let Some(audience) = &auth.audience
        {
            let _ = check_url(&format!("{path}.auth.audience"), audience, out);
        }
        let has_sig = url.query_pairs().any(|(k, v)| k.eq_ignore_ascii_case("sig") && !v.is_empty());
        if has_sig && !from_environment(webhook_url) {
            out.push(Issue::error(
                field,
                "this URL carries its signature (sig=) in the config file; write \"${NAME}\" and set NAME in the \
                 environment or as a Key Vault reference, so the secret stays out of the file",
            ));
        }
    }
}

impl TeamsConfig {
    fn validate_bot(&self, bot: &TeamsBotConfig, teams: &str, out: &mut Vec<Issue>) {
        let path = format!("{teams}.bot");
        if bot.name.trim().is_empty() {
            out.push(Issue::error(format!("{path}.name"), "name the bot (a key of triage.bots) that posts"));
        }
        let _ = check_url(&format!("{path}.service_url"), &bot.service_url, out);
        if bot.conversation_id.trim().is_empty() {
            out.push(Issue::error(
                format!("{path}.conversation_id"),
                "the channel or chat id (19:…@thread.tacv2) the cards are posted to",
            ));
        }
        if self.auth.is_some() {
            out.push(Issue::error(
                format!("{teams}.auth"),
                "auth is for a Workflows trigger; a bot posts with its own registration (triage.bots)",
            ));
        }
        if self.template.is_some() {
            out.push(Issue::error(
                format!("{teams}.template"),
                "a bot posts the triage card (docs/triage.md); templates are for Workflows cards",
            ));
        }
        let budget = self.budget();
        let budget_path = format!("{teams}.budget");
        // The hourly limit is the lowest rate; the one-second limit the smallest burst.
        budget.validate(&budget_path, BOT_CONNECTOR_LIMITS[3], "the Bot Connector", out);
        if budget.posts > BOT_CONNECTOR_LIMITS[0].0 {
            out.push(Issue::warning(
                budget_path,
                format!(
                    "a burst of {} posts is more than the Bot Connector takes in one second ({}); what it refuses waits for a retry",
                    budget.posts, BOT_CONNECTOR_LIMITS[0].0
                ),
            ));
        }
    }
}

/// The cloud of a Workflows URL host where the Flow bot is reported unavailable (GCC High, DoD), if it
/// is one of them: `*.appsplatform.us` is DoD; `*.logic.azure.us` and `*.powerplatform.us` other than
/// GCC's `*.gov.…` are GCC High. (The host names follow Power Automate's US Government service URLs;
/// the Flow bot's absence there is reported, not documented.)
pub fn flow_bot_unavailable(host: &str) -> Option<&'static str> {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".appsplatform.us") {
        Some("the US Government DoD cloud")
    } else if host.ends_with(".logic.azure.us") || host.ends_with(".powerplatform.us") && !host.contains(".gov.") {
        Some("the US Government GCC High cloud")
    } else {
        None
    }
}

/// E-mail receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The mailbox that sends (needs `Mail.Send`; scope it with Exchange RBAC for Applications).
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Vec<String>,
    /// A minijinja template for the subject instead of `[secmon][{{ tenant }}][{{ severity_label }}] {{ title }}`.
    #[serde(default)]
    pub subject: Option<String>,
    /// A minijinja template for the HTML body instead of the built-in one; values are HTML-escaped.
    #[serde(default)]
    pub template: Option<String>,
    /// The tenant (by name) whose identity sends, with its `Mail.Send`: for an MSSP, the tenant of the SOC
    /// mailbox, so one mailbox sends for every customer. Default: `mail.tenant`, else the alert's own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// How many messages the sending mailbox sends at most (default Exchange Online's 30 per minute),
    /// shared by every receiver that sends from it. Alerts beyond it go out together in one digest mail.
    #[serde(default = "BudgetConfig::email")]
    pub budget: BudgetConfig,
    /// Send what is routed here as one scheduled digest mail instead of a mail per alert.
    #[serde(default)]
    pub digest: Option<super::silence::DigestConfig>,
    /// How long one attempt to reach the receiver may take before it counts as failed (default 10s).
    #[serde(default = "default_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub timeout: std::time::Duration,
    /// The receiver's circuit breaker (default: 5 failures in a row pause it for 1m).
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// Settings for the mail secmon sends.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The tenant (by name) that sends e-mail: the default of every e-mail receiver's `tenant`. Set it when
    /// secmon watches several tenants, so that mail (above all secmon's own alarms about a tenant whose
    /// credential fails) never depends on the tenant it is about.
    #[serde(default)]
    pub tenant: Option<String>,
}

fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty() && domain.contains('.') && !s.chars().any(|c| c.is_whitespace() || "<>,;\"".contains(c))
}

impl EmailConfig {
    /// Checks the addresses.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        if !is_address(&self.from) {
            out.push(Issue::error(format!("{path}.from"), format!("{:?} is not a mailbox address", self.from)));
        }
        self.budget.validate(
            &format!("{path}.budget"),
            (30, std::time::Duration::from_secs(60)),
            "Exchange Online",
            out,
        );
        if self.to.is_empty() {
            out.push(Issue::error(format!("{path}.to"), "at least one recipient"));
        }
        for (field, list) in [("to", &self.to), ("cc", &self.cc)] {
            for (i, a) in list.iter().enumerate() {
                if !is_address(a) {
                    out.push(Issue::error(format!("{path}.{field}[{i}]"), format!("{a:?} is not an e-mail address")));
                }
            }
        }
    }
}

/// The shortest HMAC key secmon accepts.
pub const MIN_SECRET_BYTES: usize = 16;

/// Generic webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiverConfig {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key for the signature header; write `${NAME}`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A minijinja template for the JSON body instead of the built-in one; values are written as JSON,
    /// and `alert` is the alert exactly as Graph returned it.
    #[serde(default)]
    pub template: Option<String>,
    /// How long one attempt to reach the receiver may take before it counts as failed (default 10s).
    #[serde(default = "default_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub timeout: std::time::Duration,
    /// The receiver's circuit breaker (default: 5 failures in a row pause it for 1m).
    #[serde(default)]
    pub breaker: BreakerConfig,
}

impl WebhookReceiverConfig {
    /// Checks the URL and that the key comes from the environment and is long enough.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        let _ = check_url(&format!("{path}.url"), &self.url, out);
        match &self.secret {
            None => out.push(Issue::warning(
                format!("{path}.secret"),
                "no secret: requests are not signed, so the receiver cannot tell them from forgeries",
            )),
            Some(s) if s.len() < MIN_SECRET_BYTES => out.push(Issue::error(
                format!("{path}.secret"),
                format!("the HMAC key must be at least {MIN_SECRET_BYTES} characters"),
            )),
            Some(s) if !from_environment(s) => out.push(Issue::error(
                format!("{path}.secret"),
                "the HMAC key is written in the config file; write \"${NAME}\" and set NAME in the environment \
                 or as a Key Vault reference",
            )),
            Some(_) => {}
        }
    }
}

/// True when `value` is — or contains — a value the config loader took from the environment.
pub fn from_environment(value: &str) -> bool {
    crate::redact::global().mask(value) != value
}

/// True for `http://` URLs that may stay plain: loopback only (tests, local sinks).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a receiver URL: absolute, https (http only on loopback). Pushes an issue at `path`.
pub fn check_url(path: &str, value: &str, out: &mut Vec<Issue>) -> Option<url::Url> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => Some(u),
        Ok(_) => {
            out.push(Issue::error(path, "must be an https URL (plain http only to 127.0.0.1 or localhost)"));
            None
        }
        Err(e) => {
            out.push(Issue::error(path, format!("not a URL: {e}")));
            None
        }
    }
}
