//! `hangar health`: asks a process's admin endpoint whether it is healthy, for container
//! health checks (the image has no shell and no curl). Exit 0 on `200`, 1 otherwise with
//! the problems the endpoint lists.

use std::time::Duration;

/// Gives up on an endpoint that does not answer within this long (a health check that
/// hangs would hold the container runtime's check slot).
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct HealthArgs {
    /// The admin endpoint's URL.
    #[arg(long, default_value = "http://127.0.0.1:3903/health")]
    url: String,
}

pub async fn check(args: HealthArgs) -> Result<(), Box<dyn std::error::Error>> {
    hangar_common::tls::init_crypto();
    let client = reqwest::Client::builder().timeout(TIMEOUT).no_proxy().build()?;
    let response = client.get(&args.url).send().await.map_err(|e| {
        // reqwest's own message is generic; the cause (refused, timed out) is in its source.
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        format!("cannot reach {}: {e}{cause}", args.url)
    })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("{}", body.trim_end());
        Ok(())
    } else {
        Err(format!("{} answered {status}: {}", args.url, body.trim_end()).into())
    }
}
