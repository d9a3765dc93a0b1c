//! `mqgate-load presign`: signed request targets written to files, for a
//! load generator that cannot sign (wrk, with `bench/wrk/replay.lua`) to
//! replay against mqgate. Each line is one request: `/?Action=...` with a
//! V1 signature, a fresh nonce and the current time, exactly as `run`
//! signs a GET. mqgate accepts each line once (a second sending is a
//! replay), so a replaying client must never send a line twice.
//!
//! The lines are split evenly over `--files` files, `PREFIX.0` to
//! `PREFIX.{files-1}` (one per wrk thread), each written by a thread of its
//! own: signing is the work, and a million lines take a few seconds.

use crate::SignArgs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct PresignArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// Request targets to write in all, split evenly over the files.
    #[arg(long)]
    count: u64,
    /// Files to write: PREFIX.0 .. PREFIX.{files-1}.
    #[arg(long, default_value_t = 1)]
    files: usize,
    /// The files' path, without the `.N`.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
}

pub fn run(args: &PresignArgs) -> Result<(), String> {
    if args.sign.signature != "v1" {
        return Err(
            "presign writes V1 GET request targets only (V3 signs headers a replayed line would not carry)"
                .into(),
        );
    }
    if args.files == 0 {
        return Err("--files must be at least 1".into());
    }
    // The Host header is the replaying client's; V1 does not sign it, but
    // a bad --url is refused here as `run` refuses it.
    args.sign.authority()?;
    let params = args.sign.params()?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..args.files)
            .map(|file| {
                let path = file_path(&args.out, file);
                let lines = share(args.count, args.files, file);
                let params = &params;
                scope.spawn(move || write_file(&path, lines, &args.sign, params))
            })
            .collect();
        writers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| "a writer thread panicked".to_string())?
        })
    })?;
    println!(
        "{} signed request targets in {} files {}.0 .. .{} ({:.2} s)",
        args.count,
        args.files,
        args.out.display(),
        args.files - 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `PREFIX.N`.
fn file_path(prefix: &Path, n: usize) -> PathBuf {
    let mut path = prefix.as_os_str().to_owned();
    path.push(format!(".{n}"));
    PathBuf::from(path)
}

/// File `n`'s share of `count` lines over `files`: the first
/// `count % files` files take one more.
fn share(count: u64, files: usize, n: usize) -> u64 {
    let files = files as u64;
    count / files + u64::from((n as u64) < count % files)
}

/// Writes `lines` freshly signed request targets to `path`.
fn write_file(
    path: &Path,
    lines: u64,
    sign: &SignArgs,
    params: &[(String, String)],
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(fail)?);
    for _ in 0..lines {
        writeln!(out, "/?{}", sign.v1_form("GET", params)).map_err(fail)?;
    }
    out.flush().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn shares_add_up_to_the_count() {
        for (count, files) in [(0, 1), (7, 2), (10, 3), (1_000_000, 2), (5, 8)] {
            let shares: Vec<u64> = (0..files).map(|n| share(count, files, n)).collect();
            assert_eq!(shares.iter().sum::<u64>(), count, "{count} over {files}");
            let (min, max) = (shares.iter().min(), shares.iter().max());
            assert!(max.unwrap() - min.unwrap() <= 1, "{shares:?}");
        }
    }

    /// Each line is what `run` would send: re-signing its own parameters
    /// (nonce and timestamp included) gives the same line back, and no
    /// nonce repeats across the files.
    #[test]
    fn lines_are_v1_targets_signed_as_run_signs() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("req");
        let cli = crate::Cli::parse_from([
            "mqgate-load",
            "presign",
            "--url",
            "http://127.0.0.1:1",
            "--param",
            "InstanceId=post-cn-x",
            "--param",
            "ClientId=GID_a@@@dev-1",
            "--count",
            "7",
            "--files",
            "2",
            "--out",
            prefix.to_str().unwrap(),
        ]);
        let crate::Command::Presign(args) = cli.command else {
            panic!("not presign");
        };
        run(&args).unwrap();
        let mut nonces = std::collections::HashSet::new();
        for (n, expected) in [(0, 4), (1, 3)] {
            let text = std::fs::read_to_string(file_path(&prefix, n)).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), expected);
            for line in lines {
                let query = line.strip_prefix("/?").expect("a request target");
                let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
                let get = |k: &str| pairs.iter().find(|(n, _)| n == k).unwrap().1.clone();
                assert!(nonces.insert(get("SignatureNonce")), "nonce repeated");
                let at = chrono::DateTime::parse_from_rfc3339(&get("Timestamp")).unwrap();
                let again = mqgate::client::encode_form(&mqgate::client::sign_v1(
                    "GET",
                    "QuerySessionByClientId",
                    &[
                        ("InstanceId".into(), "post-cn-x".into()),
                        ("ClientId".into(), "GID_a@@@dev-1".into()),
                    ],
                    "testid",
                    "testsecret",
                    at.with_timezone(&chrono::Utc),
                    &get("SignatureNonce"),
                ));
                assert_eq!(query, again);
            }
        }
    }

    #[test]
    fn refuses_v3() {
        let cli = crate::Cli::parse_from([
            "mqgate-load",
            "presign",
            "--url",
            "http://127.0.0.1:1",
            "--signature",
            "v3",
            "--count",
            "1",
            "--out",
            "/nonexistent/x",
        ]);
        let crate::Command::Presign(args) = cli.command else {
            panic!("not presign");
        };
        assert!(run(&args).unwrap_err().contains("V1"));
    }
}
