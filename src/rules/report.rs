//! The replay report as one self-contained HTML page: inline CSS and inline SVG charts, no script, no
//! external resource (its Content-Security-Policy forbids loading any), so it opens offline and can be
//! mailed or attached to a change ticket. Pure: a [`ReplayReport`] in, a string out.
//!
//! - `svg#matches-per-day`: would-close count per day of arrival, one line per rule;
//! - `svg#verdict-mix`: per rule, what analysts said about the alerts it would close;
//! - `table#rules`: the per-rule table (one `tr[data-rule]` per rule), then the true-positive hits,
//!   the overlaps and the blocked matches.
//!
//! Every text that comes from Graph or the config is HTML-escaped.

use std::fmt::Write;

use chrono::{Duration, NaiveDate};

use super::replay::{ReplayReport, RuleSummary};

const TEMPLATE: &str = include_str!("report.html");
/// Series colours, reused in order.
const COLOURS: &[&str] = &["#0969da", "#bf3989", "#8250df", "#1a7f37", "#bc4c00", "#0e7490", "#9a6700", "#57606a"];
const TP: &str = "#b3261e";
const BENIGN: &str = "#1a7f37";
const UNRESOLVED: &str = "#8c959f";
/// Rows listed in a detail table before "and N more".
const MAX_ROWS: usize = 200;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // So no text from Graph can spell a template placeholder.
            '{' => out.push_str("&#123;"),
            '}' => out.push_str("&#125;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// Every UTC day of the replayed window.
fn days(report: &ReplayReport) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = report.since.date_naive();
    let last = (report.until - Duration::nanoseconds(1)).date_naive();
    while d <= last {
        out.push(d);
        d += Duration::days(1);
    }
    out
}

fn chart_days(report: &ReplayReport) -> String {
    let days = days(report);
    let (w, h, left, right, top, bottom) = (960.0, 280.0, 44.0, 190.0, 12.0, 44.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let key = |d: &NaiveDate| d.format("%Y-%m-%d").to_string();
    let max = report.rules.iter().flat_map(|r| r.per_day.values().copied()).max().unwrap_or(0).max(1);
    let x = |i: usize| left + if days.len() > 1 { plot_w * i as f64 / (days.len() - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: usize| top + plot_h - plot_h * v as f64 / max as f64;
    let mut s = format!(
        r#"<svg id="matches-per-day" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="Would close per day per rule">"#
    );
    for v in [0, max / 2, max] {
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#d1d9e0"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#59636e">{v}</text>"##,
            left + plot_w,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let step = days.len().div_ceil(10).max(1);
    for (i, d) in days.iter().enumerate().step_by(step) {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#59636e">{}</text>"##,
            x(i),
            h - bottom + 18.0,
            d.format("%m-%d")
        );
    }
    for (r, rule) in report.rules.iter().enumerate() {
        let points: Vec<String> = days
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{:.1},{:.1}", x(i), y(rule.per_day.get(&key(d)).copied().unwrap_or(0))))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-rule="{}" fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            esc(&rule.rule),
            colour(r),
            points.join(" ")
        );
        let ly = top + 16.0 * r as f64 + 8.0;
        let _ = write!(
            s,
            r##"<rect x="{}" y="{:.1}" width="12" height="12" rx="2" fill="{}"/><text x="{}" y="{:.1}" font-size="12" fill="#1f2328">{} ({})</text>"##,
            left + plot_w + 16.0,
            ly - 10.0,
            colour(r),
            left + plot_w + 34.0,
            ly,
            esc(&truncate(&rule.rule, 20)),
            rule.would_close
        );
    }
    s.push_str("</svg>");
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

fn chart_verdicts(report: &ReplayReport) -> String {
    let (w, row, label, bar) = (960.0, 26.0, 220.0, 560.0);
    let h = row * report.rules.len().max(1) as f64 + 30.0;
    let mut s = format!(
        r#"<svg id="verdict-mix" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="Verdict mix per rule">"#
    );
    for (i, r) in report.rules.iter().enumerate() {
        let y = row * i as f64 + 4.0;
        let _ = write!(
            s,
            r##"<text x="0" y="{:.1}" font-size="12" fill="#1f2328">{}</text>"##,
            y + 14.0,
            esc(&truncate(&r.rule, 30))
        );
        let total = r.would_close;
        if total == 0 {
            let _ = write!(
                s,
                r##"<text x="{label}" y="{:.1}" font-size="12" fill="#59636e">would close nothing</text>"##,
                y + 14.0
            );
            continue;
        }
        let mut x = label;
        for (n, fill, class) in [
            (r.analyst_true_positive, TP, "seg-tp"),
            (r.analyst_benign, BENIGN, "seg-benign"),
            (r.unresolved, UNRESOLVED, "seg-unresolved"),
        ] {
            if n == 0 {
                continue;
            }
            let width = bar * n as f64 / total as f64;
            let _ = write!(
                s,
                r#"<rect class="{class}" data-rule="{}" x="{x:.1}" y="{y:.1}" width="{width:.1}" height="18" fill="{fill}"/>"#,
                esc(&r.rule)
            );
            x += width;
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#1f2328">{} TP · {} benign · {} unresolved</text>"##,
            label + bar + 10.0,
            y + 14.0,
            r.analyst_true_positive,
            r.analyst_benign,
            r.unresolved
        );
    }
    let ly = h - 8.0;
    for (i, (fill, name)) in
        [(TP, "true positive"), (BENIGN, "benign (analyst)"), (UNRESOLVED, "unresolved")].iter().enumerate()
    {
        let lx = label + 150.0 * i as f64;
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{:.1}" width="12" height="12" rx="2" fill="{fill}"/><text x="{}" y="{ly:.1}" font-size="12" fill="#1f2328">{name}</text>"##,
            ly - 10.0,
            lx + 16.0
        );
    }
    s.push_str("</svg>");
    s
}

fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "—".into();
    }
    map.iter().map(|(k, n)| format!("{} {n}", esc(k))).collect::<Vec<_>>().join("<br>")
}

fn rules_table(rules: &[RuleSummary]) -> String {
    let mut s = String::from(
        r#"<table id="rules"><thead><tr><th>rule</th><th>mode</th><th>would close</th><th>analyst true positive</th><th>analyst benign</th><th>unresolved</th><th>blocked</th><th>by severity</th><th>by source</th><th>errors</th></tr></thead><tbody>"#,
    );
    for r in rules {
        let mode = serde_json::to_value(r.mode).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let tp_class = if r.analyst_true_positive > 0 { "n tp" } else { "n ok" };
        let _ = write!(
            s,
            r#"<tr data-rule="{id}" class="mode-{mode}"><td><code>{id}</code><br><span class="muted">{hash}</span></td><td>{mode}</td><td class="n">{}</td><td class="{tp_class}">{}</td><td class="n">{}</td><td class="n">{}{}</td><td class="n">{}<br><span class="muted">{}</span></td><td>{}</td><td>{}</td><td class="n">{}</td></tr>"#,
            r.would_close,
            r.analyst_true_positive,
            r.analyst_benign,
            r.unresolved,
            if r.closed_by_secmon > 0 { format!(" ({} closed by secmon)", r.closed_by_secmon) } else { String::new() },
            r.blocked,
            counts(&r.blocked_reasons),
            counts(&r.by_severity),
            counts(&r.by_source),
            r.errors,
            id = esc(&r.rule),
            hash = esc(&r.hash[..12.min(r.hash.len())]),
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn hits(rules: &[RuleSummary]) -> String {
    let all: Vec<_> = rules.iter().flat_map(|r| r.true_positive_hits.iter().map(move |h| (r, h))).collect();
    if all.is_empty() {
        return r#"<p class="ok" id="hits-none">None: no rule would have closed an alert analysts resolved as truePositive.</p>"#
            .into();
    }
    let mut s = String::from(
        r#"<table id="hits"><thead><tr><th>rule</th><th>alert</th><th>title</th><th>arrived</th><th>severity</th><th>determination</th></tr></thead><tbody>"#,
    );
    for (r, h) in all.iter().take(MAX_ROWS) {
        let id = match &h.url {
            Some(u) if u.starts_with("https://") => format!(r#"<a href="{}">{}</a>"#, esc(u), esc(&h.id)),
            _ => esc(&h.id),
        };
        let _ = write!(
            s,
            r#"<tr class="tp"><td><code>{}</code></td><td><code>{id}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&r.rule),
            esc(&h.title),
            esc(&h.created),
            esc(&h.severity),
            esc(&h.determination)
        );
    }
    s.push_str("</tbody></table>");
    more(&mut s, all.len());
    s
}

fn more(s: &mut String, n: usize) {
    if n > MAX_ROWS {
        let _ = write!(s, r#"<p class="muted">and {} more (all in the JSON lines)</p>"#, n - MAX_ROWS);
    }
}

fn overlaps(report: &ReplayReport) -> String {
    if report.overlaps.is_empty() {
        return r#"<p class="muted">No alert is matched by two rules.</p>"#.into();
    }
    let mut s = String::from(
        r#"<table id="overlaps"><thead><tr><th>rules</th><th>alerts both match</th><th>production applies</th><th>alerts</th></tr></thead><tbody>"#,
    );
    for o in &report.overlaps {
        let ids: Vec<String> = o.alert_ids.iter().take(20).map(|i| esc(i)).collect();
        let _ = write!(
            s,
            r#"<tr><td><code>{}</code> and <code>{}</code></td><td class="n">{}</td><td><code>{}</code> (first in the file)</td><td><code>{}</code>{}</td></tr>"#,
            esc(&o.rules[0]),
            esc(&o.rules[1]),
            o.alerts,
            esc(&o.first_match),
            ids.join(" "),
            if o.alert_ids.len() > 20 { " …" } else { "" }
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn blocked(rules: &[RuleSummary]) -> String {
    let all: Vec<_> = rules.iter().flat_map(|r| r.blocked_alerts.iter().map(move |b| (r, b))).collect();
    if all.is_empty() {
        return r#"<p class="muted">No match was stopped by a guardrail.</p>"#.into();
    }
    let mut s = String::from(
        r#"<table id="blocked"><thead><tr><th>rule</th><th>alert</th><th>why not closed</th></tr></thead><tbody>"#,
    );
    for (r, b) in all.iter().take(MAX_ROWS) {
        let _ = write!(
            s,
            r#"<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>"#,
            esc(&r.rule),
            esc(&b.id),
            esc(&b.reason)
        );
    }
    s.push_str("</tbody></table>");
    more(&mut s, all.len());
    s
}

fn cards(report: &ReplayReport) -> String {
    let v = |k: &str| report.verdicts.get(k).copied().unwrap_or(0);
    let tp_hits: usize = report.rules.iter().map(|r| r.analyst_true_positive).sum();
    [
        ("alerts judged", report.alerts.to_string(), ""),
        ("close rules", report.rules.len().to_string(), ""),
        ("analyst true positives", v("true_positive").to_string(), ""),
        ("analyst benign", v("benign").to_string(), ""),
        ("unresolved", v("unresolved").to_string(), ""),
        ("true positives a rule would hide", tp_hits.to_string(), if tp_hits > 0 { " tp" } else { " ok" }),
    ]
    .iter()
    .map(|(name, n, class)| format!(r#"<div class="card{class}"><b>{n}</b>{name}</div>"#))
    .collect()
}

/// The whole page.
pub fn render(report: &ReplayReport) -> String {
    let title = format!("Replay of close rules on {}", report.tenant);
    let subtitle = format!(
        "Alerts created from {} to {} (UTC), {} judged, {} skipped",
        report.since.format("%Y-%m-%d %H:%M"),
        report.until.format("%Y-%m-%d %H:%M"),
        report.alerts,
        report.skipped
    );
    // Each placeholder is replaced once; inserted text cannot spell one (`esc` escapes braces).
    TEMPLATE
        .replace("{{title}}", &esc(&title))
        .replace("{{subtitle}}", &esc(&subtitle))
        .replacen("{{cards}}", &cards(report), 1)
        .replacen("{{chart_days}}", &chart_days(report), 1)
        .replacen("{{chart_verdicts}}", &chart_verdicts(report), 1)
        .replacen("{{rules_table}}", &rules_table(&report.rules), 1)
        .replacen("{{hits}}", &hits(&report.rules), 1)
        .replacen("{{overlaps}}", &overlaps(report), 1)
        .replacen("{{blocked}}", &blocked(&report.rules), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_graph_cannot_become_markup() {
        assert_eq!(esc(r#"<script>"x"&'y'</script>"#), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;");
    }
}
