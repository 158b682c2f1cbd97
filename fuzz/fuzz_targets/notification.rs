//! Fuzzes the Graph notification parser: any bytes must give a batch or a reason, never a panic, and a
//! parsed item must hold what the wire said.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secmon::intake::webhook::parse_notifications;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_notifications(data) {
        let value: serde_json::Value = serde_json::from_slice(data).expect("a parsed batch is JSON");
        let raw = value["value"].as_array().expect("a parsed batch has a value array");
        assert_eq!(items.len(), raw.len());
        for (item, wire) in items.iter().zip(raw) {
            if let Ok(n) = item {
                assert!(!n.subscription_id.is_empty());
                assert_eq!(wire["subscriptionId"].as_str(), Some(n.subscription_id.as_str()));
                assert_eq!(wire["clientState"].as_str(), n.client_state.as_deref());
            }
        }
    }
});
