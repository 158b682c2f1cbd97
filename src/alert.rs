//! The Microsoft Graph `alerts_v2` model (`microsoft.graph.security.alert`).
//!
//! Graph adds enum members and evidence types without notice, and live payloads carry `null` where the
//! docs promise values. So the model is tolerant by construction:
//! - every field but `id` is optional;
//! - every enum has a catch-all variant that keeps the string it did not know;
//! - evidence is an enum on `@odata.type` with a catch-all that keeps the raw JSON, typed on first use;
//! - unknown properties are kept in [`Alert::other`], so an alert round-trips to JSON without loss;
//! - a property whose JSON type is not the documented one (a number where a string was promised) is
//!   moved into [`Alert::other`] by [`Alert::from_value`] instead of failing the whole alert.
//!
//! Timestamps keep the exact text Graph sent ([`Timestamp`]), because Graph's seven fractional digits
//! would not survive a trip through `chrono`'s formatter, and the poller's dedupe key is that text.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Declares a Graph enum: known wire values plus `Other(String)` for anything new.
macro_rules! graph_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[doc = concat!("`", $wire, "`")]
                $variant,
            )+
            /// A value this version of secmon does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// The value as Graph writes it on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(s) => s,
                }
            }

            /// Every documented wire value, in Graph's order.
            pub const KNOWN: &'static [&'static str] = &[$($wire),+];
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(match s {
                    $($wire => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(s.parse().expect("infallible"))
            }
        }
    };
}

graph_enum!(
    /// `alertStatus`: the alert's place in the analyst workflow.
    AlertStatus {
        Unknown => "unknown", New => "new", InProgress => "inProgress", Resolved => "resolved",
        UnknownFutureValue => "unknownFutureValue",
    }
);

graph_enum!(
    /// `alertSeverity`.
    Severity {
        Unknown => "unknown", Informational => "informational", Low => "low", Medium => "medium",
        High => "high", UnknownFutureValue => "unknownFutureValue",
    }
);

impl Severity {
    /// Rank for comparisons (`max_severity`, "severity rose"); unknown values rank lowest but one,
    /// so that a rule's `max_severity` never lets an alert of unknown severity through unexamined.
    pub fn rank(&self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            // An unknown severity might be anything: treat it as the highest for safety.
            Severity::Unknown | Severity::UnknownFutureValue | Severity::Other(_) => 5,
        }
    }
}

graph_enum!(
    /// `alertClassification`. Note: `benignPositive` (in an old doc) is rejected by the service.
    Classification {
        Unknown => "unknown", FalsePositive => "falsePositive", TruePositive => "truePositive",
        InformationalExpectedActivity => "informationalExpectedActivity",
        UnknownFutureValue => "unknownFutureValue",
    }
);

graph_enum!(
    /// `alertDetermination`, as sent on the wire (v1.0 metadata, not the stale doc names).
    Determination {
        Unknown => "unknown", Apt => "apt", Malware => "malware", SecurityPersonnel => "securityPersonnel",
        SecurityTesting => "securityTesting", UnwantedSoftware => "unwantedSoftware", Other_ => "other",
        MultiStagedAttack => "multiStagedAttack", CompromisedAccount => "compromisedAccount",
        Phishing => "phishing", MaliciousUserActivity => "maliciousUserActivity",
        NotMalicious => "notMalicious", NotEnoughDataToValidate => "notEnoughDataToValidate",
        ConfirmedActivity => "confirmedActivity", LineOfBusinessApplication => "lineOfBusinessApplication",
        UnknownFutureValue => "unknownFutureValue",
    }
);

graph_enum!(
    /// `serviceSource`: the product that raised the alert (evolvable).
    ServiceSource {
        Unknown => "unknown", MicrosoftDefenderForEndpoint => "microsoftDefenderForEndpoint",
        MicrosoftDefenderForIdentity => "microsoftDefenderForIdentity",
        MicrosoftDefenderForCloudApps => "microsoftDefenderForCloudApps",
        MicrosoftDefenderForOffice365 => "microsoftDefenderForOffice365",
        Microsoft365Defender => "microsoft365Defender", AzureAdIdentityProtection => "azureAdIdentityProtection",
        MicrosoftAppGovernance => "microsoftAppGovernance", DataLossPrevention => "dataLossPrevention",
        UnknownFutureValue => "unknownFutureValue", MicrosoftDefenderForCloud => "microsoftDefenderForCloud",
        MicrosoftSentinel => "microsoftSentinel",
    }
);

graph_enum!(
    /// `detectionSource`: the detection technology (evolvable).
    DetectionSource {
        Unknown => "unknown", MicrosoftDefenderForEndpoint => "microsoftDefenderForEndpoint",
        Antivirus => "antivirus", SmartScreen => "smartScreen", CustomTi => "customTi",
        MicrosoftDefenderForOffice365 => "microsoftDefenderForOffice365",
        AutomatedInvestigation => "automatedInvestigation", MicrosoftThreatExperts => "microsoftThreatExperts",
        CustomDetection => "customDetection", MicrosoftDefenderForIdentity => "microsoftDefenderForIdentity",
        CloudAppSecurity => "cloudAppSecurity", Microsoft365Defender => "microsoft365Defender",
        AzureAdIdentityProtection => "azureAdIdentityProtection", Manual => "manual",
        MicrosoftDataLossPrevention => "microsoftDataLossPrevention",
        AppGovernancePolicy => "appGovernancePolicy", AppGovernanceDetection => "appGovernanceDetection",
        UnknownFutureValue => "unknownFutureValue", MicrosoftDefenderForCloud => "microsoftDefenderForCloud",
        MicrosoftSentinel => "microsoftSentinel", NrtAlerts => "nrtAlerts", ScheduledAlerts => "scheduledAlerts",
        BuiltInMl => "builtInMl",
    }
);

graph_enum!(
    /// `evidenceVerdict`.
    Verdict {
        Unknown => "unknown", Suspicious => "suspicious", Malicious => "malicious",
        NoThreatsFound => "noThreatsFound", UnknownFutureValue => "unknownFutureValue",
    }
);

graph_enum!(
    /// `evidenceRemediationStatus` (evolvable).
    RemediationStatus {
        None => "none", Remediated => "remediated", Prevented => "prevented", Blocked => "blocked",
        NotFound => "notFound", UnknownFutureValue => "unknownFutureValue", Active => "active",
        PendingApproval => "pendingApproval", Declined => "declined", Unremediated => "unremediated",
        Running => "running", PartiallyRemediated => "partiallyRemediated",
    }
);

graph_enum!(
    /// `evidenceRole`.
    EvidenceRole {
        Unknown => "unknown", Contextual => "contextual", Scanned => "scanned", Source => "source",
        Destination => "destination", Created => "created", Added => "added", Compromised => "compromised",
        Edited => "edited", Attacked => "attacked", Attacker => "attacker",
        CommandAndControl => "commandAndControl", Loaded => "loaded", Suspicious => "suspicious",
        PolicyViolator => "policyViolator", UnknownFutureValue => "unknownFutureValue",
    }
);

/// A Graph `DateTimeOffset`: the exact text Graph sent, and the instant it denotes.
///
/// Equality and ordering are by instant. Text that does not parse as RFC 3339 is an error at
/// deserialization (so [`Alert::from_value`] keeps it in `other` rather than guessing).
#[derive(Debug, Clone)]
pub struct Timestamp {
    text: String,
    instant: DateTime<Utc>,
}

impl Timestamp {
    /// Parses RFC 3339 text such as `2021-04-27T12:19:27.7211305Z`.
    pub fn parse(text: &str) -> Result<Self, chrono::ParseError> {
        let instant = DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc);
        Ok(Self { text: text.to_string(), instant })
    }

    /// A timestamp for an instant, written the way Graph writes them (UTC, `Z`).
    pub fn from_instant(instant: DateTime<Utc>) -> Self {
        Self { text: instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true), instant }
    }

    /// The instant.
    pub fn instant(&self) -> DateTime<Utc> {
        self.instant
    }

    /// The text exactly as Graph sent it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.instant == other.instant
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.instant.cmp(&other.instant)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(|e| serde::de::Error::custom(format!("invalid timestamp {text:?}: {e}")))
    }
}

/// `alertComment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    /// The comment text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_display_name: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<String>,
    /// Properties this version does not know.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A security alert from `GET /security/alerts_v2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The alert id, e.g. `da637551227677560813_-961444813`. The only required property.
    pub id: String,
    /// `@odata.type`, normally `#microsoft.graph.security.alert`.
    #[serde(rename = "@odata.type", default, skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// The id in the product that raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_alert_id: Option<String>,
    /// The Defender incident the alert belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// Workflow status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AlertStatus>,
    /// Severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Analyst classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Analyst determination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determination: Option<Determination>,
    /// Product that raised the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_source: Option<ServiceSource>,
    /// Detection technology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_source: Option<DetectionSource>,
    /// Id of the detector (rule) that fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector_id: Option<String>,
    /// Entra tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Alert policy id (Office 365 / Purview alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_policy_id: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Recommended actions (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_actions: Option<String>,
    /// Category, e.g. `DefenseEvasion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Owner of the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    /// Link to the alert in the Defender portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_web_url: Option<String>,
    /// Link to the incident in the Defender portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_web_url: Option<String>,
    /// Adversary or activity group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_display_name: Option<String>,
    /// Threat name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_display_name: Option<String>,
    /// Threat family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_family_name: Option<String>,
    /// Product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// MITRE ATT&CK technique ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitre_techniques: Option<Vec<String>>,
    /// System tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_tags: Option<Vec<String>>,
    /// Categories (v1.0 SDK model; not in the v1.0 docs table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// When the alert was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<Timestamp>,
    /// When the alert last changed; with `id`, the version of the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_date_time: Option<Timestamp>,
    /// When it was resolved; absent or null while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_date_time: Option<Timestamp>,
    /// First activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_activity_date_time: Option<Timestamp>,
    /// Last activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_date_time: Option<Timestamp>,
    /// Comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<Vec<Comment>>,
    /// Evidence, polymorphic on `@odata.type`, typed only when asked for ([`Alert::evidence`]) from
    /// [`Alert::raw`]: most alerts are decided and told without it, and typing it (every item copied,
    /// then matched to its model) cost more than the rest of the alert, on every one of the pipeline's
    /// reads. Serde only passes over it (so it does not land in [`Alert::other`]); [`Alert::to_value`]
    /// writes it.
    #[serde(default, skip_serializing, deserialize_with = "pass_over")]
    evidence: Derived<Vec<Evidence>>,
    /// Open dictionary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_data: Option<Map<String, Value>>,
    /// Custom details (string values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_details: Option<Map<String, Value>>,
    /// Properties this version does not know, and known ones whose JSON type was unexpected.
    #[serde(flatten)]
    pub other: Map<String, Value>,
    /// The JSON the alert was read from, exactly as Graph sent it ([`Alert::raw`]).
    #[serde(skip)]
    raw: Value,
}

/// Why an alert could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Not a JSON object.
    #[error("alert is not a JSON object")]
    NotAnObject,
    /// No string `id`.
    #[error("alert has no string `id`")]
    NoId,
}

impl Alert {
    /// Reads an alert from Graph's JSON, never failing on unknown or mistyped properties.
    ///
    /// A property whose type is not the documented one is moved into [`Alert::other`] (so nothing is
    /// lost), and the typed field stays `None`. Only a non-object or a missing `id` is an error. The
    /// alert keeps `value` itself as [`Alert::raw`].
    pub fn from_value(value: Value) -> Result<Alert, AlertError> {
        let Value::Object(map) = &value else {
            return Err(AlertError::NotAnObject);
        };
        if !matches!(map.get("id"), Some(Value::String(_))) {
            return Err(AlertError::NoId);
        }
        // Every property as documented (the usual case): read from the value itself, copying nothing.
        if let Ok(mut alert) = Alert::deserialize(&value) {
            alert.raw = value;
            return Ok(alert);
        }
        let mut map = map.clone();
        let mut set_aside = Map::new();
        // Each failed attempt sets aside the property serde named, so this ends within `len` steps.
        for _ in 0..=map.len() {
            let attempt = serde_path_to_error::deserialize::<_, Alert>(Value::Object(map.clone()));
            match attempt {
                Ok(mut alert) => {
                    alert.other.extend(set_aside);
                    alert.raw = value;
                    return Ok(alert);
                }
                Err(e) => {
                    let key = e.path().iter().next().and_then(|seg| match seg {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        _ => None,
                    });
                    match key.and_then(|k| map.remove_entry(&k)) {
                        Some((k, v)) if k != "id" => {
                            set_aside.insert(k, v);
                        }
                        _ => break,
                    }
                }
            }
        }
        // Unreachable in practice; keep everything rather than fail.
        let id = map.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut other = map;
        other.extend(set_aside);
        Ok(Alert { id, other, raw: value, ..Default::default() })
    }

    /// The alert as Graph JSON (lossless for what [`Alert::from_value`] read): the typed fields, and
    /// `evidence` typed when it is a list (verbatim when it is anything else but `null`).
    pub fn to_value(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("an Alert always serializes");
        match self.raw.get("evidence") {
            None | Some(Value::Null) => {}
            Some(Value::Array(_)) => {
                value["evidence"] = serde_json::to_value(self.evidence()).expect("evidence always serializes");
            }
            Some(other) => value["evidence"] = other.clone(),
        }
        value
    }

    /// The JSON the alert was read from, exactly as Graph sent it: what rules and webhook templates see
    /// as `alert`, so one alert travels as one value.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The version key: `lastUpdateDateTime` as Graph wrote it, or `""` when absent.
    pub fn version(&self) -> &str {
        self.last_update_date_time.as_ref().map(Timestamp::as_str).unwrap_or("")
    }

    /// Severity, `unknown` when absent.
    pub fn severity(&self) -> Severity {
        self.severity.clone().unwrap_or(Severity::Unknown)
    }

    /// Status, `unknown` when absent.
    pub fn status(&self) -> AlertStatus {
        self.status.clone().unwrap_or(AlertStatus::Unknown)
    }

    /// Title, or the id when there is none.
    pub fn title_or_id(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.id)
    }

    /// The evidence list, typed on first use; empty when absent or not a list.
    pub fn evidence(&self) -> &[Evidence] {
        self.evidence.0.get_or_init(|| match self.raw.get("evidence") {
            Some(Value::Array(items)) => items.iter().map(Evidence::from_ref).collect(),
            _ => Vec::new(),
        })
    }
}

/// What an [`Alert`] works out from its raw JSON on first use. It is derived from the JSON, which the
/// alert's equality compares, so it never makes two alerts unequal: whether someone asked for it yet
/// is not part of what an alert is.
#[derive(Debug, Clone, Default)]
struct Derived<T>(std::sync::OnceLock<T>);

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Passes over a value without reading it, leaving the field to be derived later (`Alert::evidence`).
fn pass_over<'de, D: Deserializer<'de>, T: Default>(d: D) -> Result<T, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| T::default())
}

/// Fields every evidence type shares (`microsoft.graph.security.alertEvidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceCommon {
    /// `@odata.type`, e.g. `#microsoft.graph.security.ipEvidence`.
    #[serde(rename = "@odata.type", default, skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// When the evidence was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<String>,
    /// Verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Remediation status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_status: Option<RemediationStatus>,
    /// Remediation details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_status_details: Option<String>,
    /// Roles in the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<EvidenceRole>>,
    /// Free-text roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_roles: Option<Vec<String>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Declares a typed evidence struct: the common fields, the typed ones, and the rest verbatim.
macro_rules! evidence_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// The fields every evidence type has.
            #[serde(flatten)]
            pub common: EvidenceCommon,
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Properties not modelled here, verbatim.
            #[serde(flatten)]
            pub other: Map<String, Value>,
        }
    };
}

evidence_struct!(
    /// `deviceEvidence`.
    DeviceEvidence {
        /// DNS name.
        device_dns_name: String,
        /// Host name.
        host_name: String,
        /// Defender for Endpoint device id.
        mde_device_id: String,
        /// Entra device id.
        azure_ad_device_id: String,
        /// OS platform.
        os_platform: String,
        /// Interface IPs.
        ip_interfaces: Vec<String>,
    }
);

/// `fileDetails`, shared by file and process evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FileDetails {
    /// File name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Folder path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// SHA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_publisher: Option<String>,
    /// Properties not modelled here, verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `userAccount`, shared by user and process evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserAccount {
    /// Account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// Domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// UPN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Entra object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_ad_user_id: Option<String>,
    /// Properties not modelled here, verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl UserAccount {
    /// The best human name: UPN, then domain\account, then display name.
    pub fn label(&self) -> Option<String> {
        if let Some(upn) = &self.user_principal_name {
            return Some(upn.clone());
        }
        match (&self.domain_name, &self.account_name) {
            (Some(d), Some(a)) => Some(format!("{d}\\{a}")),
            (None, Some(a)) => Some(a.clone()),
            _ => self.display_name.clone(),
        }
    }
}

evidence_struct!(
    /// `fileEvidence`.
    FileEvidence {
        /// The file.
        file_details: FileDetails,
        /// Device id.
        mde_device_id: String,
    }
);

evidence_struct!(
    /// `processEvidence`.
    ProcessEvidence {
        /// Command line.
        process_command_line: String,
        /// The process image.
        image_file: FileDetails,
        /// The account it ran as.
        user_account: UserAccount,
        /// Device id.
        mde_device_id: String,
    }
);

evidence_struct!(
    /// `userEvidence`.
    UserEvidence {
        /// The account.
        user_account: UserAccount,
    }
);

evidence_struct!(
    /// `ipEvidence`.
    IpEvidence {
        /// The address.
        ip_address: String,
        /// Country or region code.
        country_letter_code: String,
    }
);

evidence_struct!(
    /// `urlEvidence`.
    UrlEvidence {
        /// The URL.
        url: String,
    }
);

evidence_struct!(
    /// `mailboxEvidence`.
    MailboxEvidence {
        /// Primary address.
        primary_address: String,
        /// Display name.
        display_name: String,
    }
);

evidence_struct!(
    /// `analyzedMessageEvidence`.
    AnalyzedMessageEvidence {
        /// Subject.
        subject: String,
        /// Sender address.
        sender_ip: String,
        /// P1 sender.
        p1_sender: Value,
        /// Recipient.
        recipient_email_address: String,
        /// Network message id.
        network_message_id: String,
    }
);

evidence_struct!(
    /// `cloudApplicationEvidence`.
    CloudApplicationEvidence {
        /// App id.
        app_id: Value,
        /// Display name.
        display_name: String,
    }
);

evidence_struct!(
    /// `registryKeyEvidence`.
    RegistryKeyEvidence {
        /// Key path.
        registry_key: String,
        /// Hive.
        registry_hive: String,
    }
);

evidence_struct!(
    /// `registryValueEvidence`.
    RegistryValueEvidence {
        /// Key path.
        registry_key: String,
        /// Hive.
        registry_hive: String,
        /// Value name.
        registry_value_name: String,
        /// Value.
        registry_value: String,
    }
);

/// One item of `evidence`, chosen by `@odata.type`.
///
/// A known type whose body does not match the model (Graph has sent a numeric `verdict`) falls back to
/// [`Evidence::Other`] rather than failing the alert, so nothing is ever dropped.
// Variants differ in size, but evidence lists are short and matching on plain variants reads better
// than boxes everywhere.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    /// `#microsoft.graph.security.deviceEvidence`
    Device(DeviceEvidence),
    /// `#microsoft.graph.security.fileEvidence`
    File(FileEvidence),
    /// `#microsoft.graph.security.processEvidence`
    Process(ProcessEvidence),
    /// `#microsoft.graph.security.userEvidence`
    User(UserEvidence),
    /// `#microsoft.graph.security.ipEvidence`
    Ip(IpEvidence),
    /// `#microsoft.graph.security.urlEvidence`
    Url(UrlEvidence),
    /// `#microsoft.graph.security.mailboxEvidence`
    Mailbox(MailboxEvidence),
    /// `#microsoft.graph.security.analyzedMessageEvidence`
    AnalyzedMessage(AnalyzedMessageEvidence),
    /// `#microsoft.graph.security.cloudApplicationEvidence`
    CloudApplication(CloudApplicationEvidence),
    /// `#microsoft.graph.security.registryKeyEvidence`
    RegistryKey(RegistryKeyEvidence),
    /// `#microsoft.graph.security.registryValueEvidence`
    RegistryValue(RegistryValueEvidence),
    /// Any other type (Graph has more than 40), or a body that did not fit its model: verbatim.
    Other(Value),
}

impl<'de> Deserialize<'de> for Evidence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Evidence::from_value(value))
    }
}

impl Evidence {
    /// Chooses the variant by `@odata.type` (case-insensitive, with or without the leading `#`).
    pub fn from_value(value: Value) -> Evidence {
        Evidence::typed(&value).unwrap_or(Evidence::Other(value))
    }

    /// [`Evidence::from_value`] from a borrowed item: copied only when it falls back to
    /// [`Evidence::Other`] (the typed models copy what they read).
    pub fn from_ref(value: &Value) -> Evidence {
        Evidence::typed(value).unwrap_or_else(|| Evidence::Other(value.clone()))
    }

    /// The typed variant for `value`'s `@odata.type`, if it has one and the body fits its model.
    fn typed(value: &Value) -> Option<Evidence> {
        let kind = value
            .get("@odata.type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('.').next().unwrap_or(t).to_ascii_lowercase())
            .unwrap_or_default();
        fn typed<T: serde::de::DeserializeOwned>(v: &Value, wrap: fn(T) -> Evidence) -> Option<Evidence> {
            T::deserialize(v).ok().map(wrap)
        }
        match kind.as_str() {
            "deviceevidence" => typed(value, Evidence::Device),
            "fileevidence" => typed(value, Evidence::File),
            "processevidence" => typed(value, Evidence::Process),
            "userevidence" => typed(value, Evidence::User),
            "ipevidence" => typed(value, Evidence::Ip),
            "urlevidence" => typed(value, Evidence::Url),
            "mailboxevidence" => typed(value, Evidence::Mailbox),
            "analyzedmessageevidence" => typed(value, Evidence::AnalyzedMessage),
            "cloudapplicationevidence" => typed(value, Evidence::CloudApplication),
            "registrykeyevidence" => typed(value, Evidence::RegistryKey),
            "registryvalueevidence" => typed(value, Evidence::RegistryValue),
            _ => None,
        }
    }

    /// The short type name, e.g. `ipEvidence` (`unknown` when there is no `@odata.type`).
    pub fn type_name(&self) -> String {
        let raw = match self {
            Evidence::Other(v) => v.get("@odata.type").and_then(Value::as_str).map(str::to_string),
            _ => self.common().and_then(|c| c.odata_type.clone()),
        };
        raw.map(|t| t.rsplit('.').next().unwrap_or(&t).to_string()).unwrap_or_else(|| "unknown".to_string())
    }

    /// The shared fields, for typed variants.
    pub fn common(&self) -> Option<&EvidenceCommon> {
        Some(match self {
            Evidence::Device(e) => &e.common,
            Evidence::File(e) => &e.common,
            Evidence::Process(e) => &e.common,
            Evidence::User(e) => &e.common,
            Evidence::Ip(e) => &e.common,
            Evidence::Url(e) => &e.common,
            Evidence::Mailbox(e) => &e.common,
            Evidence::AnalyzedMessage(e) => &e.common,
            Evidence::CloudApplication(e) => &e.common,
            Evidence::RegistryKey(e) => &e.common,
            Evidence::RegistryValue(e) => &e.common,
            Evidence::Other(_) => return None,
        })
    }

    /// A one-line human summary: `(kind, text)`, e.g. `("ip", "203.0.113.7")`; `None` when there is
    /// nothing worth showing.
    pub fn summary(&self) -> Option<(&'static str, String)> {
        match self {
            Evidence::Device(e) => e.device_dns_name.clone().or_else(|| e.host_name.clone()).map(|s| ("device", s)),
            Evidence::File(e) => file_label(e.file_details.as_ref()).map(|s| ("file", s)),
            Evidence::Process(e) => {
                e.process_command_line.clone().or_else(|| file_label(e.image_file.as_ref())).map(|s| ("process", s))
            }
            Evidence::User(e) => e.user_account.as_ref().and_then(UserAccount::label).map(|s| ("user", s)),
            Evidence::Ip(e) => e.ip_address.clone().map(|s| ("ip", s)),
            Evidence::Url(e) => e.url.clone().map(|s| ("url", s)),
            Evidence::Mailbox(e) => e.primary_address.clone().map(|s| ("mailbox", s)),
            Evidence::AnalyzedMessage(e) => e.subject.clone().map(|s| ("message", s)),
            Evidence::CloudApplication(e) => e.display_name.clone().map(|s| ("app", s)),
            Evidence::RegistryKey(e) => e.registry_key.clone().map(|s| ("registry", s)),
            Evidence::RegistryValue(e) => e.registry_key.clone().map(|s| ("registry", s)),
            Evidence::Other(_) => None,
        }
    }
}

fn file_label(f: Option<&FileDetails>) -> Option<String> {
    let f = f?;
    match (&f.file_path, &f.file_name) {
        (Some(p), Some(n)) => Some(format!("{p}\\{n}")),
        (None, Some(n)) => Some(n.clone()),
        _ => f.sha256.clone(),
    }
}

/// Reads alerts from any of the shapes people have on disk: one alert, an array of alerts, or a Graph
/// list response with `value`. Items that are not alerts are reported with their index.
pub fn alerts_from_json(value: Value) -> Vec<Result<Alert, (usize, AlertError)>> {
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("value") {
            Some(Value::Array(items)) => items,
            Some(other) => {
                map.insert("value".into(), other);
                vec![Value::Object(map)]
            }
            None => vec![Value::Object(map)],
        },
        other => vec![other],
    };
    items.into_iter().enumerate().map(|(i, v)| Alert::from_value(v).map_err(|e| (i, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strip_nulls(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
            other => other.clone(),
        }
    }

    const SAMPLE_VERSION: &str = "2021-05-02T14:19:01.3266667Z";

    fn samples() -> Vec<Value> {
        let mut out = vec![];
        for text in [
            include_str!("../tests/fixtures/samples/alerts_v2-list-response.json"),
            include_str!("../tests/fixtures/samples/alerts_v2-list-sentinel-response.json"),
        ] {
            let page: Value = serde_json::from_str(text).unwrap();
            out.extend(page["value"].as_array().unwrap().iter().cloned());
        }
        out
    }

    #[test]
    fn documented_samples_parse_typed_and_round_trip() {
        for raw in samples() {
            let alert = Alert::from_value(raw.clone()).unwrap();
            assert!(alert.other.is_empty(), "unexpected leftovers {:?}", alert.other.keys());
            assert_eq!(strip_nulls(&alert.to_value()), strip_nulls(&raw));
            assert!(alert.severity.is_some() && alert.service_source.is_some());
        }
        let first = Alert::from_value(samples()[0].clone()).unwrap();
        assert_eq!(first.version(), SAMPLE_VERSION);
        assert_eq!(first.service_source, Some(ServiceSource::MicrosoftDefenderForEndpoint));
        let kinds: Vec<String> = first.evidence().iter().map(Evidence::type_name).collect();
        assert!(kinds.contains(&"deviceEvidence".to_string()));
        assert!(matches!(first.evidence()[0], Evidence::Device(_)));
        assert!(first.evidence().iter().any(|e| matches!(e, Evidence::Process(_))));
    }

    #[test]
    fn unknown_enum_values_and_fields_are_kept() {
        let raw = json!({
            "id": "a1", "severity": "catastrophic", "serviceSource": "microsoftThreatIntelligence",
            "brandNewProperty": {"x": [1, 2]}, "status": "resolved"
        });
        let alert = Alert::from_value(raw.clone()).unwrap();
        assert_eq!(alert.severity, Some(Severity::Other("catastrophic".into())));
        assert_eq!(alert.severity().rank(), 5);
        assert_eq!(alert.service_source.as_ref().unwrap().as_str(), "microsoftThreatIntelligence");
        assert_eq!(alert.other["brandNewProperty"], json!({"x": [1, 2]}));
        assert_eq!(alert.to_value(), raw);
        assert_eq!(alert.raw(), &raw, "the alert keeps the JSON it was read from");
    }

    #[test]
    fn mistyped_properties_are_set_aside_not_fatal() {
        let raw = json!({
            "id": "a2", "title": 42, "severity": ["high"], "lastUpdateDateTime": "not a date",
            "mitreTechniques": "T1110", "status": "new"
        });
        let alert = Alert::from_value(raw.clone()).unwrap();
        assert_eq!(alert.status, Some(AlertStatus::New));
        assert!(alert.title.is_none() && alert.severity.is_none() && alert.last_update_date_time.is_none());
        assert_eq!(alert.other.len(), 4);
        assert_eq!(alert.to_value(), raw);
    }

    #[test]
    fn only_non_objects_and_missing_ids_are_errors() {
        assert!(matches!(Alert::from_value(json!([1])), Err(AlertError::NotAnObject)));
        assert!(matches!(Alert::from_value(json!({"title": "x"})), Err(AlertError::NoId)));
        assert!(matches!(Alert::from_value(json!({"id": 7})), Err(AlertError::NoId)));
    }

    #[test]
    fn evidence_is_typed_on_first_use_and_a_mistyped_one_is_kept_verbatim() {
        let raw = samples()[0].clone();
        let alert = Alert::from_value(raw.clone()).unwrap();
        assert!(alert.evidence.0.get().is_none(), "reading an alert does not type its evidence");
        let asked = Alert::from_value(raw.clone()).unwrap();
        assert!(!asked.evidence().is_empty());
        assert_eq!(asked, alert, "asking for the evidence does not change what the alert is");
        assert_eq!(alert.evidence().len(), raw["evidence"].as_array().unwrap().len());
        assert!(alert.evidence.0.get().is_some());
        assert!(!alert.other.contains_key("evidence"));

        let odd = json!({"id": "a3", "evidence": "not a list", "status": "new"});
        let alert = Alert::from_value(odd.clone()).unwrap();
        assert!(alert.evidence().is_empty());
        assert_eq!(alert.status, Some(AlertStatus::New), "a mistyped evidence sets nothing else aside");
        assert_eq!(alert.to_value(), odd);
        let none = json!({"id": "a4", "evidence": null});
        assert!(Alert::from_value(none.clone()).unwrap().evidence().is_empty());
        assert_eq!(strip_nulls(&Alert::from_value(none.clone()).unwrap().to_value()), strip_nulls(&none));
    }

    #[test]
    fn evidence_falls_back_to_other_and_keeps_everything() {
        let odd = json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "verdict": 5, "ipAddress": "10.0.0.1"});
        let new_kind = json!({"@odata.type": "#microsoft.graph.security.aiAgentEvidence", "agentName": "x"});
        let untyped = json!({"ipAddress": "10.0.0.2"});
        let nulls = json!(null);
        for v in [odd.clone(), new_kind.clone(), untyped.clone(), nulls.clone()] {
            let e = Evidence::from_value(v.clone());
            assert_eq!(Evidence::from_ref(&v), e);
            assert!(matches!(e, Evidence::Other(_)), "{v}");
            assert_eq!(serde_json::to_value(&e).unwrap(), v);
        }
        let ip = Evidence::from_value(
            json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.9", "roles": ["attacker", "somethingNew"]}),
        );
        assert_eq!(ip.summary(), Some(("ip", "203.0.113.9".into())));
        assert_eq!(ip.common().unwrap().roles.as_ref().unwrap()[1], EvidenceRole::Other("somethingNew".into()));
    }

    #[test]
    fn timestamps_keep_their_text_and_compare_by_instant() {
        let a = Timestamp::parse("2021-04-27T12:19:27.7211305Z").unwrap();
        let b = Timestamp::parse("2021-04-27T12:19:27.72113050+00:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "2021-04-27T12:19:27.7211305Z");
        assert!(Timestamp::parse("0001-01-01T00:00:00").is_err());
    }

    #[test]
    fn alerts_from_json_accepts_the_three_shapes() {
        let one = json!({"id": "x"});
        assert_eq!(alerts_from_json(one).len(), 1);
        assert_eq!(alerts_from_json(json!([{"id": "x"}, {"id": "y"}, 3])).len(), 3);
        let page =
            serde_json::from_str(include_str!("../tests/fixtures/samples/alerts_v2-list-response.json")).unwrap();
        let parsed = alerts_from_json(page);
        assert!(parsed.iter().all(Result::is_ok));
    }
}
