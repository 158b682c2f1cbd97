//! Structured logs: one JSON object per line on stdout for the Functions host and Application
//! Insights (text for people in standalone mode), secrets masked on the way out, and the lines of one
//! invocation collected for the `Logs` array of its answer.
//!
//! Why both stdout and `Logs`: the host puts `Logs` on the invocation's own trace in Application
//! Insights (all at Information level), but drops them when the answer is not 2xx, and on Flex
//! Consumption stdout is captured as traces too. The invocation id is a field of the `invocation`
//! span that [`crate::host::azure::router`] opens, so every JSON line logged inside it carries
//! `span.invocation_id`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`secmon serve`; what Application Insights parses).
    Json,
    /// Human-readable lines (the CLI and standalone mode).
    Text,
}

/// What is logged when `RUST_LOG` is unset: secmon at info, the HTTP and Azure SDK crates only
/// when something is wrong (their request lines are noise, and may carry URLs).
pub const DEFAULT_FILTER: &str =
    "info,azure_core=warn,azure_identity=warn,azure_storage_blob=warn,azure_storage_queue=warn,hyper=warn,reqwest=warn";

/// Installs the global subscriber: `format` on stdout (overridden by `SECMON_LOG_FORMAT=json|text`),
/// filtered by `RUST_LOG` or [`DEFAULT_FILTER`], plus invocation capture. A second call is a no-op.
pub fn init(format: Format) {
    let _ = tracing::subscriber::set_global_default(subscriber(chosen(format), Redacting(std::io::stdout)));
}

/// The format `SECMON_LOG_FORMAT` asks for (`json` or `text`), else `default`: every command honours
/// it, whatever it writes by default.
pub fn chosen(default: Format) -> Format {
    match std::env::var("SECMON_LOG_FORMAT").ok().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some("") | None => default,
        Some(other) => {
            eprintln!("SECMON_LOG_FORMAT={other:?} is not json or text; logging as {default:?}");
            default
        }
    }
}

/// The subscriber [`init`] installs, writing to `writer` (tests pass a buffer).
pub fn subscriber<W>(format: Format, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_with_default(format, writer, DEFAULT_FILTER)
}

/// As [`subscriber`], with another filter when `RUST_LOG` is unset (the demo shows warnings only).
pub fn subscriber_with_default<W>(format: Format, writer: W, default_filter: &str) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let base = Registry::default().with(filter).with(Capture);
    match format {
        Format::Json => Box::new(
            base.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
        Format::Text => Box::new(base.with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer))),
    }
}

/// A writer that masks secrets ([`crate::redact::redact`]) in every line before it leaves the process.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

/// The writer [`Redacting`] hands out for one event.
#[derive(Debug)]
pub struct RedactingWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call, so a secret is never split across calls.
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(crate::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

tokio::task_local! {
    static CAPTURED: RefCell<Vec<String>>;
}

/// Runs `f` and returns, with its output, the lines (info and above) it logged on this task, for
/// the invocation's `Logs`. Without [`init`] (or another subscriber with this module's capture
/// layer) nothing is collected.
pub async fn capture<F: Future>(f: F) -> (F::Output, Vec<String>) {
    CAPTURED
        .scope(RefCell::new(Vec::new()), async move {
            let out = f.await;
            let lines = CAPTURED.with(|c| c.take());
            (out, lines)
        })
        .await
}

/// The layer that copies events into the [`capture`] buffer of the current task, if any.
struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        if *event.metadata().level() > Level::INFO {
            return;
        }
        let _ = CAPTURED.try_with(|buf| {
            let mut line = Line::default();
            event.record(&mut line);
            let text = format!("{} {}{}", event.metadata().level(), line.message, line.fields);
            buf.borrow_mut().push(crate::redact::redact(&text));
        });
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    pub(crate) struct Buffer(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        pub(crate) fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect()
        }
    }

    #[tokio::test]
    async fn json_lines_carry_the_invocation_id_and_no_secrets() {
        let buf = Buffer::default();
        let sub = subscriber(Format::Json, Redacting(buf.clone()));
        let _guard = tracing::subscriber::set_default(sub);
        let span = tracing::info_span!("invocation", function = "respond", invocation_id = "inv-42");
        let ((), logs) = capture(async {
            let _e = span.enter();
            tracing::info!(tenant = "contoso", "posted to https://x.logic.azure.com/wf?api-version=1&sig=SECRETSIG");
            tracing::debug!("below the capture level");
        })
        .await;
        let lines = buf.lines();
        let line = lines.iter().find(|l| l["tenant"] == "contoso").expect("the event is logged");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["invocation_id"], "inv-42");
        assert_eq!(line["span"]["function"], "respond");
        let message = line["message"].as_str().unwrap();
        assert!(message.contains("sig=***") && !message.contains("SECRETSIG"), "{message}");
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].starts_with("INFO posted to") && logs[0].contains("tenant=contoso"), "{logs:?}");
        assert!(!logs[0].contains("SECRETSIG"));
    }

    #[tokio::test]
    async fn nothing_is_captured_outside_an_invocation() {
        let buf = Buffer::default();
        let _guard = tracing::subscriber::set_default(subscriber(Format::Text, Redacting(buf.clone())));
        tracing::warn!("outside");
        let ((), logs) = capture(async { tracing::warn!("inside") }).await;
        assert_eq!(logs, vec!["WARN inside".to_string()]);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("outside") && text.contains("inside"), "{text}");
    }
}
