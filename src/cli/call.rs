//! `mqgate call`: one signed call to a running mqgate (or any OnsMqtt
//! endpoint), its answer printed.

use crate::client::{self, Signing};
use std::process::ExitCode;

/// Make one signed call to a running mqgate (or any OnsMqtt endpoint) and
/// print the answer. Exits 1 if the answer is an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The action, e.g. QuerySessionByClientId.
    action: String,
    /// The action's parameters, e.g. InstanceId=mqtt-demo-0001 ClientId=dev-1.
    #[arg(value_name = "NAME=VALUE")]
    params: Vec<String>,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_ID")]
    access_key_id: String,
    /// Prefer the environment variable: a secret on the command line is
    /// visible to other users of the machine.
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: String,
    #[arg(long, default_value = "POST", value_parser = ["GET", "POST"])]
    method: String,
    /// Signature version: v1 (HMAC-SHA1) or v3 (ACS3-HMAC-SHA256).
    #[arg(long, default_value = "v1", value_parser = ["v1", "v3"])]
    signature: String,
}

pub async fn run(args: Args) -> ExitCode {
    let mut params = Vec::new();
    for raw in &args.params {
        let Some((name, value)) = raw.split_once('=') else {
            eprintln!("mqgate call: parameter \"{raw}\" is not NAME=VALUE");
            return ExitCode::from(2);
        };
        params.push((name.to_string(), value.to_string()));
    }
    let signing = match args.signature.as_str() {
        "v3" => Signing::V3,
        _ => Signing::V1,
    };
    match client::call(
        &args.endpoint,
        &args.method,
        signing,
        &args.action,
        &params,
        &args.access_key_id,
        &args.access_key_secret,
    )
    .await
    {
        Ok((status, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            println!("{pretty}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("mqgate call: HTTP {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mqgate call: {e}");
            ExitCode::FAILURE
        }
    }
}
