//! The local AWS emulator (moto) that `scripts/moto.sh` starts, for the AWS backend's tests.

use aws_sdk_s3::config::{Credentials, Region};

/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// The emulator's URL: `SECMON_MOTO` itself, or (when it is just set, as scripts/test.sh does) the
/// port `scripts/moto.sh start` recorded.
pub fn moto() -> Option<String> {
    match std::env::var("SECMON_MOTO") {
        Ok(url) if url.starts_with("http") => Some(url),
        Ok(set) if !set.is_empty() => {
            let file = format!("{}/.tools/moto/port", env!("CARGO_MANIFEST_DIR"));
            let port = std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!("SECMON_MOTO is set but {file} is unreadable ({e}): run scripts/moto.sh start")
            });
            Some(format!("http://127.0.0.1:{}", port.trim()))
        }
        _ => {
            eprintln!("\n*** SKIPPED: SECMON_MOTO is not set; run `eval \"$(scripts/moto.sh start)\"` first ***\n");
            None
        }
    }
}

pub async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}
