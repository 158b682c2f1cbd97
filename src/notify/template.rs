//! The templates behind every notification: built-in ones for the card, the e-mail and the webhook
//! body, and a receiver's own overrides, compiled at load and run with a fuel limit.
//!
//! Escaping follows the template's name, so a user's override gets it too: `*.json` templates write
//! every value as JSON, `*.html` templates HTML-escape every value, `*.txt` templates write text as is
//! (used for the e-mail subject, which Graph carries as a JSON string). Adaptive Card Markdown is
//! escaped in the values themselves ([`super::view::View::for_card`]).

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The built-in Adaptive Card (the `content` of the Teams message).
pub const CARD: &str = include_str!("templates/card.json");
/// The built-in Adaptive Card of a digest (alerts that waited for a posting budget).
pub const DIGEST_CARD: &str = include_str!("templates/digest.json");
/// The built-in body of a digest mail.
pub const DIGEST_EMAIL: &str = include_str!("templates/digest.html");
/// The built-in e-mail body.
pub const EMAIL: &str = include_str!("templates/email.html");
/// The built-in e-mail subject.
pub const SUBJECT: &str = include_str!("templates/subject.txt");
/// The built-in webhook body.
pub const WEBHOOK: &str = include_str!("templates/webhook.json");
/// A documented sample alert that every template is rendered with at load, so a template that fails at
/// runtime is a config error, not a surprise at 3 a.m.
pub const SAMPLE_ALERT: &str = include_str!("templates/sample-alert.json");

/// The most work one rendering may do; the built-in card uses a few thousand units.
pub const FUEL: u64 = 200_000;

/// A set of compiled templates, each under a name such as `builtin/card.json` or `soc/card.json`.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An environment holding the built-in templates.
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        // A typo in a variable name renders as empty rather than failing a notification; the load-time
        // rendering with the sample alert still catches syntax errors and unknown filters.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_recursion_limit(50);
        for (name, source) in [
            ("builtin/card.json", CARD),
            ("builtin/digest.json", DIGEST_CARD),
            ("builtin/digest.html", DIGEST_EMAIL),
            ("builtin/email.html", EMAIL),
            ("builtin/subject.txt", SUBJECT),
            ("builtin/webhook.json", WEBHOOK),
        ] {
            env.add_template(name, source).expect("built-in templates compile");
        }
        Templates { env }
    }

    /// Compiles a user template under `name`; the error says what and on which line.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env.add_template_owned(name.to_string(), source.to_string()).map_err(describe)
    }

    /// Renders the template `name` with `ctx`.
    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String, String> {
        self.try_render(name, ctx).map_err(|e| match e {
            RenderError::OutOfFuel(m) | RenderError::Failed(m) => m,
        })
    }

    /// Renders the template `name` with `ctx`, telling running out of [`FUEL`] (less to show may fit)
    /// from every other error.
    pub fn try_render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String, RenderError> {
        let failed = |e: minijinja::Error| {
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                RenderError::OutOfFuel(describe(e))
            } else {
                RenderError::Failed(describe(e))
            }
        };
        let template = self.env.get_template(name).map_err(failed)?;
        template.render(minijinja::Value::from(minijinja::value::Serde(ctx))).map_err(failed)
    }
}

/// Why a rendering failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The rendering needed more than [`FUEL`]: the same template with less to show may fit.
    OutOfFuel(String),
    /// Anything else (a template error): showing less does not help.
    Failed(String),
}

/// A template error with its line and the chain of causes.
fn describe(e: minijinja::Error) -> String {
    let mut text = match (e.name(), e.line()) {
        (Some(name), Some(line)) => format!("{} (template {name}, line {line})", e.detail().unwrap_or("error")),
        _ => e.to_string(),
    };
    if e.detail().is_none() {
        text = format!("{}: {text}", e.kind());
    }
    crate::redact::redact(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_and_runaway_templates_are_errors() {
        let mut t = Templates::new();
        let err = t.add("x/card.json", "{\n  {% if %}\n}").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        t.add("x/loop.json", "{% for a in range(1000) %}{% for b in range(1000) %}{{ a }}{% endfor %}{% endfor %}")
            .unwrap();
        let err = t.render("x/loop.json", &serde_json::json!({})).unwrap_err();
        assert!(err.to_lowercase().contains("fuel"), "{err}");
        assert!(matches!(t.try_render("x/loop.json", &serde_json::json!({})), Err(RenderError::OutOfFuel(_))));
        t.add("x/bad.json", "{{ 1 + [] }}").unwrap();
        assert!(matches!(t.try_render("x/bad.json", &serde_json::json!({})), Err(RenderError::Failed(_))));
    }

    #[test]
    fn escaping_follows_the_template_kind() {
        let mut t = Templates::new();
        t.add("x/a.html", "<p>{{ s }}</p>").unwrap();
        t.add("x/a.json", "{\"s\": {{ s }}}").unwrap();
        let ctx = serde_json::json!({"s": "<script>\"x\"</script>"});
        assert_eq!(t.render("x/a.html", &ctx).unwrap(), "<p>&lt;script&gt;&quot;x&quot;&lt;&#x2f;script&gt;</p>");
        let json: serde_json::Value = serde_json::from_str(&t.render("x/a.json", &ctx).unwrap()).unwrap();
        assert_eq!(json["s"], "<script>\"x\"</script>");
    }
}
