//! Alert data: the documented samples and deterministic, realistic generated alerts.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::state::fmt_time;

const LIST_SAMPLE: &str = include_str!("../../fixtures/samples/alerts_v2-list-response.json");
const SENTINEL_SAMPLE: &str = include_str!("../../fixtures/samples/alerts_v2-list-sentinel-response.json");

/// The alerts of the documented list responses, with `tenantId` (and portal links) set to `tenant`.
pub(crate) fn samples(tenant: &str) -> Vec<Value> {
    [LIST_SAMPLE, SENTINEL_SAMPLE]
        .iter()
        .flat_map(|raw| {
            let v: Value = serde_json::from_str(raw).expect("embedded sample is valid JSON");
            v["value"].as_array().cloned().unwrap_or_default()
        })
        .map(|mut a| {
            let original = a["tenantId"].as_str().unwrap_or("").to_string();
            a["tenantId"] = json!(tenant);
            for link in ["alertWebUrl", "incidentWebUrl"] {
                if let Some(url) = a[link].as_str() {
                    a[link] = json!(url.replace(&original, tenant));
                }
            }
            a
        })
        .collect()
}

/// One service source: what detects it, what it is called, what it reports and with which evidence.
struct Source {
    service: &'static str,
    prefix: &'static str,
    detection: &'static [&'static str],
    product: &'static str,
    alerts: &'static [(&'static str, &'static str, &'static str)],
    evidence: &'static [&'static str],
}

/// (title, category, MITRE technique) per source; evidence kinds drawn from each source's list.
const SOURCES: &[Source] = &[
    Source {
        service: "microsoftDefenderForEndpoint",
        prefix: "da",
        detection: &[
            "microsoftDefenderForEndpoint",
            "antivirus",
            "smartScreen",
            "customTi",
            "automatedInvestigation",
            "customDetection",
        ],
        product: "Microsoft Defender for Endpoint",
        alerts: &[
            ("Suspicious PowerShell command line", "Execution", "T1059.001"),
            ("Suspicious execution of hidden file", "DefenseEvasion", "T1564.001"),
            ("'Mimikatz' credential theft tool", "CredentialAccess", "T1003"),
            ("Ransomware behavior detected in the file system", "Impact", "T1486"),
            ("An active 'Wacatac' malware was detected", "Malware", "T1204"),
        ],
        evidence: &["device", "file", "process", "user", "ip", "url"],
    },
    Source {
        service: "microsoftDefenderForIdentity",
        prefix: "aa",
        detection: &["microsoftDefenderForIdentity"],
        product: "Microsoft Defender for Identity",
        alerts: &[
            ("Suspected brute-force attack (LDAP)", "CredentialAccess", "T1110"),
            ("Suspected DCSync attack (replication of directory services)", "CredentialAccess", "T1003.006"),
            ("Account enumeration reconnaissance", "Discovery", "T1087"),
        ],
        evidence: &["user", "device", "ip"],
    },
    Source {
        service: "microsoftDefenderForCloudApps",
        prefix: "ca",
        detection: &["cloudAppSecurity"],
        product: "Microsoft Defender for Cloud Apps",
        alerts: &[
            ("Impossible travel activity", "InitialAccess", "T1078"),
            ("Mass download by a single user", "Exfiltration", "T1530"),
            ("Activity from infrequent country", "InitialAccess", "T1078"),
        ],
        evidence: &["user", "ip", "url"],
    },
    Source {
        service: "microsoftDefenderForOffice365",
        prefix: "fa",
        detection: &["microsoftDefenderForOffice365", "automatedInvestigation"],
        product: "Microsoft Defender for Office 365",
        alerts: &[
            ("Email messages containing malicious URL removed after delivery", "InitialAccess", "T1566.002"),
            ("A potentially malicious URL click was detected", "InitialAccess", "T1566.002"),
            ("Suspicious email sending patterns detected", "Exfiltration", "T1114"),
        ],
        evidence: &["mailbox", "user", "url", "ip", "analyzedMessage"],
    },
    Source {
        service: "microsoft365Defender",
        prefix: "ra",
        detection: &["microsoft365Defender", "customDetection"],
        product: "Microsoft 365 Defender",
        alerts: &[
            ("Multi-stage incident involving Initial access & Lateral movement", "LateralMovement", "T1021"),
            ("BEC financial fraud", "Collection", "T1114.003"),
        ],
        evidence: &["user", "mailbox", "device", "ip"],
    },
    Source {
        service: "azureAdIdentityProtection",
        prefix: "ad",
        detection: &["azureAdIdentityProtection"],
        product: "Microsoft Entra ID Protection",
        alerts: &[
            ("Unfamiliar sign-in properties", "InitialAccess", "T1078"),
            ("Anonymous IP address", "InitialAccess", "T1090.003"),
            ("Leaked credentials", "CredentialAccess", "T1589.001"),
        ],
        evidence: &["user", "ip"],
    },
    Source {
        service: "microsoftAppGovernance",
        prefix: "ag",
        detection: &["appGovernancePolicy", "appGovernanceDetection"],
        product: "App governance",
        alerts: &[
            ("App with suspicious OAuth scope made graph activities", "Collection", "T1528"),
            ("Unusual addition of credentials to an OAuth app", "Persistence", "T1098.001"),
        ],
        evidence: &["user", "url", "ip"],
    },
    Source {
        service: "dataLossPrevention",
        prefix: "dl",
        detection: &["microsoftDataLossPrevention"],
        product: "Microsoft Data Loss Prevention",
        alerts: &[
            ("DLP policy (Financial data) matched for document in SharePoint", "Exfiltration", "T1567"),
            ("DLP policy (U.S. PII) matched for email", "Exfiltration", "T1048"),
        ],
        evidence: &["user", "file", "mailbox"],
    },
    Source {
        service: "microsoftDefenderForCloud",
        prefix: "dc",
        detection: &[
            "microsoftDefenderForServers",
            "microsoftDefenderForStorage",
            "microsoftDefenderForKeyVault",
            "microsoftDefenderForResourceManager",
        ],
        product: "Microsoft Defender for Cloud",
        alerts: &[
            ("Access from a Tor exit node to a storage account", "InitialAccess", "T1090.003"),
            ("Suspicious authentication activity", "CredentialAccess", "T1110"),
            ("Unusual access to a key vault from a suspicious IP", "CredentialAccess", "T1555"),
        ],
        evidence: &["ip", "device", "url"],
    },
    Source {
        service: "microsoftSentinel",
        prefix: "se",
        detection: &["scheduledAlerts", "nrtAlerts", "microsoftSentinel"],
        product: "Microsoft Sentinel",
        alerts: &[
            ("Suspicious sign-in activity detected", "CredentialAccess", "T1110"),
            ("Rare subscription-level operations in Azure", "Persistence", "T1098"),
            ("Mass secret retrieval from Azure Key Vault", "CredentialAccess", "T1555"),
        ],
        evidence: &["user", "ip"],
    },
];

const USERS: &[(&str, &str)] = &[
    ("adele.vance", "Adele Vance"),
    ("alex.wilber", "Alex Wilber"),
    ("megan.bowen", "Megan Bowen"),
    ("lynne.robbins", "Lynne Robbins"),
    ("nestor.wilke", "Nestor Wilke"),
    ("svc-backup", "Backup service"),
];
const HOSTS: &[&str] = &["ws-fin-014", "ws-hr-022", "srv-sql-01", "srv-web-03", "lap-dev-117", "dc01"];
const FILES: &[(&str, &str)] = &[
    ("invoice_2026.pdf.exe", "C:\\Users\\Public\\Downloads"),
    ("mimikatz.exe", "C:\\Windows\\Temp"),
    ("payload.ps1", "C:\\ProgramData"),
    ("Payroll.xlsx", "https://contoso.sharepoint.com/sites/finance/Shared Documents"),
];
const URLS: &[&str] = &[
    "https://login-micros0ft.example/oauth",
    "http://198.51.100.7/update.bin",
    "https://contoso-payments.example/invoice",
    "https://storage.example.net/drop",
];

/// One of the given values.
fn pick(rng: &mut StdRng, values: &[&'static str]) -> &'static str {
    values.choose(rng).expect("non-empty")
}

fn rand_hex(rng: &mut StdRng, len: usize) -> String {
    (0..len).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
}

fn rand_ip(rng: &mut StdRng) -> String {
    // Documentation ranges (RFC 5737) so generated data never names a real host.
    let nets = ["192.0.2", "198.51.100", "203.0.113"];
    format!("{}.{}", nets.choose(rng).expect("non-empty"), rng.random_range(1..255))
}

fn user_account(user: &str, name: &str, tenant: &str) -> Value {
    json!({
        "accountName": user,
        "domainName": "CONTOSO",
        "userSid": format!("S-1-5-21-1234567890-123456789-1234567890-{}", 1100 + user.len()),
        "azureAdUserId": uuid::Uuid::from_u128(user.bytes().fold(0u128, |h, b| h.wrapping_mul(131).wrapping_add(u128::from(b)))).to_string(),
        "userPrincipalName": format!("{user}@contoso.com"),
        "displayName": name,
        "tenantId": tenant,
    })
}

/// One evidence item of the given kind, with the fields every alertEvidence carries.
fn evidence(rng: &mut StdRng, kind: &str, created: &str, tenant: &str) -> Value {
    let (user, name) = *USERS.choose(rng).expect("non-empty");
    let host = *HOSTS.choose(rng).expect("non-empty");
    let device_id = rand_hex(rng, 40);
    let mut e = match kind {
        "device" => json!({
            "@odata.type": "#microsoft.graph.security.deviceEvidence",
            "firstSeenDateTime": created,
            "mdeDeviceId": device_id,
            "azureAdDeviceId": uuid::Uuid::from_u128(rng.random()).to_string(),
            "deviceDnsName": format!("{host}.contoso.com"),
            "hostName": host,
            "dnsDomain": "contoso.com",
            "osPlatform": pick(rng, &["Windows11", "Windows10", "WindowsServer2022", "Linux"]),
            "osBuild": rng.random_range(19000..26100),
            "healthStatus": "active",
            "riskScore": pick(rng, &["none", "low", "medium", "high"]),
            "rbacGroupName": "UnassignedGroup",
            "onboardingStatus": "onboarded",
            "defenderAvStatus": "updated",
            "ipInterfaces": [rand_ip(rng)],
            "loggedOnUsers": [{"accountName": user, "domainName": "CONTOSO"}],
        }),
        "file" => {
            let (file, path) = *FILES.choose(rng).expect("non-empty");
            json!({
                "@odata.type": "#microsoft.graph.security.fileEvidence",
                "detectionStatus": pick(rng, &["detected", "blocked", "prevented"]),
                "mdeDeviceId": device_id,
                "fileDetails": {
                    "sha1": rand_hex(rng, 40),
                    "sha256": rand_hex(rng, 64),
                    "fileName": file,
                    "filePath": path,
                    "fileSize": rng.random_range(1_000..20_000_000),
                    "filePublisher": null,
                    "signer": null,
                    "issuer": null,
                },
            })
        }
        "process" => json!({
            "@odata.type": "#microsoft.graph.security.processEvidence",
            "processId": rng.random_range(100..30000),
            "parentProcessId": rng.random_range(100..30000),
            "processCommandLine": "powershell.exe -nop -w hidden -enc SQBFAFgA",
            "processCreationDateTime": created,
            "detectionStatus": "detected",
            "mdeDeviceId": device_id,
            "imageFile": {"fileName": "powershell.exe", "filePath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0", "sha1": rand_hex(rng, 40)},
            "userAccount": user_account(user, name, tenant),
        }),
        "user" => json!({
            "@odata.type": "#microsoft.graph.security.userEvidence",
            "userAccount": user_account(user, name, tenant),
        }),
        "ip" => json!({
            "@odata.type": "#microsoft.graph.security.ipEvidence",
            "ipAddress": rand_ip(rng),
            "countryLetterCode": pick(rng, &["NL", "US", "RU", "BR", "SG"]),
        }),
        "url" => json!({
            "@odata.type": "#microsoft.graph.security.urlEvidence",
            "url": URLS.choose(rng),
        }),
        "mailbox" => json!({
            "@odata.type": "#microsoft.graph.security.mailboxEvidence",
            "primaryAddress": format!("{user}@contoso.com"),
            "displayName": name,
            "userAccount": user_account(user, name, tenant),
        }),
        _ => json!({
            "@odata.type": "#microsoft.graph.security.analyzedMessageEvidence",
            "networkMessageId": uuid::Uuid::from_u128(rng.random()).to_string(),
            "internetMessageId": format!("<{}@mail.example>", rand_hex(rng, 16)),
            "subject": "Action required: invoice overdue",
            "senderIp": rand_ip(rng),
            "recipientEmailAddress": format!("{user}@contoso.com"),
            "p1Sender": {"emailAddress": "billing@contoso-payments.example", "displayName": "Billing", "domainName": "contoso-payments.example"},
            "deliveryAction": pick(rng, &["delivered", "blocked", "junked"]),
            "deliveryLocation": pick(rng, &["inbox_folder", "junkFolder", "quarantine"]),
            "antiSpamDirection": "Inbound",
            "urlCount": 1,
            "attachmentsCount": 0,
            "threatDetectionMethods": ["urlDetonationReputation"],
            "threats": ["Phish"],
            "receivedDateTime": created,
        }),
    };
    let verdict = pick(rng, &["unknown", "suspicious", "malicious", "noThreatsFound"]);
    let remediation = pick(rng, &["none", "remediated", "prevented", "blocked", "active", "pendingApproval"]);
    let common = json!({
        "createdDateTime": created,
        "verdict": verdict,
        "remediationStatus": remediation,
        "remediationStatusDetails": null,
        "roles": [pick(rng, &["compromised", "attacker", "contextual", "source", "destination"])],
        "detailedRoles": [],
        "tags": [],
    });
    for (k, v) in common.as_object().expect("object") {
        e[k] = v.clone();
    }
    e
}

/// `n` varied alerts for `tenant`, deterministic from `seed`, with lastUpdateDateTime rising from `start`.
pub(crate) fn alerts(tenant: &str, n: usize, seed: u64, start: DateTime<Utc>) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut updated = start;
    (0..n)
        .map(|i| {
            updated += Duration::seconds(rng.random_range(5..=120));
            let source = &SOURCES[rng.random_range(0..SOURCES.len())];
            let (title, category, technique) = *source.alerts.choose(&mut rng).expect("non-empty");
            let created = updated - Duration::minutes(rng.random_range(0..180));
            let first_activity = created - Duration::minutes(rng.random_range(1..60));
            let severity = match rng.random_range(0..100) {
                0..15 => "informational",
                15..50 => "low",
                50..80 => "medium",
                _ => "high",
            };
            let (status, classification, determination, resolved) = match rng.random_range(0..100) {
                0..70 => (
                    "new",
                    if rng.random_bool(0.25) { Value::Null } else { json!("unknown") },
                    if rng.random_bool(0.25) { Value::Null } else { json!("unknown") },
                    Value::Null,
                ),
                70..90 => ("inProgress", json!("unknown"), json!("unknown"), Value::Null),
                _ => {
                    let (c, d) = *[
                        ("truePositive", "malware"),
                        ("falsePositive", "notMalicious"),
                        ("informationalExpectedActivity", "securityTesting"),
                    ]
                    .choose(&mut rng)
                    .expect("non-empty");
                    ("resolved", json!(c), json!(d), json!(fmt_time(updated)))
                }
            };
            let id = format!(
                "{}{}{:012}_{}",
                source.prefix,
                638_000 + seed % 1000,
                rng.random_range(0..1_000_000_000_000u64),
                -((i as i64) + 1) * 7919
            );
            let incident = 10_000 + (seed % 1000) * 100_000 + i as u64 / 3;
            let created_s = fmt_time(created);
            let evidence_count = rng.random_range(1..=4usize);
            let evidence: Vec<Value> = (0..evidence_count)
                .map(|_| {
                    let kind = *source.evidence.choose(&mut rng).expect("non-empty");
                    evidence(&mut rng, kind, &created_s, tenant)
                })
                .collect();
            json!({
                "@odata.type": "#microsoft.graph.security.alert",
                "id": id,
                "providerAlertId": id,
                "incidentId": incident.to_string(),
                "status": status,
                "severity": severity,
                "classification": classification,
                "determination": determination,
                "serviceSource": source.service,
                "detectionSource": source.detection.choose(&mut rng),
                "productName": source.product,
                "detectorId": uuid::Uuid::from_u128(rng.random()).to_string(),
                "tenantId": tenant,
                "title": title,
                "description": format!("{title}. Generated by secmon-emulator (seed {seed}, #{i})."),
                "recommendedActions": "Review the evidence and the related incident in the Microsoft Defender portal.",
                "category": category,
                "assignedTo": if status == "inProgress" { json!("secops@contoso.com") } else { Value::Null },
                "alertWebUrl": format!("https://security.microsoft.com/alerts/{id}?tid={tenant}"),
                "incidentWebUrl": format!("https://security.microsoft.com/incidents/{incident}?tid={tenant}"),
                "actorDisplayName": null,
                "threatDisplayName": null,
                "threatFamilyName": null,
                "mitreTechniques": [technique],
                "createdDateTime": created_s,
                "lastUpdateDateTime": fmt_time(updated),
                "resolvedDateTime": resolved,
                "firstActivityDateTime": fmt_time(first_activity),
                "lastActivityDateTime": fmt_time(created),
                "comments": [],
                "evidence": evidence,
                "systemTags": [],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generation_is_deterministic_varied_and_unique() {
        let start = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let a = alerts("t", 600, 7, start);
        assert_eq!(a, alerts("t", 600, 7, start));
        assert_ne!(a, alerts("t", 600, 8, start));
        let ids: HashSet<&str> = a.iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 600);
        let field = |f: &str| a.iter().map(|x| x[f].as_str().unwrap_or("null").to_string()).collect::<HashSet<_>>();
        assert_eq!(field("serviceSource").len(), SOURCES.len());
        assert_eq!(field("severity").len(), 4);
        let kinds: HashSet<String> = a
            .iter()
            .flat_map(|x| {
                x["evidence"].as_array().unwrap().iter().map(|e| e["@odata.type"].as_str().unwrap().to_string())
            })
            .collect();
        for k in ["ip", "user", "device", "file", "url", "mailbox"] {
            assert!(kinds.contains(&format!("#microsoft.graph.security.{k}Evidence")), "{k}");
        }
        assert!(a.iter().all(|x| x["lastUpdateDateTime"].as_str().unwrap() > "2026-11-01"));
    }

    #[test]
    fn samples_carry_the_tenant() {
        let s = samples("tenant-x");
        assert!(s.len() >= 2);
        assert!(s.iter().all(|a| a["tenantId"] == "tenant-x"));
        assert!(s.iter().all(|a| a["alertWebUrl"].as_str().unwrap().ends_with("tid=tenant-x")));
    }
}
