//! `mqgate report`: the bill from the metering database, as a table, CSV
//! or JSON (works while mqgate runs). With a `[cluster]` configuration, the
//! cluster's totals: this node's database and the other nodes' bills from
//! Redis (`cluster::bill`), unless `--this-node`.

use crate::config::Config;
use crate::metering::report::{self, GroupBy, Kind, Query};
use std::path::PathBuf;
use std::process::ExitCode;

/// Billing report from the metering database (works while mqgate runs).
#[derive(Debug, clap::Args)]
pub struct Args {
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
    /// With a [cluster] configuration: this node's bill alone, not the
    /// cluster's totals (which add the other nodes' bills from Redis).
    #[arg(long)]
    this_node: bool,
}

/// Prints the report; exit 2 for bad input or an unreadable database.
pub fn run(args: Args) -> ExitCode {
    let fail = |message: String| {
        eprintln!("mqgate report: {message}");
        ExitCode::from(2)
    };
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => return fail(format!("invalid configuration: {e}")),
        },
        None => Config::demo(),
    };
    let now = chrono::Utc::now();
    let (from, to) = match (
        report::parse_time(&args.from, now),
        report::parse_time(&args.to, now),
    ) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) => return fail(format!("--from: {e}")),
        (_, Err(e)) => return fail(format!("--to: {e}")),
    };
    let group_by = match GroupBy::parse(&args.group_by, GroupBy::ALL) {
        Ok(group_by) => group_by,
        Err(e) => return fail(format!("--group-by: {e}")),
    };
    let kind = match args.kind.as_str() {
        "messages" => Kind::Messages,
        "connections" => Kind::Connections,
        _ => Kind::Transactions,
    };
    let query = Query {
        kind,
        from,
        to,
        account_id: args.account,
        instance_id: args.instance,
        group_by,
    };
    // The other nodes' bills (calls only: messages and connections are
    // each node's own).
    let elsewhere = match (&config.cluster, args.this_node, kind) {
        (Some(cluster), false, Kind::Transactions) => {
            let instances: Vec<String> = match &query.instance_id {
                Some(instance) => vec![instance.clone()],
                None => config
                    .accounts
                    .iter()
                    .flat_map(|a| &a.instances)
                    .map(|i| i.id.clone())
                    .collect(),
            };
            match billed_elsewhere(cluster, &instances, from, to) {
                Ok(calls) => calls,
                Err(e) => {
                    return fail(format!(
                        "the other nodes' bills could not be read from the cluster's Redis ({e}); --this-node reports this node's bill alone"
                    ));
                }
            }
        }
        _ => Vec::new(),
    };
    let path = config.storage.dir.join(crate::metering::DATABASE);
    let rows = match report::open_read_only(&path).and_then(|c| {
        report::include_calls(&c, &elsewhere)?;
        report::run(&c, &query)
    }) {
        Ok(rows) => rows,
        Err(e) => return fail(e.to_string()),
    };
    let text = match args.format.as_str() {
        "csv" => report::to_csv(kind, &rows),
        "json" => report::to_json(kind, &rows),
        _ => report::to_table(kind, &rows),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// The calls the cluster's other nodes billed on `instances` between
/// `from` and `to`, from Redis.
fn billed_elsewhere(
    cluster: &crate::config::ClusterConfig,
    instances: &[String],
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<report::MinuteCalls>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let cluster = crate::cluster::Cluster::connect(cluster).await?;
        let mut calls = Vec::new();
        for instance in instances {
            calls.extend(
                cluster
                    .billed_elsewhere(
                        instance,
                        from.timestamp().div_euclid(60) * 60,
                        to.timestamp(),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(calls)
    })
}
