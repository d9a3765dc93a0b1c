//! The RPC path against its floor (issue 17), measured in one run:
//!
//! - (a) the floor, `mqgate-load baseline` (a plain axum handler with a
//!   fixed JSON body); (b) mqgate's QuerySessionByClientId with its storage
//!   on the disk (a temporary directory); (b0) a second mqgate process, the
//!   same binary and configuration, its storage on tmpfs under /dev/shm,
//!   where fdatasync returns at once: durability off on the same code
//!   path, so (b)/(b0) is what durability costs; (c)
//!   BatchQuerySessionByClientIds with 10 ids on (b)'s process; (d) the
//!   durable floor, `mqgate-load baseline --durable-bill DIR`: the floor's
//!   handler billing each call with mqgate's own metering store (on the
//!   disk beside (b)'s) before answering, and nothing else. (d)/(a) is what
//!   durability alone costs here: the most (b)/(a) could be with the bill
//!   written as mqgate writes it and every other stage free.
//! - fdatasync's own time on (b)'s filesystem (the probe), which bounds
//!   what one caller can get from a server that makes every bill durable
//!   before answering.
//! - Closed-loop rows with `mqgate-load` and with wrk (replaying requests
//!   presigned by `mqgate-load presign`, so that the client spends nothing
//!   on signing: wrk is a load generator mqgate did not write).
//! - A single caller against its fsync bound, and p99 at half the floor's
//!   peak with an open-loop `mqgate-load run --rate` (latency counted from
//!   when each request was due).
//!
//! Every server is a process of its own, killed when the section ends or
//! panics; the presigned files and the tmpfs directory are removed with
//! it.

use super::{
    INSTANCE, LOAD, LoadResult, MAX_REMEMBERED_NONCES, MQGATE, Setting, config_text, load,
    load_with, spawn_server,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;
use tempfile::TempDir;

/// wrk's threads, and so the presigned files of each wrk run.
const WRK_THREADS: usize = 2;
/// Connections of the open-loop runs at half the floor's peak.
const RATE_CONNECTIONS: usize = 100;
/// The single caller's goal: (b) at 1 connection over its fsync bound.
const SINGLE_CALLER_GOAL: f64 = 0.9;
/// At half the floor's peak: p99 (b) <= this x (p99 (a) + fsync p99).
const P99_GOAL: f64 = 1.5;
/// An open-loop run that achieved less than this share of the offered
/// rate was saturated: the results say so beside its p99.
const FELL_SHORT: f64 = 0.95;
/// Bytes the fsync probe preallocates, and writes per timed fdatasync.
const PROBE_FILE_BYTES: usize = 1 << 20;
const PROBE_RECORD_BYTES: usize = 100;
/// fdatasyncs of the probe run in each one-connection round, just before
/// (b) (about 50 ms).
const ROUND_PROBE_ITERATIONS: usize = 400;

const QUERY: &str = "QuerySessionByClientId";
const BATCH: &str = "BatchQuerySessionByClientIds";
/// Where tmpfs is expected: (b0)'s storage, and the presigned files (so
/// that writing them does not load the disk (b) syncs to).
const SHM: &str = "/dev/shm";

/// The section: the servers, the fsync probe, the mqgate-load rows, the
/// wrk rows, the open-loop rounds (their rate from the mqgate-load rows),
/// then the tables and `rpc.csv`.
pub fn rpc(setting: &Setting, out_dir: &Path, results: &mut String) {
    let wrk = wrk_path();
    let servers = Servers::start();
    let fsync = fsync_probe(servers.disk_dir.path(), setting.fsync_iterations);
    let closed = closed_rows(setting, &servers);
    // The floor's highest rate driven by mqgate-load: it sizes the
    // presigned files and sets the open-loop rate.
    let peak = closed
        .iter()
        .map(|(_, rounds)| rounds.median().a.rps)
        .fold(0.0, f64::max);
    let scratch = tempfile::Builder::new()
        .prefix("mqgate-bench-presigned-")
        .tempdir_in(SHM)
        .unwrap();
    let wrk_rows = wrk_rows(setting, &servers, &wrk, peak, scratch.path());
    let rate = peak / 2.0;
    let at_rate = rate_rounds(setting, &servers, rate, fsync.p99_us / 1000.0);

    write_intro(results, setting, &servers, &fsync);
    write_closed(results, setting, &closed);
    write_wrk(results, setting, &wrk_rows, peak);
    write_single_caller(results, &closed, &fsync);
    write_at_rate(results, setting, &at_rate, rate, &fsync);
    std::fs::write(out_dir.join("rpc.csv"), closed_csv(&closed)).unwrap();
}

/// wrk, found on PATH; the section cannot run without it.
fn wrk_path() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("wrk"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "wrk not found: the test command installs Debian's wrk (tests/run_all.sh); or apt-get install wrk"
            )
        })
}

fn query_params() -> Vec<String> {
    vec![
        format!("InstanceId={INSTANCE}"),
        "ClientId=GID_bench@@@dev-1".to_string(),
    ]
}

fn batch_params() -> Vec<String> {
    let mut params = vec![format!("InstanceId={INSTANCE}")];
    params.extend((1..=10).map(|i| format!("ClientIdList.{i}=GID_bench@@@dev-{i}")));
    params
}

/// A server process of this section, killed and reaped when dropped, so
/// that neither the normal path nor a panic leaves one behind.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(program: &str, args: &[&str]) -> Server {
        let (child, addr) = spawn_server(program, args, "http=");
        Server {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// mqgate with the benchmark's configuration, its storage in
    /// `dir/data`.
    fn mqgate(dir: &Path) -> Server {
        let config = dir.join("bench.toml");
        std::fs::write(&config, config_text(&dir.join("data"))).unwrap();
        Server::start(MQGATE, &["serve", "--config", config.to_str().unwrap()])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor, the durable floor and the two mqgate processes. The servers
/// are fields before the directories, so they stop before their storage is
/// removed.
struct Servers {
    floor: Server,
    /// (d): the floor's handler with mqgate's durable bill, storage on the
    /// disk.
    durable_floor: Server,
    /// (b) and (c): storage on the disk.
    disk: Server,
    /// (b0): storage on tmpfs.
    shm: Server,
    disk_dir: TempDir,
    shm_dir: TempDir,
}

impl Servers {
    fn start() -> Servers {
        assert!(
            Path::new(SHM).is_dir(),
            "{SHM} is missing: the rpc section's (b0) keeps a second mqgate's storage on tmpfs there (fsync off, same binary); mount a tmpfs at {SHM}"
        );
        // The system's temporary directory, on the real filesystem here
        // (filesystem_of says which in the results).
        let disk_dir = tempfile::tempdir().unwrap();
        let shm_dir = tempfile::Builder::new()
            .prefix("mqgate-bench-b0-")
            .tempdir_in(SHM)
            .unwrap();
        let bill_dir = disk_dir.path().join("durable-floor");
        Servers {
            floor: Server::start(LOAD, &["baseline", "--listen", "127.0.0.1:0"]),
            durable_floor: Server::start(
                LOAD,
                &[
                    "baseline",
                    "--listen",
                    "127.0.0.1:0",
                    "--durable-bill",
                    bill_dir.to_str().unwrap(),
                ],
            ),
            disk: Server::mqgate(disk_dir.path()),
            shm: Server::mqgate(shm_dir.path()),
            disk_dir,
            shm_dir,
        }
    }
}

/// `fstype (device)` of the filesystem holding `path` (the longest mount
/// point above it in /proc/self/mounts), for the results to say what the
/// disk was.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            let name = if device == kind {
                kind.to_string()
            } else {
                format!("{kind} ({device})")
            };
            path.starts_with(point).then_some((point.len(), name))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "an unknown filesystem".into())
}

/// fdatasync's time on one filesystem, in µs.
struct Fsync {
    p50_us: f64,
    p99_us: f64,
    iterations: usize,
    filesystem: String,
}

/// Times `iterations` fdatasyncs of a 100-byte record each, written at the
/// next offset of a file in `dir` that was preallocated (1 MiB of zeros)
/// and made durable first: each sync then writes data into blocks already
/// allocated, the cheapest durable append the filesystem offers, which is
/// the floor under any write that must be durable before an answer.
fn fsync_probe(dir: &Path, iterations: usize) -> Fsync {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    assert!(iterations * PROBE_RECORD_BYTES <= PROBE_FILE_BYTES);
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    // In 4 KiB writes, so that the page cache holds the file in 4 KiB
    // pages and each sync writes one back (written in one piece, the file
    // sits in large folios and each sync writes 64 KiB back: slower).
    for _ in 0..PROBE_FILE_BYTES / 4096 {
        file.write_all(&[0; 4096]).unwrap();
    }
    file.sync_all().unwrap();
    let record = [0x5a; PROBE_RECORD_BYTES];
    let mut times: Vec<f64> = (0..iterations)
        .map(|i| {
            file.write_all_at(&record, (i * PROBE_RECORD_BYTES) as u64)
                .unwrap();
            let began = Instant::now();
            // fdatasync(2) on Linux.
            file.sync_data().unwrap();
            began.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    drop(file);
    std::fs::remove_file(&path).unwrap();
    times.sort_by(f64::total_cmp);
    Fsync {
        p50_us: percentile(&times, 50.0),
        p99_us: percentile(&times, 99.0),
        iterations,
        filesystem: filesystem_of(dir),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// Interleaved rounds of one measurement, sorted by the figure the row is
/// chosen by: the row is the median round, and the lowest and highest
/// figure of all rounds show the spread, so that one noisy stretch of a
/// shared machine moves the spread, not the row.
struct Rounds<T> {
    sorted: Vec<T>,
    key: fn(&T) -> f64,
}

impl<T> Rounds<T> {
    fn new(mut rounds: Vec<T>, key: fn(&T) -> f64) -> Rounds<T> {
        assert!(!rounds.is_empty(), "at least one round");
        rounds.sort_by(|x, y| key(x).total_cmp(&key(y)));
        Rounds {
            sorted: rounds,
            key,
        }
    }

    fn median(&self) -> &T {
        &self.sorted[self.sorted.len() / 2]
    }

    /// The median's figure with the lowest and highest in brackets.
    fn figure(&self) -> String {
        let key = self.key;
        format!(
            "{:.2} ({:.2}-{:.2})",
            key(self.median()),
            key(&self.sorted[0]),
            key(&self.sorted[self.sorted.len() - 1])
        )
    }
}

/// One round of the mqgate-load rows.
struct Closed {
    a: LoadResult,
    b: LoadResult,
    b0: LoadResult,
    c: LoadResult,
    d: LoadResult,
    /// At one connection: the disk's fdatasync p50 (µs) measured just
    /// before (b) in this round, which bounds this round's (b). The disk is
    /// shared and its sync time moves by tens of µs within minutes, so the
    /// probe run once before the rows would bound the wrong minute.
    fsync_p50_us: Option<f64>,
}

impl Closed {
    fn b_over_a(&self) -> f64 {
        self.b.rps / self.a.rps
    }

    /// The share of (b0)'s throughput that making bills durable takes.
    fn durability_cost(&self) -> f64 {
        1.0 - self.b.rps / self.b0.rps
    }
}

/// `setting.rpc_rounds` interleaved rounds of (a), (b), (b0), (c) at each
/// connection count, closed loop with mqgate-load.
fn closed_rows(setting: &Setting, servers: &Servers) -> Vec<(usize, Rounds<Closed>)> {
    let (query, batch) = (query_params(), batch_params());
    setting
        .http_connections
        .iter()
        .map(|&n| {
            let rounds = (0..setting.rpc_rounds)
                .map(|_| {
                    let run = |server: &Server, action: &str, params: &[String]| {
                        load(&server.url, action, params, n, setting.seconds)
                    };
                    let a = run(&servers.floor, QUERY, &query);
                    let fsync_p50_us = (n == 1).then(|| {
                        fsync_probe(servers.disk_dir.path(), ROUND_PROBE_ITERATIONS).p50_us
                    });
                    let round = Closed {
                        a,
                        b: run(&servers.disk, QUERY, &query),
                        d: run(&servers.durable_floor, QUERY, &query),
                        b0: run(&servers.shm, QUERY, &query),
                        c: run(&servers.disk, BATCH, &batch),
                        fsync_p50_us,
                    };
                    assert!(
                        [round.a, round.b, round.b0, round.c, round.d]
                            .iter()
                            .all(|r| r.ok),
                        "every benchmark call must answer 200"
                    );
                    round
                })
                .collect();
            (n, Rounds::new(rounds, Closed::b_over_a))
        })
        .collect()
}

/// What `bench/wrk/replay.lua` reported for one wrk run.
#[derive(Clone, Debug)]
struct WrkRun {
    rps: f64,
    p99: f64,
    /// Answers with a status above 399 (wrk's count).
    non_2xx: u64,
    /// Connect, read and write errors and timeouts.
    socket_errors: u64,
    /// Threads that ran out of presigned lines.
    exhausted: u64,
    /// The JSON line as printed, for a panic to show.
    line: String,
}

impl WrkRun {
    fn parse(stdout: &str) -> WrkRun {
        let line = stdout
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON line from replay.lua in wrk's output:\n{stdout}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let count = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
        WrkRun {
            rps: v["requests_per_second"].as_f64().unwrap(),
            p99: v["p99_ms"].as_f64().unwrap(),
            non_2xx: count("non_2xx"),
            socket_errors: ["connect_errors", "read_errors", "write_errors", "timeouts"]
                .iter()
                .map(|k| count(k))
                .sum(),
            exhausted: count("exhausted"),
            line: line.to_string(),
        }
    }
}

/// One round of the wrk rows.
struct WrkRound {
    a: WrkRun,
    b: WrkRun,
    b0: WrkRun,
    d: WrkRun,
}

impl WrkRound {
    fn b_over_a(&self) -> f64 {
        self.b.rps / self.a.rps
    }
}

/// Presigned lines for one wrk run of `seconds`: four times the floor's
/// peak under mqgate-load (wrk spends nothing on signing, so it drives a
/// server faster), at least 20,000; fewer than mqgate remembers nonces, or
/// it would refuse fresh requests as its nonce set filled.
fn presigned_lines(seconds: u64, peak: f64) -> u64 {
    let lines = ((seconds as f64 * 4.0 * peak).ceil() as u64).max(20_000);
    assert!(
        lines < MAX_REMEMBERED_NONCES,
        "{lines} presigned lines: more than the {MAX_REMEMBERED_NONCES} nonces mqgate remembers"
    );
    lines
}

/// `setting.rpc_rounds` interleaved rounds of (a), (b), (b0) with wrk at
/// each of `setting.wrk_connections`.
fn wrk_rows(
    setting: &Setting,
    servers: &Servers,
    wrk: &Path,
    peak: f64,
    scratch: &Path,
) -> Vec<(usize, Rounds<WrkRound>)> {
    let lines = presigned_lines(setting.wrk_seconds, peak);
    setting
        .wrk_connections
        .iter()
        .map(|&n| {
            let rounds = (0..setting.rpc_rounds)
                .map(|_| {
                    let run = |server: &Server, name: &str| {
                        let run = wrk_run(wrk, server, n, setting.wrk_seconds, lines, scratch);
                        assert!(
                            run.non_2xx == 0 && run.exhausted == 0,
                            "wrk against {name} at {n} connections: every answer must be 2xx and no thread may run out of presigned lines ({lines} in all); replay.lua said {}",
                            run.line
                        );
                        run
                    };
                    WrkRound {
                        a: run(&servers.floor, "(a) the floor"),
                        b: run(&servers.disk, "(b) mqgate on the disk"),
                        d: run(&servers.durable_floor, "(d) the durable floor"),
                        b0: run(&servers.shm, "(b0) mqgate on tmpfs"),
                    }
                })
                .collect();
            (n, Rounds::new(rounds, WrkRound::b_over_a))
        })
        .collect()
}

/// One wrk run against `server`: a fresh presigned file set made just
/// before it (after the server started, so that no line is older than
/// the server's replay fence), removed right after it.
fn wrk_run(
    wrk: &Path,
    server: &Server,
    connections: usize,
    seconds: u64,
    lines: u64,
    scratch: &Path,
) -> WrkRun {
    let prefix = scratch.join("requests");
    presign(&server.url, &prefix, lines);
    let output = Command::new(wrk)
        .args(["-t", &WRK_THREADS.to_string()])
        .args(["-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
        .arg(replay_script())
        .args([server.url.as_str(), "--"])
        .arg(&prefix)
        .output();
    for n in 0..WRK_THREADS {
        let _ = std::fs::remove_file(format!("{}.{n}", prefix.display()));
    }
    let output = output.unwrap_or_else(|e| panic!("wrk: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    WrkRun::parse(&stdout)
}

/// `bench/wrk/replay.lua`.
fn replay_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/wrk/replay.lua")
}

/// `mqgate-load presign`: `lines` QuerySessionByClientId request targets
/// signed as `load` signs them, in `prefix.0` and `prefix.1`.
fn presign(url: &str, prefix: &Path, lines: u64) {
    let mut command = Command::new(LOAD);
    command.args(["presign", "--url", url, "--action", QUERY]);
    for p in query_params() {
        command.args(["--param", &p]);
    }
    command
        .args(["--count", &lines.to_string()])
        .args(["--files", &WRK_THREADS.to_string()])
        .arg("--out")
        .arg(prefix);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "mqgate-load presign: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One round at half the floor's peak: (a), (b) and (d), open loop, and
/// p99 (b) over p99 (a) plus fsync's p99.
struct RateRound {
    a: LoadResult,
    b: LoadResult,
    d: LoadResult,
    ratio: f64,
}

/// `setting.rpc_rounds` interleaved rounds of (a) and (b) at `rate`
/// requests/s, open loop over RATE_CONNECTIONS connections.
fn rate_rounds(
    setting: &Setting,
    servers: &Servers,
    rate: f64,
    fsync_p99_ms: f64,
) -> Rounds<RateRound> {
    let query = query_params();
    let run = |server: &Server| {
        let r = load_with(
            &server.url,
            QUERY,
            &query,
            RATE_CONNECTIONS,
            setting.rate_seconds,
            Some(rate),
        );
        assert!(r.ok, "every benchmark call must answer 200");
        r
    };
    let rounds = (0..setting.rpc_rounds)
        .map(|_| {
            let (a, b, d) = (
                run(&servers.floor),
                run(&servers.disk),
                run(&servers.durable_floor),
            );
            RateRound {
                a,
                b,
                d,
                ratio: b.p99 / (a.p99 + fsync_p99_ms),
            }
        })
        .collect();
    Rounds::new(rounds, |r| r.ratio)
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}

fn write_intro(results: &mut String, setting: &Setting, servers: &Servers, fsync: &Fsync) {
    let _ = writeln!(results, "## RPC path against its floor\n");
    let _ = writeln!(
        results,
        "(a) `mqgate-load baseline`, a plain axum handler with a fixed JSON body (the floor); (b) mqgate's QuerySessionByClientId, its storage on the disk (a temporary directory, {}); (b0) a second mqgate process, the same binary and configuration, its storage on {} under {SHM}, where fdatasync returns at once: durability off on the same code path; (c) BatchQuerySessionByClientIds with 10 ids on (b)'s process; (d) the durable floor, `mqgate-load baseline --durable-bill DIR`: the floor's handler, but each call is first billed with mqgate's own metering store, its storage on the disk beside (b)'s, durable before the answer as in (b), and nothing else ((d)/(a) is what durability alone costs on this machine: the most (b)/(a) could be with the bill written as mqgate writes it and every other stage free). Every request signed (V1), a fresh nonce each; every bill durable before the answer. Durability's cost is 1 - (b)/(b0) in the same round. Each row is the median round of {} interleaved rounds by the figure that has a range in brackets, the range being that figure's lowest and highest over all rounds. Every call answered 200 (asserted).\n",
        filesystem_of(servers.disk_dir.path()),
        filesystem_of(servers.shm_dir.path()),
        setting.rpc_rounds
    );
    let _ = writeln!(
        results,
        "**fsync on (b)'s filesystem**, measured in the same run before the rows: a file beside (b)'s storage ({}), 1 MiB of zeros written (in 4 KiB writes) and fsynced, then {} x (pwrite {PROBE_RECORD_BYTES} bytes at the next offset, fdatasync), each fdatasync timed: **p50 {:.0} µs, p99 {:.0} µs**. No goal of its own: it is the bound the goals below are read against.\n",
        fsync.filesystem, fsync.iterations, fsync.p50_us, fsync.p99_us
    );
}

fn write_closed(results: &mut String, setting: &Setting, rows: &[(usize, Rounds<Closed>)]) {
    let _ = writeln!(results, "### Closed loop, mqgate-load\n");
    let _ = writeln!(
        results,
        "`mqgate-load run`: each connection sends its next request (signed as it goes) when the last is answered; {} s per point, (a), (b), (d), (b0), (c) in turn in each round; the row is the median round by (b)/(a). {GOALS}\n",
        setting.seconds
    );
    let _ = writeln!(
        results,
        "| connections | (a) req/s | (b) req/s | (b0) req/s | (c) req/s | (d) req/s | (b)/(a) | (b0)/(a) | durability's cost | (c)/(a) | (d)/(a) | p99 (a) ms | p99 (b) ms | p99 (b0) ms | p99 (c) ms | p99 (d) ms |"
    );
    let _ = writeln!(
        results,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (n, rounds) in rows {
        let r = rounds.median();
        let _ = writeln!(
            results,
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.a.rps,
            r.b.rps,
            r.b0.rps,
            r.c.rps,
            r.d.rps,
            rounds.figure(),
            r.b0.rps / r.a.rps,
            r.durability_cost(),
            r.c.rps / r.a.rps,
            r.d.rps / r.a.rps,
            r.a.p99,
            r.b.p99,
            r.b0.p99,
            r.c.p99,
            r.d.p99
        );
    }
    let _ = writeln!(results);
    write_goals(
        results,
        rows.iter().map(|(n, rounds)| {
            let r = rounds.median();
            (
                *n,
                r.b.rps / r.a.rps,
                r.durability_cost(),
                r.d.rps / r.a.rps,
            )
        }),
    );
}

fn write_wrk(
    results: &mut String,
    setting: &Setting,
    rows: &[(usize, Rounds<WrkRound>)],
    peak: f64,
) {
    let _ = writeln!(results, "### Closed loop, wrk\n");
    let _ = writeln!(
        results,
        "wrk 4.1 (`wrk -t{WRK_THREADS} -c N -d {}s --timeout 10s -s bench/wrk/replay.lua`), each thread replaying its own file of requests presigned by `mqgate-load presign` (V1, a fresh nonce each, signed as mqgate-load signs), each line sent once; a fresh file set of {} lines (4 x the floor's peak under mqgate-load x the seconds, at least 20,000; on tmpfs) for every run, made just before it, after the servers started, and removed after it, so the client spends nothing on signing. (a), (b), (d), (b0) in turn in each round; the row is the median round by (b)/(a). Every answer 2xx and no thread out of lines (asserted); socket errors are wrk's connect, read, write errors and timeouts of (a)/(b)/(d)/(b0). {GOALS}\n",
        setting.wrk_seconds,
        presigned_lines(setting.wrk_seconds, peak)
    );
    let _ = writeln!(
        results,
        "| connections | (a) req/s | (b) req/s | (b0) req/s | (d) req/s | (b)/(a) | (b0)/(a) | durability's cost | (d)/(a) | p99 (a) ms | p99 (b) ms | p99 (b0) ms | p99 (d) ms | socket errors |"
    );
    let _ = writeln!(
        results,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (n, rounds) in rows {
        let r = rounds.median();
        let _ = writeln!(
            results,
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {}/{}/{}/{} |",
            r.a.rps,
            r.b.rps,
            r.b0.rps,
            r.d.rps,
            rounds.figure(),
            r.b0.rps / r.a.rps,
            1.0 - r.b.rps / r.b0.rps,
            r.d.rps / r.a.rps,
            r.a.p99,
            r.b.p99,
            r.b0.p99,
            r.d.p99,
            r.a.socket_errors,
            r.b.socket_errors,
            r.d.socket_errors,
            r.b0.socket_errors
        );
    }
    let _ = writeln!(results);
    write_goals(
        results,
        rows.iter().map(|(n, rounds)| {
            let r = rounds.median();
            (
                *n,
                r.b.rps / r.a.rps,
                1.0 - r.b.rps / r.b0.rps,
                r.d.rps / r.a.rps,
            )
        }),
    );
}

/// The goals of the closed-loop tables.
const GOALS: &str = "Goals (issue 17), at 100 and 1,000 connections: (b)/(a) >= 0.80, and durability's cost, 1 - (b)/(b0), <= 0.10; the line under the table says which are met.";
const RATIO_GOAL: f64 = 0.80;
const DURABILITY_GOAL: f64 = 0.10;

/// One line under a closed-loop table: each goal at 100 and 1,000
/// connections (the rows that have them), met or not, and beside the
/// ratio goal what the durable floor (d) reached in the same round.
fn write_goals(results: &mut String, rows: impl Iterator<Item = (usize, f64, f64, f64)>) {
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let parts: Vec<String> = rows
        .filter(|(n, ..)| *n == 100 || *n == 1000)
        .map(|(n, ratio, cost, durable_floor)| {
            format!(
                "{n} connections: (b)/(a) {ratio:.2}, {} (the durable floor (d)/(a): {durable_floor:.2}); durability's cost {cost:.2}, {}",
                verdict(ratio >= RATIO_GOAL),
                verdict(cost <= DURABILITY_GOAL)
            )
        })
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(results, "Goals: {}.\n", parts.join("; "));
    }
}

/// What one caller can get from a server that makes each call durable
/// before answering: one floor's round trip plus one fdatasync per call.
fn fsync_bound(floor_rps: f64, fsync_p50_us: f64) -> f64 {
    1.0 / (1.0 / floor_rps + fsync_p50_us / 1e6)
}

fn write_single_caller(results: &mut String, rows: &[(usize, Rounds<Closed>)], fsync: &Fsync) {
    let (_, rounds) = rows
        .iter()
        .find(|(n, _)| *n == 1)
        .expect("the closed-loop rows include 1 connection");
    // Each round against the probe run just before its (b).
    let probe = |r: &Closed| r.fsync_p50_us.unwrap_or(fsync.p50_us);
    let figure = |r: &Closed| r.b.rps / fsync_bound(r.a.rps, probe(r));
    let mut by_figure: Vec<&Closed> = rounds.sorted.iter().collect();
    by_figure.sort_by(|x, y| figure(x).total_cmp(&figure(y)));
    let low = figure(by_figure[0]);
    let high = figure(by_figure[by_figure.len() - 1]);
    let r = by_figure[by_figure.len() / 2];
    let bound = fsync_bound(r.a.rps, probe(r));
    let _ = writeln!(results, "### A single caller against its fsync bound\n");
    let _ = writeln!(
        results,
        "One connection, closed loop (the 1-connection row above, its median round by this figure): every call waits for its bill to be durable, so one caller can get at most bound = 1 / (1/(a) + fsync p50), a floor's round trip plus one fdatasync per call. The fsync p50 is the round's own: {ROUND_PROBE_ITERATIONS} fdatasyncs of the probe, run just before the round's (b) (the disk's sync time moves by tens of µs within minutes). Figure = (b) / bound; goal >= {SINGLE_CALLER_GOAL}. (d)/bound, the durable floor in the same round against the same bound, is what the bill's write alone leaves of it.\n"
    );
    let _ = writeln!(
        results,
        "| (a) req/s | fsync p50 µs | bound req/s | (b) req/s | (b)/bound | goal | | (d) req/s | (d)/bound |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|---|---|---|");
    let value = figure(r);
    let _ = writeln!(
        results,
        "| {:.0} | {:.0} | {bound:.0} | {:.0} | {value:.3} ({low:.3}-{high:.3}) | >= {SINGLE_CALLER_GOAL} | {} | {:.0} | {:.3} |\n",
        r.a.rps,
        probe(r),
        r.b.rps,
        met(value >= SINGLE_CALLER_GOAL),
        r.d.rps,
        r.d.rps / bound
    );
    if value > 1.0 {
        let _ = writeln!(
            results,
            "Above 1: (b) beat its bound, so its durable writes cost less than the probe's fdatasyncs did just before (the disk is shared, and its sync time moves from minute to minute). The figure then says little.\n"
        );
    }
}

fn write_at_rate(
    results: &mut String,
    setting: &Setting,
    rounds: &Rounds<RateRound>,
    rate: f64,
    fsync: &Fsync,
) {
    let r = rounds.median();
    let fsync_p99_ms = fsync.p99_us / 1000.0;
    let _ = writeln!(results, "### p99 at half the floor's peak\n");
    let _ = writeln!(
        results,
        "Open loop: `mqgate-load run --rate {rate:.0} --connections {RATE_CONNECTIONS}`, half the highest (a) req/s of the mqgate-load rows; each connection sends its share on a fixed schedule (connection i starting i/rate after the first, so the sends interleave), a request going at its time or at once if its connection is behind, its latency counted from when it was due (a stalled server is charged for every request it held up; the schedule's timer has 1 ms resolution). {} s per run, (a), (b), (d) in turn in each round; the row is the median round by p99 (b) / (p99 (a) + fsync p99). Goal: p99 (b) <= {P99_GOAL} x (p99 (a) + fsync p99); the durable floor's (d) own ratio is beside it.\n",
        setting.rate_seconds
    );
    let _ = writeln!(
        results,
        "| offered req/s | (a) req/s | (b) req/s | p99 (a) ms | p99 (b) ms | fsync p99 ms | p99 (b) / (p99 (a) + fsync p99) | goal | | (d) req/s | p99 (d) ms | p99 (d) / (p99 (a) + fsync p99) |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        results,
        "| {rate:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {fsync_p99_ms:.3} | {} | <= {P99_GOAL} | {} | {:.0} | {:.3} | {:.2} |\n",
        r.a.rps,
        r.b.rps,
        r.a.p99,
        r.b.p99,
        rounds.figure(),
        met(r.ratio <= P99_GOAL),
        r.d.rps,
        r.d.p99,
        r.d.p99 / (r.a.p99 + fsync_p99_ms)
    );
    for (name, achieved) in [("(a)", r.a.rps), ("(b)", r.b.rps), ("(d)", r.d.rps)] {
        if achieved < FELL_SHORT * rate {
            let _ = writeln!(
                results,
                "{name} fell short of the offered rate ({achieved:.0} of {rate:.0} req/s): it was saturated, so its p99 is the time requests queued behind the ones it could not keep up with.\n"
            );
        }
    }
}

/// The mqgate-load rows' median rounds, for the plots.
fn closed_csv(rows: &[(usize, Rounds<Closed>)]) -> String {
    let mut csv = String::from(
        "connections,floor_rps,query_rps,query_tmpfs_rps,batch_rps,floor_p99_ms,query_p99_ms,query_tmpfs_p99_ms,batch_p99_ms,durability_cost,durable_floor_rps,durable_floor_p99_ms\n",
    );
    for (n, rounds) in rows {
        let r = rounds.median();
        let _ = writeln!(
            csv,
            "{n},{:.1},{:.1},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{:.3}",
            r.a.rps,
            r.b.rps,
            r.b0.rps,
            r.c.rps,
            r.a.p99,
            r.b.p99,
            r.b0.p99,
            r.c.p99,
            r.durability_cost(),
            r.d.rps,
            r.d.p99
        );
    }
    csv
}
