//! What a notification says about an alert: the facts every template sees, already cut to size and
//! escaped for the target (HTML is escaped by the template engine; Adaptive Card text is escaped here).

use serde::Serialize;

use crate::alert::{Alert, Severity};

/// How many characters of the description a notification shows.
const DESCRIPTION_CHARS: usize = 1_500;
/// How many characters of one evidence item, title or other free text a notification shows.
const ITEM_CHARS: usize = 300;

/// A list cut to a maximum length: the items shown and how many were left out ("and N more").
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cut {
    /// The items shown.
    pub items: Vec<String>,
    /// How many more there are.
    pub more: usize,
}

impl Cut {
    fn keep(&mut self, max: usize) {
        if self.items.len() > max {
            self.more += self.items.len() - max;
            self.items.truncate(max);
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.more == 0
    }
}

/// The evidence of an alert, grouped the way analysts read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvidenceView {
    /// Accounts and mailboxes.
    pub users: Cut,
    /// Devices.
    pub devices: Cut,
    /// IP addresses.
    pub ips: Cut,
    /// Files and processes.
    pub files: Cut,
    /// URLs.
    pub urls: Cut,
    /// Everything else with a summary (messages, apps, registry keys).
    pub other: Cut,
}

impl EvidenceView {
    fn lists_mut(&mut self) -> [&mut Cut; 6] {
        [&mut self.users, &mut self.devices, &mut self.ips, &mut self.files, &mut self.urls, &mut self.other]
    }

    /// True when there is no evidence worth showing.
    pub fn is_empty(&self) -> bool {
        [&self.users, &self.devices, &self.ips, &self.files, &self.urls, &self.other].iter().all(|c| c.is_empty())
    }
}

/// Another alert of the same incident, told in the same message.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Member {
    /// Alert id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Severity wire value.
    pub severity: String,
    /// Link to the alert in the Defender portal, if it has one.
    pub url: Option<String>,
}

/// Everything a template sees about one notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// Tenant name.
    pub tenant: String,
    /// The receiver this rendering is for.
    pub receiver: String,
    /// Alert id.
    pub id: String,
    /// Title (the id when there is none).
    pub title: String,
    /// Severity wire value (`high`).
    pub severity: String,
    /// Severity as a word for people (`High`).
    pub severity_label: String,
    /// Adaptive Card colour of the severity (`attention`, `warning`, `accent`, `default`).
    pub severity_color: String,
    /// Hex colour of the severity for e-mail.
    pub severity_hex: String,
    /// Status wire value.
    pub status: String,
    /// Product that raised the alert.
    pub service_source: String,
    /// Detection technology.
    pub detection_source: String,
    /// Category.
    pub category: String,
    /// Description, cut to a readable length.
    pub description: String,
    /// Creation time as Graph wrote it.
    pub created: String,
    /// Last update time as Graph wrote it (the version).
    pub updated: String,
    /// Owner.
    pub assigned_to: String,
    /// Defender incident id.
    pub incident_id: String,
    /// Link to the alert in the Defender portal (absent for secmon's own alerts).
    pub alert_url: Option<String>,
    /// Link to the incident in the Defender portal.
    pub incident_url: Option<String>,
    /// MITRE ATT&CK technique ids.
    pub mitre: Cut,
    /// Key evidence.
    pub evidence: EvidenceView,
    /// Whether there is any evidence to show.
    pub has_evidence: bool,
    /// How many evidence items were cut to make the message fit ("N more evidence items not shown"):
    /// the entries left out of the lists by [`View::cut`], or, in a webhook body, the items left out of
    /// the raw alert's `evidence`.
    pub evidence_not_shown: usize,
    /// Other alerts of the same incident told in this message.
    pub group: Vec<Member>,
    /// Why this alert is told again (`new`, `severity rose`, `reopened`, `reminder`).
    pub why: String,
    /// The routes that sent it here.
    pub routes: Vec<String>,
    /// A signed, single-use link to the triage page (`triage.page`), for e-mail and Teams Workflows
    /// receivers; absent otherwise.
    pub triage_url: Option<String>,
}

impl View {
    /// The facts of `alert` for `receiver`, with its key evidence.
    pub fn new(tenant: &str, receiver: &str, alert: &Alert) -> View {
        let evidence = View::evidence_of(alert);
        View { has_evidence: !evidence.is_empty(), evidence, ..View::without_evidence(tenant, receiver, alert) }
    }

    /// [`View::new`] without the evidence lists, for a receiver that shows none (the webhook's built-in
    /// body carries the alert's own `evidence`): reading the evidence typed is most of a view's cost.
    pub fn without_evidence(tenant: &str, receiver: &str, alert: &Alert) -> View {
        let severity = alert.severity();
        let internal = alert.id.starts_with("secmon-");
        let link = |u: &Option<String>| if internal { None } else { u.clone().filter(|u| is_https(u)) };
        let mitre = Cut { items: alert.mitre_techniques.clone().unwrap_or_default(), more: 0 };
        let text = |s: &Option<String>| s.as_deref().map(|s| clip(s, ITEM_CHARS)).unwrap_or_default();
        View {
            tenant: tenant.to_string(),
            receiver: receiver.to_string(),
            id: alert.id.clone(),
            title: clip(alert.title_or_id(), ITEM_CHARS),
            severity: severity.as_str().to_string(),
            severity_label: severity_label(&severity),
            severity_color: severity_color(&severity).to_string(),
            severity_hex: severity_hex(&severity).to_string(),
            status: alert.status().as_str().to_string(),
            service_source: alert.service_source.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            detection_source: alert.detection_source.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            category: text(&alert.category),
            description: alert.description.as_deref().map(|d| clip(d, DESCRIPTION_CHARS)).unwrap_or_default(),
            created: alert.created_date_time.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            updated: alert.version().to_string(),
            assigned_to: text(&alert.assigned_to),
            incident_id: text(&alert.incident_id),
            alert_url: link(&alert.alert_web_url),
            incident_url: link(&alert.incident_web_url),
            mitre,
            has_evidence: false,
            evidence_not_shown: 0,
            evidence: EvidenceView::default(),
            group: Vec::new(),
            why: "new".to_string(),
            routes: Vec::new(),
            triage_url: None,
        }
    }

    /// The key evidence of `alert`, by kind, each list without duplicates.
    fn evidence_of(alert: &Alert) -> EvidenceView {
        let mut evidence = EvidenceView::default();
        // Thousands of evidence items happen (an alert storm on one device): dedupe in linear time.
        let mut seen = std::collections::HashSet::new();
        for e in alert.evidence() {
            let Some((kind, text)) = e.summary() else { continue };
            // The index into `lists_mut`, which is also what duplicates are judged within.
            let slot = match kind {
                "user" | "mailbox" => 0,
                "device" => 1,
                "ip" => 2,
                "file" | "process" => 3,
                "url" => 4,
                _ => 5,
            };
            let text = clip(&text, ITEM_CHARS);
            if seen.insert((slot, text.clone())) {
                evidence.lists_mut()[slot].items.push(text);
            }
        }
        evidence
    }

    /// A member entry for this alert, to be listed in another alert's grouped message.
    pub fn member(&self) -> Member {
        Member {
            id: self.id.clone(),
            title: self.title.clone(),
            severity: self.severity.clone(),
            url: self.alert_url.clone(),
        }
    }

    /// Keeps at most `max` entries in each evidence list, the MITRE list and the group, counting the rest.
    pub fn cut(&mut self, max: usize) {
        for list in self.evidence.lists_mut() {
            list.keep(max);
        }
        self.evidence_not_shown = self.evidence.lists_mut().iter().map(|l| l.more).sum();
        self.mitre.keep(max.max(1).saturating_mul(2));
        let chars = max.saturating_mul(100);
        if self.description.chars().count() > chars {
            self.description = clip(&self.description, chars.max(80));
        }
    }

    /// The same view with every free-text string escaped for Adaptive Card `TextBlock`/`FactSet` text
    /// (a Markdown subset), so that alert text can neither format, nor link, nor reorder itself. The
    /// portal links are left alone: they only ever go into secmon's own `Action.OpenUrl` buttons.
    pub fn for_card(&self) -> View {
        let mut v = self.clone();
        for s in [
            &mut v.tenant,
            &mut v.receiver,
            &mut v.id,
            &mut v.title,
            &mut v.status,
            &mut v.service_source,
            &mut v.detection_source,
            &mut v.category,
            &mut v.description,
            &mut v.created,
            &mut v.updated,
            &mut v.assigned_to,
            &mut v.incident_id,
            &mut v.why,
        ] {
            *s = card_text(s);
        }
        for list in v.evidence.lists_mut() {
            list.items.iter_mut().for_each(|s| *s = card_text(s));
        }
        v.mitre.items.iter_mut().for_each(|s| *s = card_text(s));
        v.routes.iter_mut().for_each(|s| *s = card_text(s));
        for m in &mut v.group {
            m.title = card_text(&m.title);
            m.id = card_text(&m.id);
            m.severity = card_text(&m.severity);
        }
        v
    }
}

/// One alert in a digest: the alerts that waited for a receiver's posting budget, told in one message.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DigestLine {
    /// Tenant name.
    pub tenant: String,
    /// Alert id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Severity wire value.
    pub severity: String,
    /// Severity as a word for people.
    pub severity_label: String,
    /// Adaptive Card colour of the severity.
    pub severity_color: String,
    /// Link to the alert in the Defender portal, if it has one (https only).
    pub url: Option<String>,
    /// Why it is told (`new`, `severity rose`, …).
    pub why: String,
    /// When it started to wait, RFC 3339.
    pub since: String,
    /// The product that raised it (`serviceSource`), for the digest's counts by source.
    #[serde(default)]
    pub source: String,
}

impl DigestLine {
    /// The digest line of a view (the alert's other grouped alerts get lines of their own).
    pub fn of(view: &View, since: &str) -> Vec<DigestLine> {
        let line = |m: &Member| DigestLine {
            tenant: view.tenant.clone(),
            id: m.id.clone(),
            title: m.title.clone(),
            severity: m.severity.clone(),
            severity_label: severity_label(&severity_of(&m.severity)),
            severity_color: severity_color(&severity_of(&m.severity)).to_string(),
            url: m.url.clone(),
            why: view.why.clone(),
            since: since.to_string(),
            source: view.service_source.clone(),
        };
        std::iter::once(view.member()).chain(view.group.iter().cloned()).map(|m| line(&m)).collect()
    }

    /// The severity's rank, for "highest first".
    pub fn rank(&self) -> u8 {
        severity_of(&self.severity).rank()
    }
}

fn severity_of(wire: &str) -> Severity {
    wire.parse().expect("infallible")
}

/// What a digest message says: how many alerts it carries, the highest severities first, one line per
/// alert, and how many still wait for the next one ("and N more").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    /// The receiver.
    pub receiver: String,
    /// The tenants of the alerts, comma-separated.
    pub tenants: String,
    /// How many alerts this message lists.
    pub count: usize,
    /// How many alerts wait for the next digest.
    pub more: usize,
    /// Counts per severity, highest first: `3 High, 12 Medium`.
    pub summary: String,
    /// The highest severity's label and card colour.
    pub top_label: String,
    /// The highest severity's card colour.
    pub top_color: String,
    /// One line per alert, highest severity first, then oldest first.
    pub lines: Vec<DigestLine>,
    /// Counts per source (`serviceSource`), most first: `3 microsoftDefenderForEndpoint, 1 microsoftSentinel`.
    pub sources: String,
    /// For a scheduled digest, its schedule in words (`0 0 8 * * * Europe/Berlin`); `None` for a digest
    /// of alerts that waited for a posting budget.
    pub scheduled: Option<String>,
}

impl Digest {
    /// A digest of `lines` (sorted here) for `receiver`; `more` wait after it.
    pub fn new(receiver: &str, mut lines: Vec<DigestLine>, more: usize) -> Digest {
        lines.sort_by(|a, b| b.rank().cmp(&a.rank()).then_with(|| a.since.cmp(&b.since)));
        let mut d = Digest {
            receiver: receiver.to_string(),
            tenants: String::new(),
            count: 0,
            more,
            summary: String::new(),
            top_label: String::new(),
            top_color: String::new(),
            lines,
            sources: String::new(),
            scheduled: None,
        };
        d.recount();
        d
    }

    /// A scheduled digest of `lines` for `receiver` on `schedule` (in words); `more` follow it.
    pub fn scheduled(receiver: &str, lines: Vec<DigestLine>, more: usize, schedule: &str) -> Digest {
        Digest { scheduled: Some(schedule.to_string()), ..Digest::new(receiver, lines, more) }
    }

    /// Moves the last lines out (they wait for the next digest) until at most `keep` are left.
    pub fn keep(&mut self, keep: usize) {
        if self.lines.len() > keep {
            self.more += self.lines.len() - keep;
            self.lines.truncate(keep);
            self.recount();
        }
    }

    fn recount(&mut self) {
        self.count = self.lines.len();
        let mut counts: Vec<(u8, String, usize)> = Vec::new();
        for l in &self.lines {
            match counts.iter_mut().find(|(r, label, _)| *r == l.rank() && *label == l.severity_label) {
                Some(c) => c.2 += 1,
                None => counts.push((l.rank(), l.severity_label.clone(), 1)),
            }
        }
        self.summary = counts.iter().map(|(_, label, n)| format!("{n} {label}")).collect::<Vec<_>>().join(", ");
        let mut sources: Vec<(String, usize)> = Vec::new();
        for l in self.lines.iter().filter(|l| !l.source.is_empty()) {
            match sources.iter_mut().find(|(s, _)| *s == l.source) {
                Some(c) => c.1 += 1,
                None => sources.push((l.source.clone(), 1)),
            }
        }
        sources.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.sources = sources.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
        let mut tenants: Vec<&str> = self.lines.iter().map(|l| l.tenant.as_str()).collect();
        tenants.dedup();
        tenants.sort();
        tenants.dedup();
        self.tenants = tenants.join(", ");
        let top = self.lines.first();
        self.top_label = top.map(|l| l.severity_label.clone()).unwrap_or_default();
        self.top_color = top.map(|l| l.severity_color.clone()).unwrap_or_else(|| "default".into());
    }

    /// The same digest with its free text escaped for Adaptive Card text ([`card_text`]); links stay,
    /// as the markdown link of each line, with `(`, `)` and spaces percent-encoded.
    pub fn for_card(&self) -> Digest {
        let mut d = self.clone();
        d.receiver = card_text(&d.receiver);
        d.tenants = card_text(&d.tenants);
        d.sources = card_text(&d.sources);
        d.scheduled = d.scheduled.as_deref().map(card_text);
        for l in &mut d.lines {
            for s in [&mut l.tenant, &mut l.id, &mut l.title, &mut l.severity_label, &mut l.why, &mut l.source] {
                *s = card_text(s);
            }
            l.url = l.url.as_ref().map(|u| u.replace('(', "%28").replace(')', "%29").replace(' ', "%20"));
        }
        d
    }
}

/// The severity as people write it: `High`, `Medium`, …; unknown values keep their wire text.
pub fn severity_label(s: &Severity) -> String {
    match s {
        Severity::Informational => "Informational".into(),
        Severity::Low => "Low".into(),
        Severity::Medium => "Medium".into(),
        Severity::High => "High".into(),
        Severity::Unknown | Severity::UnknownFutureValue => "Unknown".into(),
        Severity::Other(o) => clip(o, 20),
    }
}

fn severity_color(s: &Severity) -> &'static str {
    match s {
        Severity::High => "attention",
        Severity::Medium => "warning",
        Severity::Low => "accent",
        _ => "default",
    }
}

fn severity_hex(s: &Severity) -> &'static str {
    match s {
        Severity::High => "#c50f1f",
        Severity::Medium => "#c87000",
        Severity::Low => "#0f6cbd",
        _ => "#616161",
    }
}

fn is_https(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| u.scheme() == "https")
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes text for Adaptive Card text, whose Markdown subset knows bold, italic, links and lists:
/// `\ * _ [ ] ( )` get a backslash, so do list markers at the start of a line (`- `, `+ `, `1.`), and
/// `{{` (the start of the card's `{{DATE(…)}}` functions) is broken with a zero-width space. Nothing in
/// the text can link either: `scheme://` and `www.` are broken with a zero-width space, and so is `<`
/// (autolinks, HTML); bidirectional controls, which reorder what follows them, become `�`.
pub fn card_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    // Only blanks so far on this line / only blanks and digits so far on this line.
    let (mut blank, mut numbered) = (true, true);
    for (i, c) in s.char_indices() {
        let rest = &s[i + c.len_utf8()..];
        match c {
            '\\' | '*' | '_' | '[' | ']' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            '-' | '+' if blank => {
                out.push('\\');
                out.push(c);
            }
            '.' if numbered && !blank => {
                out.push('\\');
                out.push(c);
            }
            '{' if out.ends_with('{') => {
                out.push('\u{200B}');
                out.push(c);
            }
            '\r' => {}
            // `<https://…>` and `<a@b.c>` are autolinks; a space after `<` makes them plain text.
            '<' => {
                out.push(c);
                out.push('\u{200B}');
            }
            // `https://…` is linked even bare: break the `://` so nothing in alert text links.
            ':' if rest.starts_with("//") && ends_with_scheme(&out) => {
                out.push(c);
                out.push('\u{200B}');
            }
            // `www.example.com` is linked too.
            '.' if out.len() >= 3 && out[out.len() - 3..].eq_ignore_ascii_case("www") && word_start(&out, 3) => {
                out.push('\u{200B}');
                out.push(c);
            }
            // Bidirectional overrides and isolates reorder what follows them (`exe.pdf` shown for
            // `fdp.exe`): shown as a replacement character, never applied.
            c if is_bidi_control(c) => out.push('\u{FFFD}'),
            _ => out.push(c),
        }
        (blank, numbered) = match c {
            '\n' => (true, true),
            ' ' | '\t' => (blank, numbered && blank),
            '0'..='9' => (false, numbered),
            _ => (false, false),
        };
    }
    out
}

/// True when `out` ends with a URL scheme (`https`, `ftp`, `ms-settings`) that starts a word.
fn ends_with_scheme(out: &str) -> bool {
    let scheme = out.chars().rev().take_while(|c| c.is_ascii_alphanumeric() || "+.-".contains(*c)).count();
    scheme > 0 && out[out.len() - scheme..].starts_with(|c: char| c.is_ascii_alphabetic()) && word_start(out, scheme)
}

/// True when the last `n` bytes of `out` are not glued to a letter or digit before them.
fn word_start(out: &str, n: usize) -> bool {
    !out[..out.len() - n].ends_with(|c: char| c.is_alphanumeric())
}

/// The Unicode controls that change the display order of text (LRE … RLO, LRI … PDI, LRM, RLM, ALM).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn card_text_neutralises_markdown_and_functions() {
        assert_eq!(card_text("[click](https://evil)"), "\\[click\\]\\(https:\u{200B}//evil\\)");
        assert_eq!(card_text("**bold** _it_"), "\\*\\*bold\\*\\* \\_it\\_");
        assert_eq!(card_text("- item\n1. one"), "\\- item\n1\\. one");
        assert_eq!(card_text("a-b 3.5 end."), "a-b 3.5 end.");
        assert_eq!(card_text("{{DATE(2017-02-14T06:08:39Z)}}"), "{\u{200B}{DATE\\(2017-02-14T06:08:39Z\\)}}");
        assert_eq!(card_text("Zoë <script>"), "Zoë <\u{200B}script>");
    }

    #[test]
    fn card_text_links_nothing_and_shows_bidi_controls() {
        let zw = '\u{200B}';
        assert_eq!(card_text("see https://evil.example/x"), format!("see https:{zw}//evil.example/x"));
        assert_eq!(card_text("<https://evil.example>"), format!("<{zw}https:{zw}//evil.example>"));
        assert_eq!(card_text("<it@evil.example>"), format!("<{zw}it@evil.example>"));
        assert_eq!(card_text("WWW.evil.example"), format!("WWW{zw}.evil.example"));
        assert_eq!(card_text("ms-settings://x"), format!("ms-settings:{zw}//x"));
        // Not links: left alone.
        assert_eq!(card_text("a:b, c: //d, awww.x, 10:30"), "a:b, c: //d, awww.x, 10:30");
        assert_eq!(card_text("invoice\u{202E}fdp.exe"), "invoice\u{FFFD}fdp.exe");
        assert_eq!(card_text("\u{2067}x\u{2069}\u{200F}"), "\u{FFFD}x\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("ééééé", 3), "éé…");
        assert_eq!(clip("abc", 3), "abc");
    }

    #[test]
    fn evidence_is_grouped_deduplicated_and_cut() {
        let ev: Vec<Value> = (0..30)
            .map(|i| serde_json::json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": format!("10.0.0.{}", i % 25)}))
            .collect();
        let alert = Alert::from_value(serde_json::json!({"id": "a", "evidence": ev})).unwrap();
        let mut v = View::new("t", "r", &alert);
        assert_eq!(v.evidence.ips.items.len(), 25);
        v.cut(5);
        assert_eq!(v.evidence.ips.items.len(), 5);
        assert_eq!(v.evidence.ips.more, 20);

        let (full, bare) = (View::new("t", "r", &alert), View::without_evidence("t", "r", &alert));
        assert!(full.has_evidence && !bare.has_evidence && bare.evidence.is_empty());
        let same = View { evidence: EvidenceView::default(), has_evidence: false, ..full };
        assert_eq!(
            serde_json::to_value(&same).unwrap(),
            serde_json::to_value(&bare).unwrap(),
            "only the evidence differs"
        );
    }

    #[test]
    fn internal_alerts_have_no_links_and_links_must_be_https() {
        let alert = Alert::from_value(
            serde_json::json!({"id": "secmon-deadman", "alertWebUrl": "https://security.microsoft.com/x"}),
        )
        .unwrap();
        assert_eq!(View::new("t", "r", &alert).alert_url, None);
        let alert = Alert::from_value(serde_json::json!({"id": "a", "alertWebUrl": "javascript:alert(1)", "incidentWebUrl": "https://security.microsoft.com/i"})).unwrap();
        let v = View::new("t", "r", &alert);
        assert_eq!(v.alert_url, None);
        assert_eq!(v.incident_url.as_deref(), Some("https://security.microsoft.com/i"));
    }
}
