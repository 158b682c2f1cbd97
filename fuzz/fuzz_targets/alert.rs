//! Fuzzes the alert parser: any JSON must give alerts or reasons, never a panic, and a parsed alert must
//! keep its id and survive a round trip through [`Alert::to_value`].
#![no_main]

use libfuzzer_sys::fuzz_target;
use secmon::alert::{Alert, alerts_from_json};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(alert) = Alert::from_value(value.clone()) {
        assert_eq!(value["id"].as_str(), Some(alert.id.as_str()));
        // Nothing read is lost: the alert written back reads as the same alert.
        let again = Alert::from_value(alert.to_value()).expect("a written alert reads back");
        assert_eq!(again.to_value(), alert.to_value());
        let _ = (alert.version(), alert.severity(), alert.status(), alert.title_or_id());
        for e in alert.evidence() {
            let _ = (e.type_name(), e.summary());
        }
    }
    let expected = match &value {
        serde_json::Value::Array(items) => items.len(),
        serde_json::Value::Object(map) => map.get("value").and_then(|v| v.as_array()).map_or(1, Vec::len),
        _ => 1,
    };
    let items = alerts_from_json(value);
    // Every item is accounted for: an alert, or its index with a reason.
    assert_eq!(items.len(), expected);
    for (i, item) in items.iter().enumerate() {
        if let Err((at, _)) = item {
            assert_eq!(*at, i);
        }
    }
});
