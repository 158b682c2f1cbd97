//! Secret hygiene: the standalone pipeline (`secmon run --listen`, a child process) runs against the Graph
//! emulator with distinctive fake secrets — a client secret, a Teams Workflows `sig=`, a function key
//! (`code=`, in the subscriptions' notification URL and on requests), a webhook HMAC key and a doorbell
//! HMAC key — and every secret is made to meet a failure: the token endpoint refuses one tenant's secret
//! (401), Teams answers 401, the webhook sink answers 401, Graph refuses the subscription whose URL carries
//! the function key, and requests with `?code=` arrive malformed or badly signed. No secret may appear in
//! stdout, stderr (debug logs), the answers secmon gives, the audit and notification records in the store,
//! or the output of `secmon status`, `audit export`, `audit verify`, `check-config` and `subscriptions list`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use secmon_emulator::{Emulator, Fault, Options};
use serde_json::json;

const CONTOSO: &str = "9d2f3f8e-1b7a-4c1e-9a55-0d6c2b8e4f01";
const FABRIKAM: &str = "2c7e9b14-5a3d-4f88-8e2b-7f1a6c0d9e32";
const CLIENT_ID: &str = "hygiene-app";
const CLIENT_SECRET: &str = "Hyg1ene-Client-Secret-q7Vz2w";
/// Fabrikam's configured secret, which the token endpoint refuses (the forced 401).
const WRONG_SECRET: &str = "Hyg1ene-Wrong-Secret-x4Kp9m";
const FUNCTION_KEY: &str = "Hyg1eneFunctionKey-b8Ns3Lq0";
const HOOK_KEY: &str = "Hyg1ene-Hmac-Key-t5Rw8Yc1Zd";
const DOORBELL_KEY: &str = "Hyg1ene-Doorbell-Key-m2Jf6Hs";

/// Kills the child process when dropped, so a failed assertion leaves no daemon behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `sig=` value of a Workflows trigger URL.
fn sig_of(url: &str) -> String {
    url::Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == "sig").map(|(_, v)| v.into_owned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_output_logs_answers_or_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    std::fs::write(dir.join("ca.pem"), emu.ca_pem().unwrap()).unwrap();
    emu.add_client(CONTOSO, CLIENT_ID, CLIENT_SECRET);
    emu.add_client(FABRIKAM, CLIENT_ID, "the-secret-fabrikam-really-has");
    emu.seed_samples(CONTOSO);
    let teams_url = emu.teams_webhook_url("soc");
    let sig = sig_of(&teams_url);
    // The first sends fail for good (the alert goes to the poison queue), so the errors are logged and audited with the secrets at hand.
    emu.faults().push(Fault::status("/workflows/", 401, None).times(1));
    emu.faults().push(Fault::status("/sink/", 401, None).times(1));
    emu.faults().push(Fault::status("/subscriptions", 400, None).method("POST").times(100));

    let port = free_port();
    let config = format!(
        r#"graph_url: {graph}
authority_url: {authority}
store: {{ sqlite: "{db}" }}
tenants:
  - {{ id: {CONTOSO}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: "${{HYG_CLIENT_SECRET}}" }} }}
  - {{ id: {FABRIKAM}, name: fabrikam, credential: {{ client_id: {CLIENT_ID}, client_secret: "${{HYG_WRONG_SECRET}}" }} }}
poll: {{ schedule: "* * * * * *", first_lookback: 3650d }}
routes:
  - receivers: [soc-teams, tickets]
receivers:
  soc-teams: {{ teams: {{ webhook_url: "${{HYG_TEAMS_URL}}" }} }}
  tickets: {{ webhook: {{ url: "{sink}", secret: "${{HYG_HOOK_KEY}}" }} }}
subscriptions:
  - {{ tenant: contoso, resource: "users/alerts@contoso.com/mailFolders('inbox')/messages", change_type: created }}
webhook:
  public_url: http://127.0.0.1:{port}
  notification_query: "code=${{HYG_FUNCTION_KEY}}"
  doorbell_secret: "${{HYG_DOORBELL_KEY}}"
"#,
        graph = emu.graph_url(),
        authority = emu.authority_url(),
        db = dir.join("secmon.db").display(),
        sink = emu.webhook_sink_url("tickets"),
    );
    std::fs::write(dir.join("secmon.yaml"), config).unwrap();
    let envs = [
        ("HYG_CLIENT_SECRET", CLIENT_SECRET.to_string()),
        ("HYG_WRONG_SECRET", WRONG_SECRET.to_string()),
        ("HYG_TEAMS_URL", teams_url.clone()),
        ("HYG_HOOK_KEY", HOOK_KEY.to_string()),
        ("HYG_FUNCTION_KEY", FUNCTION_KEY.to_string()),
        ("HYG_DOORBELL_KEY", DOORBELL_KEY.to_string()),
    ];
    let secmon = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_secmon"));
        c.args(args)
            .arg("--config")
            .arg(dir.join("secmon.yaml"))
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SSL_CERT_FILE", dir.join("ca.pem"))
            .env("RUST_LOG", "debug")
            .env_remove("SECMON_STORE");
        c
    };

    let child = secmon(&["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("run.stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("run.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);

    // Requests carrying the function key that secmon must refuse, and their answers.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/api");
    let mut answers = Vec::new();
    for _ in 0..100 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let malformed = http
        .post(format!("{base}/graph-webhook?code={FUNCTION_KEY}"))
        .header("content-type", "application/json")
        .body(format!("{{\"value\": [{{\"clientState\": \"{FUNCTION_KEY}\"}}"))
        .send()
        .await
        .unwrap();
    assert!(malformed.status().is_client_error(), "a malformed notification is refused: {}", malformed.status());
    answers.push(malformed.text().await.unwrap());
    let forged = http
        .post(format!("{base}/doorbell?code={FUNCTION_KEY}"))
        .header("x-secmon-timestamp", chrono::Utc::now().timestamp().to_string())
        .header("x-secmon-signature", format!("sha256={}", "0".repeat(64)))
        .header("content-type", "application/json")
        .body(json!({"tenant": "contoso"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "a badly signed doorbell is refused");
    answers.push(forged.text().await.unwrap());

    // Until every forced failure happened and the alerts got through to both receivers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let refused_token = emu.requests().iter().any(|r| r.path.contains(FABRIKAM) && r.status == Some(401));
        let refused_subscription =
            emu.requests().iter().any(|r| r.path.ends_with("/subscriptions") && r.status == Some(400));
        let refused = |prefix: &str| {
            emu.requests().iter().filter(|r| r.path.starts_with(prefix) && r.faulted && r.status == Some(401)).count()
        };
        let refused_sends = refused("/workflows/") == 1 && refused("/sink/") == 1;
        let delivered = !emu.teams_messages("soc").is_empty() && !emu.webhook_deliveries("tickets").is_empty();
        if refused_token && refused_subscription && refused_sends && delivered {
            break;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("secmon run exited with {status}: {}", std::fs::read_to_string(dir.join("run.stderr")).unwrap());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the forced failures did not all happen (token 401: {refused_token}, subscription 400: \
             {refused_subscription}, Teams and sink 401s: {refused_sends}, delivered: {delivered})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    child.0.wait().unwrap();

    let mut outputs: Vec<(String, String)> = vec![
        ("secmon run stdout".into(), std::fs::read_to_string(dir.join("run.stdout")).unwrap()),
        ("secmon run stderr".into(), std::fs::read_to_string(dir.join("run.stderr")).unwrap()),
    ];
    for (i, a) in answers.into_iter().enumerate() {
        outputs.push((format!("answer {i}"), a));
    }
    for args in [
        &["status"][..],
        &["audit", "export", "--since", "2000-01-01"],
        &["audit", "verify"],
        &["check-config"],
        &["subscriptions", "list"],
        &["poll", "--once"],
    ] {
        let out = secmon(args).output().unwrap();
        let name = format!("secmon {}", args.join(" "));
        outputs.push((format!("{name} stdout"), String::from_utf8_lossy(&out.stdout).into_owned()));
        outputs.push((format!("{name} stderr"), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    // Every record stream in the store: the audit trail and the notification records.
    let db = rusqlite::Connection::open(dir.join("secmon.db")).unwrap();
    let mut stmt = db.prepare("SELECT stream, record FROM streams").unwrap();
    let records: Vec<(String, Vec<u8>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert!(records.iter().any(|(s, _)| s.starts_with("audit/")), "the audit trail was written");
    for (stream, record) in records {
        outputs.push((format!("store stream {stream}"), String::from_utf8_lossy(&record).into_owned()));
    }

    // The failures really were logged, so the secrets had every chance to appear.
    let stderr = &outputs[1].1;
    for expected in ["fabrikam", "401", "subscription"] {
        assert!(stderr.contains(expected), "the run's logs mention {expected:?}");
    }

    let secrets = [
        ("client secret", CLIENT_SECRET.to_string()),
        ("refused client secret", WRONG_SECRET.to_string()),
        ("Workflows sig", sig.clone()),
        ("function key", FUNCTION_KEY.to_string()),
        ("webhook HMAC key", HOOK_KEY.to_string()),
        ("doorbell HMAC key", DOORBELL_KEY.to_string()),
    ];
    let mut leaks = Vec::new();
    for (place, text) in &outputs {
        for (what, secret) in &secrets {
            let encoded = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>();
            if text.contains(secret.as_str()) || text.contains(&encoded) {
                leaks.push(format!("{what} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}\n(files in {})", Path::new(dir).display());
    // The checked texts are not empty: the search could have found something.
    assert!(outputs.iter().map(|(_, t)| t.len()).sum::<usize>() > 10_000);
}
