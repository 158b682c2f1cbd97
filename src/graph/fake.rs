//! The one in-memory [`Graph`] for tests and benchmarks: alerts to read and update, mail and
//! comments recorded, subscriptions kept, every call logged, failures scripted per operation.
//!
//! Operation names, as logged by [`FakeGraph::calls`] (`"{operation} {tenant}"`) and as taken by
//! [`FakeGraph::fail`]: `list_alerts`, `next_alerts`, `get_alert`, `update_alert`, `add_comment`,
//! `send_mail`, `token_for`, and for subscriptions `create`, `renew`, `reauthorize`, `delete`, `list`. A failure
//! can also target one alert (`get_alert:{id}`, `update_alert:{id}`, …) or, for mail, one sending
//! tenant: `send_mail:{tenant}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{AlertPage, AlertQuery, AlertUpdate, Graph, GraphError, Retry};

/// An in-memory Graph (see the module docs).
#[derive(Default)]
pub struct FakeGraph {
    alerts: Mutex<BTreeMap<String, Value>>,
    mails: Mutex<Vec<(String, String, Value)>>,
    updates: Mutex<Vec<(String, AlertUpdate)>>,
    comments: Mutex<Vec<(String, String)>>,
    scopes: Mutex<Vec<(String, String)>>,
    subscriptions: Mutex<BTreeMap<String, (String, Value)>>,
    calls: Mutex<Vec<String>>,
    failing: Mutex<BTreeMap<String, Failing>>,
    next_id: Mutex<u32>,
    /// (tenant, user) → the groups the user is a member of.
    members: Mutex<BTreeMap<(String, String), Vec<String>>>,
}

enum Failing {
    /// Every call answers this status, `Some(n)`: only the next n calls.
    Status(u16, Option<u32>),
    /// The next calls answer these errors, one each.
    Errors(VecDeque<GraphError>),
}

/// A Graph error as the real client would report an HTTP `status`.
pub fn error(operation: &str, status: u16) -> GraphError {
    GraphError {
        operation: operation.to_string(),
        status: Some(status),
        code: None,
        message: format!("HTTP {status}"),
        retry: if status >= 500 || status == 429 || status == 408 { Retry::Retryable } else { Retry::Permanent },
    }
}

impl FakeGraph {
    /// An empty Graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an alert, by its `id`.
    pub fn put_alert(&self, alert: Value) {
        let id = alert["id"].as_str().expect("an alert has an id").to_string();
        self.alerts.lock().unwrap().insert(id, alert);
    }

    /// The alert as it is now.
    pub fn alert(&self, id: &str) -> Option<Value> {
        self.alerts.lock().unwrap().get(id).cloned()
    }

    /// Every `send_mail`: (tenant, sender, message body).
    pub fn mails(&self) -> Vec<(String, String, Value)> {
        self.mails.lock().unwrap().clone()
    }

    /// Every `update_alert`: (alert id, update).
    pub fn updates(&self) -> Vec<(String, AlertUpdate)> {
        self.updates.lock().unwrap().clone()
    }

    /// Every `add_comment`: (alert id, comment).
    pub fn comments(&self) -> Vec<(String, String)> {
        self.comments.lock().unwrap().clone()
    }

    /// Every token asked for a resource other than Graph: (tenant, scope).
    pub fn scopes(&self) -> Vec<(String, String)> {
        self.scopes.lock().unwrap().clone()
    }

    /// Every call, as `"{operation} {tenant}"`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes every call of `operation` fail with `status` until [`FakeGraph::heal`].
    pub fn fail(&self, operation: &str, status: u16) {
        self.failing.lock().unwrap().insert(operation.into(), Failing::Status(status, None));
    }

    /// Makes the next call of `operation` fail with `status`.
    pub fn fail_once(&self, operation: &str, status: u16) {
        self.failing.lock().unwrap().insert(operation.into(), Failing::Status(status, Some(1)));
    }

    /// Makes the next call of `operation` fail with `error` (after the errors already pushed).
    pub fn push_error(&self, operation: &str, error: GraphError) {
        let mut failing = self.failing.lock().unwrap();
        match failing.get_mut(operation) {
            Some(Failing::Errors(q)) => q.push_back(error),
            _ => {
                failing.insert(operation.into(), Failing::Errors(VecDeque::from([error])));
            }
        }
    }

    /// Makes `user` (object id or UPN) of `tenant` a member of `groups` (for `check_member_groups`).
    pub fn add_member(&self, tenant: &str, user: &str, groups: &[&str]) {
        let mut members = self.members.lock().unwrap();
        let entry = members.entry((tenant.to_string(), user.to_ascii_lowercase())).or_default();
        entry.extend(groups.iter().map(|g| g.to_string()));
    }

    /// No call fails any more.
    pub fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }

    /// A stored subscription.
    pub fn sub(&self, id: &str) -> Option<Value> {
        self.subscriptions.lock().unwrap().get(id).map(|(_, v)| v.clone())
    }

    /// The ids of `tenant`'s subscriptions.
    pub fn ids(&self, tenant: &str) -> Vec<String> {
        let subs = self.subscriptions.lock().unwrap();
        subs.iter().filter(|(_, (t, _))| t == tenant).map(|(id, _)| id.clone()).collect()
    }

    /// A subscription's `expirationDateTime`.
    pub fn expiry_of(&self, id: &str) -> chrono::DateTime<chrono::Utc> {
        let sub = self.sub(id).expect("the subscription exists");
        chrono::DateTime::parse_from_rfc3339(sub["expirationDateTime"].as_str().expect("an expiry"))
            .expect("an RFC 3339 expiry")
            .into()
    }

    /// Graph removing a subscription on its own.
    pub fn vanish(&self, id: &str) {
        self.subscriptions.lock().unwrap().remove(id);
    }

    /// A subscription someone else made (or a crash left behind).
    pub fn insert(&self, tenant: &str, body: Value) {
        let id = body["id"].as_str().expect("a subscription has an id").to_string();
        self.subscriptions.lock().unwrap().insert(id, (tenant.into(), body));
    }

    /// Logs the call and answers a scripted failure, if one is set for `operation` (or `operation:id`).
    fn check(&self, operation: &str, tenant: &str, id: Option<&str>) -> Result<(), GraphError> {
        self.calls.lock().unwrap().push(format!("{operation} {tenant}"));
        let mut failing = self.failing.lock().unwrap();
        let keys = [id.map(|id| format!("{operation}:{id}")), Some(operation.to_string())];
        for key in keys.into_iter().flatten() {
            let Some(f) = failing.get_mut(&key) else { continue };
            let found = match f {
                Failing::Status(status, None) => Some(error(&format!("{operation} for {tenant}"), *status)),
                Failing::Status(status, Some(n)) if *n > 0 => {
                    *n -= 1;
                    Some(error(&format!("{operation} for {tenant}"), *status))
                }
                Failing::Status(..) => None,
                Failing::Errors(q) => q.pop_front(),
            };
            if let Some(e) = found {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn not_found(operation: &str, id: &str) -> GraphError {
    GraphError {
        code: Some("ResourceNotFound".into()),
        message: "not found".into(),
        ..error(&format!("{operation} {id}"), 404)
    }
}

/// The token [`FakeGraph`] hands out for `tenant` and `scope` (registered with the redactor, as a real
/// one is).
pub fn fake_token(tenant: &str, scope: &str) -> String {
    format!("eyJ0eXAiOiJKV1Qi.{tenant}.{}", scope.replace(['/', ':'], "_"))
}

#[async_trait]
impl Graph for FakeGraph {
    async fn token_for(&self, tenant: &str, scope: &str) -> Result<String, GraphError> {
        self.check("token_for", tenant, None)?;
        self.scopes.lock().unwrap().push((tenant.to_string(), scope.to_string()));
        let token = fake_token(tenant, scope);
        crate::redact::global().add(&token);
        Ok(token)
    }
    async fn list_alerts(&self, tenant: &str, _query: &AlertQuery) -> Result<AlertPage, GraphError> {
        self.check("list_alerts", tenant, None)?;
        Ok(AlertPage::of_values(self.alerts.lock().unwrap().values().cloned().collect(), None))
    }
    async fn next_alerts(&self, tenant: &str, _next_link: &str) -> Result<AlertPage, GraphError> {
        self.check("next_alerts", tenant, None)?;
        Ok(AlertPage::default())
    }
    async fn get_alert(&self, tenant: &str, id: &str) -> Result<Value, GraphError> {
        self.check("get_alert", tenant, Some(id))?;
        self.alert(id).ok_or_else(|| not_found("get alert", id))
    }
    async fn update_alert(&self, tenant: &str, id: &str, update: &AlertUpdate) -> Result<Value, GraphError> {
        self.check("update_alert", tenant, Some(id))?;
        self.updates.lock().unwrap().push((id.to_string(), update.clone()));
        // Graph answers with the updated alert.
        let mut alerts = self.alerts.lock().unwrap();
        let alert = alerts.entry(id.to_string()).or_insert_with(|| json!({"id": id}));
        for (field, value) in [
            ("status", &update.status),
            ("classification", &update.classification),
            ("determination", &update.determination),
            ("assignedTo", &update.assigned_to),
        ] {
            if let Some(v) = value {
                alert[field] = json!(v);
            }
        }
        Ok(alert.clone())
    }
    async fn add_comment(&self, tenant: &str, id: &str, comment: &str) -> Result<(), GraphError> {
        self.check("add_comment", tenant, Some(id))?;
        self.comments.lock().unwrap().push((id.to_string(), comment.to_string()));
        Ok(())
    }
    async fn check_member_groups(
        &self,
        tenant: &str,
        user: &str,
        group_ids: &[String],
    ) -> Result<Vec<String>, GraphError> {
        self.check("check_member_groups", tenant, Some(user))?;
        let members = self.members.lock().unwrap();
        let of = members.get(&(tenant.to_string(), user.to_ascii_lowercase())).cloned().unwrap_or_default();
        Ok(group_ids.iter().filter(|g| of.iter().any(|m| m.eq_ignore_ascii_case(g))).cloned().collect())
    }
    async fn send_mail(&self, tenant: &str, sender: &str, body: &Value) -> Result<(), GraphError> {
        self.check("send_mail", tenant, Some(tenant))?;
        self.mails.lock().unwrap().push((tenant.to_string(), sender.to_string(), body.clone()));
        Ok(())
    }
    async fn create_subscription(&self, tenant: &str, body: &Value) -> Result<Value, GraphError> {
        self.check("create", tenant, None)?;
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("00000000-0000-0000-0000-{:012}", *n)
        };
        let mut sub = body.clone();
        sub["id"] = json!(id);
        self.subscriptions.lock().unwrap().insert(id, (tenant.into(), sub.clone()));
        Ok(sub)
    }
    async fn renew_subscription(&self, tenant: &str, id: &str, expiration: &str) -> Result<Value, GraphError> {
        self.check("renew", tenant, Some(id))?;
        let mut subs = self.subscriptions.lock().unwrap();
        let (_, sub) = subs.get_mut(id).ok_or_else(|| not_found("renew subscription", id))?;
        sub["expirationDateTime"] = json!(expiration);
        Ok(sub.clone())
    }
    async fn reauthorize_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError> {
        self.check("reauthorize", tenant, Some(id))?;
        let subs = self.subscriptions.lock().unwrap();
        subs.get(id).map(|_| ()).ok_or_else(|| not_found("reauthorize subscription", id))
    }
    async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError> {
        self.check("delete", tenant, Some(id))?;
        self.subscriptions.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Value>, GraphError> {
        self.check("list", tenant, None)?;
        let subs = self.subscriptions.lock().unwrap();
        Ok(subs.values().filter(|(t, _)| t == tenant).map(|(_, v)| v.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripted_failures_come_in_order_and_heal() {
        let g = FakeGraph::new();
        g.put_alert(json!({"id": "a", "status": "new"}));
        g.fail("get_alert:unavailable", 503);
        assert_eq!(g.get_alert("t", "unavailable").await.unwrap_err().retry, Retry::Retryable);
        assert_eq!(g.get_alert("t", "missing").await.unwrap_err().status, Some(404));
        assert_eq!(g.get_alert("t", "a").await.unwrap()["status"], "new");
        g.fail_once("send_mail", 429);
        assert!(g.send_mail("t", "s", &json!({})).await.is_err());
        assert!(g.send_mail("t", "s", &json!({})).await.is_ok());
        g.push_error("add_comment", error("comment", 400));
        assert_eq!(g.add_comment("t", "a", "x").await.unwrap_err().retry, Retry::Permanent);
        let updated = g
            .update_alert("t", "a", &AlertUpdate { status: Some("resolved".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(updated["status"], "resolved");
        assert_eq!(g.alert("a").unwrap()["status"], "resolved");
        g.fail("create", 500);
        assert!(g.create_subscription("t", &json!({})).await.is_err());
        g.heal();
        let sub = g.create_subscription("t", &json!({"resource": "r"})).await.unwrap();
        assert_eq!(g.ids("t"), [sub["id"].as_str().unwrap()]);
        assert_eq!(g.calls()[0], "get_alert t");
        assert_eq!(g.mails().len(), 1);
        assert_eq!(g.comments(), []);
    }
}
