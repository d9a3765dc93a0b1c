//! What each stage of the RPC pipeline costs on its own, for one signed V1
//! QuerySessionByClientId call: the CPU work the system benchmark's (b)
//! adds over its floor (a), stage by stage, without sockets or the
//! metering writer. Use it to see where a change to the pipeline pays.
//! Run: cargo bench --bench rpc_stages

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use mqgate::access::conditions::ram_context;
use mqgate::actions::{Reply, query_session_by_client_id};
use mqgate::api::Action;
use mqgate::config::Config;
use mqgate::directory::Directory;
use mqgate::metrics::Metrics;
use mqgate::replay::ReplayGuard;
use mqgate::rpc::parse::{Format, parse_request};
use mqgate::rpc::respond;
use mqgate::rpc::verify::verify;
use std::time::Duration;

// mqgate's allocator, so that the stages cost here what they cost in it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str = r#"
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-bench"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#;

/// A query string as `mqgate-load` sends it, with its own nonce.
fn signed_query(nonce: u64) -> String {
    let params = vec![
        ("InstanceId".to_string(), "post-cn-bench".to_string()),
        ("ClientId".to_string(), "GID_bench@@@dev-1".to_string()),
    ];
    let signed = mqgate::client::sign_v1(
        "GET",
        "QuerySessionByClientId",
        &params,
        "testid",
        "testsecret",
        chrono::Utc::now(),
        &format!("{nonce:032x}"),
    );
    mqgate::client::encode_form(&signed)
}

fn headers() -> Vec<(String, String)> {
    [
        ("host", "127.0.0.1:8080"),
        ("user-agent", "mqgate-load"),
        ("accept", "*/*"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let config = Config::parse(CONFIG, "bench.toml").unwrap();
    let directory = Directory::from_config(&config);
    let query = signed_query(1);
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);

    c.bench_function("parse", |b| {
        b.iter(|| parse_request("GET", Some(black_box(&query)), headers(), b"").unwrap())
    });
    c.bench_function("parse + verify (V1)", |b| {
        b.iter(|| {
            let incoming = parse_request("GET", Some(black_box(&query)), headers(), b"").unwrap();
            verify(incoming, &directory).unwrap()
        })
    });
    let guard = ReplayGuard::new(900, started, 50_000_000);
    let mut nonce = 0u64;
    c.bench_function("replay check (fresh nonce)", |b| {
        b.iter(|| {
            nonce += 1;
            let nonce = format!("{nonce:032x}");
            guard
                .check("testid", "2026-11-22T05:00:00Z", &nonce, chrono::Utc::now())
                .ok()
        })
    });
    c.bench_function("RAM context", |b| {
        b.iter(|| ram_context("testid", Some([127, 0, 0, 1].into()), chrono::Utc::now()))
    });
    let metrics = Metrics::default();
    c.bench_function("metrics record", |b| {
        b.iter(|| {
            metrics.record(
                "QuerySessionByClientId",
                "OK",
                Duration::from_micros(300),
                false,
            )
        })
    });
    c.bench_function("render JSON answer", |b| {
        b.iter(|| {
            let request_id = respond::new_request_id();
            let reply = Reply::QuerySessionByClientId(query_session_by_client_id::Answer {
                online_status: false,
            });
            respond::success(
                Action::QuerySessionByClientId,
                &reply,
                Format::Json,
                &request_id,
            )
            .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
