//! HTTP requests and responses as the HTTP stages see them, whatever carried them (the Functions
//! host's invocation, Lambda's Function URL, the standalone server): the one router in
//! (`functions::http`, a layer above) converts to and from these.

use std::collections::BTreeMap;

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
    /// Extra response headers, names as sent; one of [`RESPONSE_HEADERS`].
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

/// The headers an HTTP function may set besides `Content-Type`: the hosts that carry a response in
/// their own envelope (the Functions host's `Outputs.res`) copy exactly these.
pub const RESPONSE_HEADERS: [&str; 9] = [
    "Retry-After",
    "Allow",
    "X-Content-Type-Options",
    "Cache-Control",
    // The triage page's: redirects, its cookies and its browser protections.
    "Location",
    "Set-Cookie",
    "Referrer-Policy",
    "X-Frame-Options",
    "Content-Security-Policy",
];
