//! How the functions are invoked: [`azure`] (the Functions custom-handler protocol) and [`standalone`]
//! (one process with a scheduler, an HTTP server and a queue worker). Both adapt their trigger to the
//! same library calls.

use std::collections::BTreeMap;

pub mod azure;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod standalone;

/// An HTTP request as the functions see it, whatever carried it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Method, upper case.
    pub method: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// Raw body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// First query parameter called `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An HTTP response from a function.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
    /// Extra response headers (`X-Content-Type-Options`, `Retry-After`), names as sent.
    pub headers: Vec<(&'static str, String)>,
}

impl HttpResponse {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: body.into(), headers: Vec::new() }
    }

    /// A JSON response.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self { status, content_type: "application/json", body: body.to_string(), headers: Vec::new() }
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The HTTP functions and their routes (`/api/<name>` on the host and in standalone mode).
pub const HTTP_FUNCTIONS: &[&str] = &["graph-webhook", "graph-lifecycle", "doorbell", "health"];
