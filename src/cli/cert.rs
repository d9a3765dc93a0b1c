//! `mqgate cert`: a self-signed CA and a server certificate it signed, for
//! trying TLS, secure WebSocket and HTTPS out (the demo makes the same in
//! its storage directory).

use crate::transport::certs::{self, Files};
use std::path::PathBuf;
use std::process::ExitCode;

/// Write a self-signed CA (ca.crt) and a server certificate it signed
/// (server.crt, server.key) into a directory, for testing TLS.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write into (made if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A name the server certificate is valid for: an IP address or a DNS
    /// name; repeat for several (default: 127.0.0.1, ::1, localhost).
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Replace certificates already in the directory.
    #[arg(long)]
    force: bool,
}

/// Writes the files and says where they are; exit 2 if they exist (without
/// `--force`), 1 if they cannot be made or written.
pub fn run(args: Args) -> ExitCode {
    let files = Files::in_dir(&args.out);
    if !args.force
        && let Some(existing) = [&files.ca, &files.cert, &files.key]
            .into_iter()
            .find(|p| p.exists())
    {
        eprintln!(
            "mqgate cert: {} exists; use --force to replace it",
            existing.display()
        );
        return ExitCode::from(2);
    }
    let names = if args.names.is_empty() {
        certs::LOOPBACK_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect()
    } else {
        args.names
    };
    let written = certs::generate(&names)
        .map_err(certs::CertError::from)
        .and_then(|generated| certs::write(&files, &generated));
    if let Err(e) = written {
        eprintln!("mqgate cert: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "CA to trust (clients):  {}\n\
         certificate (tls_cert): {}\n\
         key (tls_key):          {}\n\
         valid for: {}",
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        names.join(", ")
    );
    ExitCode::SUCCESS
}
