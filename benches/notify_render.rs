//! Notifications rendered per second per receiver type (Teams card, e-mail, webhook body), with the
//! documented sample alert and with a large one (400 evidence items, cut to fit Teams' 28 KB).
//! Prints a table and writes `target/bench/notify_render.json`. Not a test: nothing is asserted.
//!
//! Run: `cargo bench --bench notify_render` (add `--profile dev` on a shared machine; the numbers are
//! then for an unoptimized build).

use std::path::Path;
use std::time::{Duration, Instant};

use secmon::alert::Alert;
use secmon::notify::Receivers;
use secmon::notify::view::View;
use serde_json::{Value, json};

fn main() {
    let env = |k: &str| match k {
        "T" => Some(
            "https://prod.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=BenchSig0123456789"
                .into(),
        ),
        "K" => Some("bench-hmac-key-0123456789".into()),
        _ => None,
    };
    let text = r#"
tenants: [{id: t, name: contoso}]
receivers:
  teams: { teams: { webhook_url: "${T}" } }
  email: { email: { from: secmon@contoso.com, to: [soc@contoso.com] } }
  webhook: { webhook: { url: "https://tickets.example/hook", secret: "${K}" } }
"#;
    let now = "2026-11-26T00:00:00Z".parse().unwrap();
    let loaded = secmon::setup::load_str(text, Path::new("bench.yaml"), &env, now).expect("config");
    let receivers = Receivers::build(&loaded.config).expect("receivers");

    let list: Value =
        serde_json::from_str(include_str!("../tests/fixtures/samples/alerts_v2-list-response.json")).unwrap();
    let sample = list["value"][0].clone();
    let mut large = sample.clone();
    large["evidence"] = Value::Array(
        (0..400)
            .map(|i| json!({"@odata.type": "#microsoft.graph.security.urlEvidence", "url": format!("https://phish.example/{i}/{}", "x".repeat(150))}))
            .collect(),
    );

    let mut rows = Vec::new();
    for (alert_name, raw) in [("sample", &sample), ("400 evidence", &large)] {
        let alert = Alert::from_value(raw.clone()).unwrap();
        for kind in ["teams", "email", "webhook"] {
            let render = || {
                let view = View::new("contoso", kind, &alert);
                receivers.render(kind, &view, &alert).expect("renders")
            };
            render();
            // Run for about a second, whatever the speed.
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(1) {
                render();
                n += 1;
            }
            let per_sec = n as f64 / start.elapsed().as_secs_f64();
            rows.push(json!({"receiver": kind, "alert": alert_name, "renders_per_sec": per_sec.round(),
                             "micros_per_render": (1e6 / per_sec * 10.0).round() / 10.0}));
        }
    }
    println!("{:<8} {:<14} {:>14} {:>12}", "receiver", "alert", "renders/s", "µs/render");
    for r in &rows {
        println!(
            "{:<8} {:<14} {:>14} {:>12}",
            r["receiver"].as_str().unwrap(),
            r["alert"].as_str().unwrap(),
            r["renders_per_sec"].as_f64().unwrap(),
            r["micros_per_render"].as_f64().unwrap()
        );
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let profile = if cfg!(debug_assertions) { "dev (unoptimized)" } else { "optimized" };
    std::fs::write(
        out.join("notify_render.json"),
        serde_json::to_vec_pretty(&json!({"profile": profile, "results": rows})).unwrap(),
    )
    .unwrap();
}
