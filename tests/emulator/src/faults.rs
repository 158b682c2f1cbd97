//! Per-test fault injection: a list of rules consulted before every request is routed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One injected fault: which requests it hits, how many times, and what happens to them.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Substring matched against the request's path and query (`/v1.0/security/alerts_v2?$top=5`).
    pub path_contains: String,
    /// HTTP method to match (case-insensitive); `None` matches every method.
    pub method: Option<String>,
    /// How many matching requests the fault hits before it is used up.
    pub times: usize,
    /// What the emulator does instead of (or before) answering normally.
    pub kind: FaultKind,
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status, an optional `Retry-After` (seconds) and an optional JSON body
    /// (default: a Graph-style error body).
    Status {
        /// The HTTP status code to return.
        status: u16,
        /// Value of the `Retry-After` header in seconds, if any.
        retry_after: Option<u64>,
        /// The JSON body to return; `None` gives `{"error":{"code":…,"message":…}}`.
        body: Option<serde_json::Value>,
    },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without writing a response.
    Drop,
    /// Accept the request and never answer or handle it (a broken proxy, an overloaded flow): the
    /// connection stays open until the client gives up.
    Hang,
    /// Answer 200 with `Content-Type: application/json` and a body that is not JSON.
    Garbage,
}

impl Fault {
    /// A fault hitting the first matching request of any method once.
    pub fn new(path_contains: impl Into<String>, kind: FaultKind) -> Fault {
        Fault { path_contains: path_contains.into(), method: None, times: 1, kind }
    }

    /// Restricts the fault to one HTTP method.
    pub fn method(mut self, method: impl Into<String>) -> Fault {
        self.method = Some(method.into());
        self
    }

    /// Sets how many matching requests the fault hits.
    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    /// A status fault (`429`, `503`, …) with an optional `Retry-After` in seconds.
    pub fn status(path_contains: impl Into<String>, status: u16, retry_after: Option<u64>) -> Fault {
        Fault::new(path_contains, FaultKind::Status { status, retry_after, body: None })
    }
}

/// A cloneable handle to the emulator's fault list.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Fault>>>,
}

impl Faults {
    /// Adds a fault; faults are consulted in the order they were pushed.
    pub fn push(&self, fault: Fault) {
        self.rules.lock().expect("faults lock").push(fault);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.rules.lock().expect("faults lock").clear();
    }

    /// Total hits left across all faults (0 once every fault is used up).
    pub fn remaining(&self) -> usize {
        self.rules.lock().expect("faults lock").iter().map(|f| f.times).sum()
    }

    /// Consumes one hit of the first fault matching this request, if any.
    pub(crate) fn take(&self, method: &str, path_and_query: &str) -> Option<FaultKind> {
        let mut rules = self.rules.lock().expect("faults lock");
        let idx = rules.iter().position(|f| {
            f.times > 0
                && path_and_query.contains(&f.path_contains)
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        rules[idx].times -= 1;
        let kind = rules[idx].kind.clone();
        if rules[idx].times == 0 {
            rules.remove(idx);
        }
        Some(kind)
    }
}
