//! `mqgate serve`: runs the gateway until Ctrl-C or SIGTERM; without
//! `--config`, the demo on loopback.

use crate::config::{Config, demo};
use crate::server::{Server, reload};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run the gateway. Without --config: a demo on loopback.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (see mqgate.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Serves until Ctrl-C or SIGTERM (reloading on SIGHUP and file changes
/// when there is a configuration file); exit 2 for a bad configuration, 1
/// when mqgate cannot start.
pub async fn run(args: Args) -> ExitCode {
    raise_descriptor_limit();
    let config_path = args.config;
    let (config, is_demo) = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => (config, false),
            Err(e) => {
                eprintln!("mqgate: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => (Config::demo(), true),
    };
    if is_demo {
        // The demo's certificate: made once, kept across restarts.
        let dir = config.storage.dir.join(demo::TLS_DIR);
        match crate::transport::certs::ensure(&dir) {
            Ok(true) => tracing::info!(dir = %dir.display(), "made the demo's CA and certificate"),
            Ok(false) => {}
            Err(e) => {
                eprintln!("mqgate: cannot start: the demo's certificate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let server = match Server::start(config.clone()).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mqgate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_banner(&server, &config, is_demo);
    match &config_path {
        Some(path) => reload::serve_until_stopped(&server, path, &config).await,
        None => reload::wait_for_signal().await,
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Raises the soft limit on open files to the hard limit: every MQTT
/// client holds one descriptor, and distributions' soft default (1,024)
/// would cap mqgate at about a thousand devices. Logs both limits.
// getrlimit and setrlimit have no safe wrapper in std; `unsafe_code` is
// denied crate-wide and allowed for these two calls only.
#[allow(unsafe_code)]
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        return tracing::warn!(%error, "cannot read the open-files limit");
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "cannot raise the open-files limit");
        }
    }
    tracing::info!(
        soft_before = before,
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-files limit (each MQTT client holds one)"
    );
}

fn print_banner(server: &Server, config: &Config, is_demo: bool) {
    let mut out = std::io::stdout().lock();
    // The first line is for programs (tests, scripts): the bound addresses
    // (the secure and WebSocket ones where served).
    let mut first = format!(
        "mqgate listening http={} mqtt={}",
        server.http_addr, server.mqtt_addr
    );
    let optional = [
        ("https", server.https_addr),
        ("mqtts", server.mqtt_tls_addr),
        ("ws", server.mqtt_ws_addr),
        ("wss", server.mqtt_wss_addr),
        ("metrics", server.metrics_addr),
    ];
    for (name, addr) in optional {
        if let Some(addr) = addr {
            first.push_str(&format!(" {name}={addr}"));
        }
    }
    let _ = writeln!(out, "{first}");
    let _ = writeln!(
        out,
        "  HTTP API (RPC endpoint at /): http://{}",
        server.http_addr
    );
    if let Some(addr) = server.https_addr {
        let _ = writeln!(out, "  HTTPS API:                     https://{addr}");
    }
    let _ = writeln!(
        out,
        "  MQTT 3.1.1 and 5:              mqtt://{}",
        server.mqtt_addr
    );
    if let Some(addr) = server.mqtt_tls_addr {
        let _ = writeln!(out, "  MQTT over TLS:                 mqtts://{addr}");
    }
    if let Some(addr) = server.mqtt_ws_addr {
        let _ = writeln!(out, "  MQTT over WebSocket:           ws://{addr}/mqtt");
    }
    if let Some(addr) = server.mqtt_wss_addr {
        let _ = writeln!(out, "  MQTT over secure WebSocket:    wss://{addr}/mqtt");
    }
    let instances: usize = config.accounts.iter().map(|a| a.instances.len()).sum();
    let _ = writeln!(
        out,
        "  {} account(s), {} instance(s); anonymous MQTT clients {}",
        config.accounts.len(),
        instances,
        match &config.mqtt.anonymous_instance {
            Some(i) => format!("land in {i}"),
            None => "are refused".to_string(),
        }
    );
    if is_demo {
        let _ = writeln!(
            out,
            "\nDemo mode (no --config): loopback only, account {}, instance {} ({}),\n\
             root AccessKeyId {} / AccessKeySecret {}.\n\n\
             Connect a device:   mosquitto_sub -h 127.0.0.1 -p {} -i GID_demo@@@dev-1 -t demo/# -v\n\
             Query it:           ALIBABA_CLOUD_ACCESS_KEY_ID={} ALIBABA_CLOUD_ACCESS_KEY_SECRET={} \\\n\
             \x20                     mqgate call --endpoint http://{} QuerySessionByClientId InstanceId={} ClientId=GID_demo@@@dev-1\n\
             Kick it:            ... mqgate call --endpoint http://{} CloseConnection InstanceId={} ClientId=GID_demo@@@dev-1\n\
             Official SDKs: endpoint {}, protocol http, the key above.",
            demo::ACCOUNT_ID,
            demo::INSTANCE_ID,
            demo::REGION,
            demo::ACCESS_KEY_ID,
            demo::ACCESS_KEY_SECRET,
            server.mqtt_addr.port(),
            demo::ACCESS_KEY_ID,
            demo::ACCESS_KEY_SECRET,
            server.http_addr,
            demo::INSTANCE_ID,
            server.http_addr,
            demo::INSTANCE_ID,
            server.http_addr,
        );
        print_demo_tls(&mut out, server, config);
    }
    let _ = out.flush();
}

/// The demo's secure endpoints: the CA to trust and a command for each.
fn print_demo_tls(out: &mut impl Write, server: &Server, config: &Config) {
    let ca = config
        .storage
        .dir
        .join(demo::TLS_DIR)
        .join(demo::TLS_CA_FILE);
    let ca = ca.display();
    let _ = writeln!(
        out,
        "\nTLS (a self-signed CA made for the demo, kept across restarts; trust it in clients):\n\
         \x20 CA certificate:     {ca}"
    );
    if let Some(addr) = server.mqtt_tls_addr {
        let _ = writeln!(
            out,
            "  MQTT over TLS:       mosquitto_sub --cafile {ca} -h 127.0.0.1 -p {} -i GID_demo@@@dev-2 -t demo/# -v",
            addr.port()
        );
    }
    if let Some(addr) = server.mqtt_ws_addr {
        let _ = writeln!(
            out,
            "  MQTT over WebSocket: ws://{addr}/mqtt (subprotocol mqtt; paho-mqtt: transport=\"websockets\", path /mqtt)"
        );
    }
    if let Some(addr) = server.mqtt_wss_addr {
        let _ = writeln!(
            out,
            "  Secure WebSocket:    wss://{addr}/mqtt (the same, with the CA above)"
        );
    }
    if let Some(addr) = server.https_addr {
        let _ = writeln!(
            out,
            "  HTTPS API:           curl --cacert {ca} https://{addr}/   (official SDKs: endpoint {addr}, their default protocol https, the CA above)"
        );
    }
}
