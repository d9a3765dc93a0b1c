//! The `mqgate` command: `serve` runs the gateway, `call` makes a signed call.

use clap::{Parser, Subcommand};
use mqgate::config::{Config, demo};
use mqgate::server::Server;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// The RPC path allocates many small strings per call (parameters, the
// canonical string, the answer); mimalloc serves them faster than glibc's
// malloc, which took about 15% of the CPU in a profile of the path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mqgate",
    version,
    about = "ApsaraMQ for MQTT OpenAPI in front of an embedded MQTT broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config: a demo on loopback.
    Serve {
        /// TOML configuration file (see mqgate.example.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Make one signed call to a running mqgate (or any OnsMqtt endpoint)
    /// and print the answer. Exits 1 if the answer is an error.
    Call {
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
    },
    /// Billing report from the metering database (works while mqgate runs).
    Report {
        /// The configuration whose storage.dir holds the database (default:
        /// the demo's).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Start, inclusive: 2026-11-21, 2026-11-21T10:00:00Z, today, yesterday, now (UTC).
        #[arg(long, default_value = "today")]
        from: String,
        /// End, exclusive.
        #[arg(long, default_value = "tomorrow")]
        to: String,
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        #[arg(long, value_name = "ID")]
        instance: Option<String>,
        /// Any of instance, action, and one of minute, hour, day. Without a
        /// time unit, one window spans --from to --to.
        #[arg(long, default_value = "instance,action,day")]
        group_by: String,
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
        /// What to count: billed API transactions, broker messages by QoS,
        /// or peak concurrent connections.
        #[arg(long, default_value = "transactions", value_parser = ["transactions", "messages", "connections"])]
        kind: String,
    },
    /// Check and try RAM policies without a running gateway.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Decide one request: prints Allow, ImplicitDeny or ExplicitDeny, then
    /// which statement of which policy decided. Exit 0 whatever the decision.
    Simulate {
        /// A policy file, or a system policy name (AliyunMQReadOnlyAccess, ...). Repeatable.
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<String>,
        /// The RAM action, e.g. mq:CloseConnection.
        #[arg(long)]
        action: String,
        /// The resource ARN, e.g. acs:mq:cn-hangzhou:1234567890:post-cn-demo.
        #[arg(long)]
        resource: String,
        /// A condition key and its value, e.g. acs:SourceIp=192.0.2.10. Repeatable.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check policy files as the gateway does when it loads them.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mqgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        Command::Policy { command } => {
            let outcome = match &command {
                PolicyCommand::Simulate {
                    policies,
                    action,
                    resource,
                    context,
                    json,
                } => mqgate::ram::cli::simulate(policies, action, resource, context, *json),
                PolicyCommand::Validate { files } => mqgate::ram::cli::validate(files),
            };
            print!("{}", outcome.stdout);
            eprint!("{}", outcome.stderr);
            ExitCode::from(outcome.code)
        }
        Command::Report {
            config,
            from,
            to,
            account,
            instance,
            group_by,
            format,
            kind,
        } => report(
            config, &from, &to, account, instance, &group_by, &format, &kind,
        ),
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Call {
            action,
            params,
            endpoint,
            access_key_id,
            access_key_secret,
            method,
            signature,
        } => runtime.block_on(call(
            &endpoint,
            &method,
            if signature == "v3" {
                mqgate::client::Signing::V3
            } else {
                mqgate::client::Signing::V1
            },
            &action,
            &params,
            &access_key_id,
            &access_key_secret,
        )),
    };
    // rumqttd's connection tasks may sit in a blocking call inside the
    // runtime (its link setup waits on a channel synchronously); dropping the
    // runtime would wait for them forever. Exit within a bounded time.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn serve(config_path: Option<PathBuf>) -> ExitCode {
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
    let server = match Server::start(config.clone()).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mqgate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_banner(&server, &config, is_demo);
    match &config_path {
        Some(path) => serve_until_stopped(&server, path, &config).await,
        None => wait_for_signal().await,
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn print_banner(server: &Server, config: &Config, is_demo: bool) {
    let mut out = std::io::stdout().lock();
    // The first line is for programs (tests, scripts): the bound addresses.
    let _ = writeln!(
        out,
        "mqgate listening http={} mqtt={}",
        server.http_addr, server.mqtt_addr
    );
    let _ = writeln!(
        out,
        "  HTTP API (RPC endpoint at /): http://{}",
        server.http_addr
    );
    let _ = writeln!(
        out,
        "  MQTT 3.1.1 and 5:              mqtt://{}",
        server.mqtt_addr
    );
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
    }
    let _ = out.flush();
}

#[allow(clippy::too_many_arguments)]
fn report(
    config_path: Option<PathBuf>,
    from: &str,
    to: &str,
    account: Option<String>,
    instance: Option<String>,
    group_by: &str,
    format: &str,
    kind: &str,
) -> ExitCode {
    use mqgate::metering::report::{self, Bucket, Kind, Query};
    let fail = |message: String| {
        eprintln!("mqgate report: {message}");
        ExitCode::from(2)
    };
    let config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => return fail(format!("invalid configuration: {e}")),
        },
        None => Config::demo(),
    };
    let now = chrono::Utc::now();
    let (from, to) = match (report::parse_time(from, now), report::parse_time(to, now)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) => return fail(format!("--from: {e}")),
        (_, Err(e)) => return fail(format!("--to: {e}")),
    };
    let (mut by_instance, mut by_action, mut bucket) = (false, false, Bucket::Whole);
    for part in group_by.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "instance" => by_instance = true,
            "action" => by_action = true,
            "minute" => bucket = Bucket::Minute,
            "hour" => bucket = Bucket::Hour,
            "day" => bucket = Bucket::Day,
            other => {
                return fail(format!(
                    "--group-by: \"{other}\" is not instance, action, minute, hour or day"
                ));
            }
        }
    }
    let kind = match kind {
        "messages" => Kind::Messages,
        "connections" => Kind::Connections,
        _ => Kind::Transactions,
    };
    let query = Query {
        kind,
        from,
        to,
        account_id: account,
        instance_id: instance,
        by_instance,
        by_action,
        bucket,
    };
    let path = config.storage.dir.join(mqgate::metering::DATABASE);
    let rows = match report::open_read_only(&path).and_then(|c| report::run(&c, &query)) {
        Ok(rows) => rows,
        Err(e) => return fail(e),
    };
    let text = match format {
        "csv" => report::to_csv(kind, &rows),
        "json" => report::to_json(kind, &rows),
        _ => report::to_table(kind, &rows),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// Runs until Ctrl-C or SIGTERM, reloading the configuration and its policy
/// files on SIGHUP and when one of them changes on disk (checked every 2 s).
async fn serve_until_stopped(server: &Server, path: &Path, config: &Config) {
    let mut watched = Watched::new(path, config);
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(2));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = &mut stop => return,
            _ = hangup_received => "SIGHUP",
            _ = ticks.tick() => {
                if !watched.changed() {
                    continue;
                }
                "a configuration or policy file changed"
            }
        };
        match Config::load(path) {
            Ok(new_config) => {
                let next = Watched::new(path, &new_config);
                match server.reload(new_config).await {
                    Ok(report) => {
                        tracing::info!(
                            trigger = why,
                            started = ?report.started_instances,
                            removed = ?report.removed_instances,
                            "configuration reloaded"
                        );
                        if !report.needs_restart.is_empty() {
                            tracing::warn!(settings = ?report.needs_restart, "these settings changed but apply only after a restart");
                        }
                        watched = next;
                    }
                    Err(e) => {
                        tracing::error!(trigger = why, error = %e, "reload failed; the previous configuration stays in force");
                        watched.refresh();
                    }
                }
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "reload refused; the previous configuration stays in force");
                watched.refresh();
            }
        }
    }
}

/// The configuration file and its policy files, with their last seen
/// modification times.
struct Watched {
    files: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

impl Watched {
    fn new(path: &Path, config: &Config) -> Watched {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut files = vec![path.to_path_buf()];
        files.extend(config.policy_files(base));
        let mut watched = Watched {
            files: files.into_iter().map(|f| (f, None)).collect(),
        };
        watched.refresh();
        watched
    }

    fn modified(path: &Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn refresh(&mut self) {
        for (path, seen) in &mut self.files {
            *seen = Watched::modified(path);
        }
    }

    fn changed(&self) -> bool {
        self.files
            .iter()
            .any(|(path, seen)| Watched::modified(path) != *seen)
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

async fn call(
    endpoint: &str,
    method: &str,
    signing: mqgate::client::Signing,
    action: &str,
    raw_params: &[String],
    access_key_id: &str,
    access_key_secret: &str,
) -> ExitCode {
    let mut params = Vec::new();
    for raw in raw_params {
        let Some((name, value)) = raw.split_once('=') else {
            eprintln!("mqgate call: parameter \"{raw}\" is not NAME=VALUE");
            return ExitCode::from(2);
        };
        params.push((name.to_string(), value.to_string()));
    }
    match mqgate::client::call(
        endpoint,
        method,
        signing,
        action,
        &params,
        access_key_id,
        access_key_secret,
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
