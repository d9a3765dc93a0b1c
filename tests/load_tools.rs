//! The RPC benchmark's load tools, from outside: `mqgate-load presign`
//! writes request targets that mqgate accepts once each, and wrk with
//! `bench/wrk/replay.lua` sends each line once, reporting a thread that ran
//! out of lines instead of sending one twice (a replay mqgate refuses);
//! `mqgate-load baseline --durable-bill` (the durable floor) bills each call
//! it answers.

mod common;

use common::{TWO_ACCOUNTS, TestServer, raw_http};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const LOAD: &str = env!("CARGO_BIN_EXE_mqgate-load");

/// TWO_ACCOUNTS with QuerySessionByClientId's limit raised out of the way:
/// wrk sends thousands a second.
fn config() -> String {
    format!("{TWO_ACCOUNTS}\n[limits]\nQuerySessionByClientId = 1000000000\n")
}

/// `mqgate-load presign` of `count` QuerySessionByClientId calls on
/// TWO_ACCOUNTS' instance a1, in `prefix.0` .. `prefix.{files-1}`.
fn presign(url: &str, prefix: &Path, count: u64, files: usize) {
    let status = Command::new(LOAD)
        .args(["presign", "--url", url])
        .args(["--param", "InstanceId=inst-a1", "--param", "ClientId=dev-1"])
        .args(["--count", &count.to_string()])
        .args(["--files", &files.to_string()])
        .arg("--out")
        .arg(prefix)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn lines_of(prefix: &Path, n: usize) -> Vec<String> {
    std::fs::read_to_string(format!("{}.{n}", prefix.display()))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_targets_are_accepted_once() {
    let server = TestServer::start(&config()).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("req");
    presign(&server.endpoint, &prefix, 6, 2);
    let mut lines = lines_of(&prefix, 0);
    lines.extend(lines_of(&prefix, 1));
    assert_eq!(lines.len(), 6);
    // Every line once, then the first again.
    lines.push(lines[0].clone());
    let requests: Vec<String> = lines
        .iter()
        .map(|target| format!("GET {target} HTTP/1.1\r\nHost: mqgate\r\n\r\n"))
        .collect();
    let answers = raw_http(server.server.http_addr, &requests).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 400], "{answers:?}");
    assert!(
        answers[6].body.contains("SignatureNonceUsed"),
        "{answers:?}"
    );
}

/// wrk on PATH (tests/run_all.sh installs Debian's).
fn wrk() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("wrk"))
        .find(|path| path.is_file())
        .expect("wrk not found: the test command installs Debian's wrk (tests/run_all.sh); or apt-get install wrk")
}

/// `wrk -t2 -c2 -d1s` with replay.lua over `prefix`'s two files; the JSON
/// line replay.lua prints.
fn replay(url: &str, prefix: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/wrk/replay.lua");
    let output = Command::new(wrk())
        .args(["-t2", "-c2", "-d1s", "--timeout", "10s", "-s"])
        .arg(script)
        .args([url, "--"])
        .arg(prefix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line: {stdout}"));
    serde_json::from_str(line).unwrap()
}

/// Ten lines for a one-second run: both threads run out and say so, and
/// mqgate accepted each line (bar the one wrk takes to check the request's
/// form before the run) and refused only what was sent after running out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_replays_each_line_once_and_reports_running_out() {
    let server = TestServer::start(&config()).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("req");
    presign(&server.endpoint, &prefix, 10, 2);
    let url = server.endpoint.clone();
    let v = tokio::task::spawn_blocking(move || replay(&url, &prefix))
        .await
        .unwrap();
    assert_eq!(v["threads"], 2, "{v}");
    assert_eq!(v["exhausted"], 2, "{v}");
    let requests = v["requests"].as_u64().unwrap();
    let refused = v["non_2xx"].as_u64().unwrap();
    assert!(requests > 10, "{v}");
    assert!((9..=10).contains(&(requests - refused)), "{v}");
    assert!(v["spent_requests"].as_u64().unwrap() >= refused, "{v}");
    for key in ["requests_per_second", "seconds", "p50_ms", "p99_ms"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
}

/// With lines enough, nothing runs out and mqgate accepts every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_with_lines_enough_sends_only_fresh_requests() {
    let server = TestServer::start(&config()).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("req");
    presign(&server.endpoint, &prefix, 30_000, 2);
    let url = server.endpoint.clone();
    let v = tokio::task::spawn_blocking(move || replay(&url, &prefix))
        .await
        .unwrap();
    assert_eq!(v["exhausted"], 0, "{v}");
    assert_eq!(v["non_2xx"], 0, "{v}");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
}

/// The benchmark's durable floor (`baseline --durable-bill`) bills every
/// call it answers with mqgate's metering store before answering: after a
/// SIGKILL, the store holds one billed call for each answer. (Its row would
/// otherwise measure a floor that only claims durability.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_floor_bills_each_answer_before_it() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let bill = dir.path().join("bill");
    let mut child = Command::new(LOAD)
        .args(["baseline", "--listen", "127.0.0.1:0", "--durable-bill"])
        .arg(&bill)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit_once("http=")
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .1
        .parse()
        .unwrap();
    let requests = vec!["GET / HTTP/1.1\r\nHost: floor\r\n\r\n".to_string(); 7];
    let answers = raw_http(addr, &requests).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(answers.len(), 7);
    let meter = mqgate::metering::Meter::open(&bill).unwrap();
    let (_, billed) = meter.month_billed();
    assert_eq!(billed.get("post-cn-floor"), Some(&7), "{billed:?}");
}
