//! Fuzzes the Functions invocation parser: any body the host could send must give bindings or a
//! reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secmon::host::azure::{http_request, parse_envelope, queue_item, timer_info};

fuzz_target!(|data: &[u8]| {
    let Ok((data, _metadata)) = parse_envelope(data) else { return };
    let _ = timer_info(&data, "timer");
    if let Ok(bytes) = queue_item(&data, "message") {
        // A present queue binding always yields its content.
        assert!(data.get("message").is_some_and(|v| !v.is_null()));
        let _ = bytes;
    }
    if let Ok(req) = http_request(&data, "req") {
        assert!(req.headers.keys().all(|k| k.chars().all(|c| !c.is_ascii_uppercase())));
    }
});
