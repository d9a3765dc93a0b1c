//! The `mqgate` binary as a user runs it: bad configuration files, the demo,
//! `mqgate call`, and clean shutdown on SIGTERM and SIGINT.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mqgate");

fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn good_config(dir: &tempfile::TempDir) -> String {
    format!(
        r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[storage]
dir = {:?}
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-demo"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#,
        dir.path().join("data").display().to_string()
    )
}

#[test]
fn a_bad_config_stops_start_up_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_config(&dir);
    let cases = [
        (
            "typo.toml",
            good.replace("[http]\n", "[http]\nlisen = 1\n"),
            "lisen",
        ),
        (
            "port.toml",
            good.replace("127.0.0.1:0\"\n[mqtt]", "127.0.0.1:99999\"\n[mqtt]"),
            "listen",
        ),
        (
            "dup.toml",
            good.replace(
                "  [[accounts.users]]",
                "  [[accounts.instances]]\n  id = \"post-cn-demo\"\n  [[accounts.users]]",
            ),
            "accounts[0].instances[1].id",
        ),
        (
            "nokey.toml",
            good.replace("  access_key_id = \"testid\"\n", ""),
            "access_key_id",
        ),
        ("syntax.toml", "[http\n".to_string(), "line 1"),
    ];
    for (name, text, field) in cases {
        let path = write_config(&dir, name, &text);
        let output = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(field),
            "{name}: expected {field} in {stderr}"
        );
    }
    let output = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/mqgate.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/mqgate.toml"));
}

struct Running {
    child: Child,
    http: String,
}

/// Starts `mqgate serve` and reads the addresses from its first line.
fn spawn(args: &[&str]) -> Running {
    let (child, http) = common::spawn_mqgate(args, Stdio::null());
    Running { child, http }
}

fn signal_and_wait(mut running: Running, signal: &str) -> std::process::ExitStatus {
    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "mqgate did not stop within 10 s of {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn call(endpoint: &str, key: (&str, &str), args: &[&str]) -> (bool, String) {
    let output = Command::new(BIN)
        .arg("call")
        .args(["--endpoint", endpoint])
        .args(args)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", key.0)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", key.1)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, "ok.toml", &good_config(&dir));
        let running = spawn(&["serve", "--config", path.to_str().unwrap()]);
        let endpoint = format!("http://{}", running.http);
        let (ok, out) = call(
            &endpoint,
            ("testid", "testsecret"),
            &[
                "QuerySessionByClientId",
                "InstanceId=post-cn-demo",
                "ClientId=x",
            ],
        );
        assert!(ok, "{out}");
        assert!(out.contains("\"OnlineStatus\": false"), "{out}");
        let status = signal_and_wait(running, signal);
        assert!(status.success(), "{signal}: {status:?}");
    }
}

/// `mqgate serve` with no configuration: the demo on 127.0.0.1:8080 and
/// :1883, answering the example call it prints.
#[test]
fn the_demo_runs_without_configuration() {
    let running = spawn(&["serve"]);
    assert_eq!(running.http, "127.0.0.1:8080");
    let endpoint = format!("http://{}", running.http);
    let key = (
        mqgate::config::demo::ACCESS_KEY_ID,
        mqgate::config::demo::ACCESS_KEY_SECRET,
    );
    let instance = format!("InstanceId={}", mqgate::config::demo::INSTANCE_ID);
    let (ok, out) = call(
        &endpoint,
        key,
        &[
            "QuerySessionByClientId",
            &instance,
            "ClientId=GID_demo@@@dev-1",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = call(
        &endpoint,
        ("wrong", "key"),
        &["QuerySessionByClientId", &instance, "ClientId=c"],
    );
    assert!(!ok && out.contains("InvalidAccessKeyId.NotFound"), "{out}");
    assert!(signal_and_wait(running, "-TERM").success());
}

/// SIGHUP reloads users and policies; a reload that fails validation keeps
/// the old set and says why; a changed file is picked up without a signal.
#[test]
fn sighup_and_file_changes_reload_and_a_bad_reload_keeps_the_old_set() {
    let dir = tempfile::tempdir().unwrap();
    let base = good_config(&dir);
    let with_user = |policies: &str| {
        format!(
            "{base}  [[accounts.users]]\n  name = \"ops\"\n  access_key_id = \"ops-key\"\n  access_key_secret = \"ops-secret\"\n  policies = [{policies}]\n"
        )
    };
    let path = write_config(&dir, "reload.toml", &with_user(""));
    let log = dir.path().join("stderr.log");
    let (child, http) = common::spawn_mqgate(
        &["serve", "--config", path.to_str().unwrap()],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let endpoint = format!("http://{http}");
    let pid = child.id().to_string();
    let query = || {
        call(
            &endpoint,
            ("ops-key", "ops-secret"),
            &[
                "QuerySessionByClientId",
                "InstanceId=post-cn-demo",
                "ClientId=x",
            ],
        )
    };
    let eventually = |want_ok: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out) = query();
            if ok == want_ok {
                return out;
            }
            assert!(Instant::now() < deadline, "still {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let (ok, out) = query();
    assert!(!ok && out.contains("Forbidden.RAM"), "{out}");

    // A policy attached, then SIGHUP.
    std::fs::write(&path, with_user("\"AliyunMQReadOnlyAccess\"")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(true);

    // A broken policy file: refused, the old set stays, the log says why.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"IpAddress": {"acs:SourceIp": "300.1.1.1"}}}]}"#).unwrap();
    std::fs::write(&path, with_user("\"broken.json\"")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("reload refused")
    {
        assert!(Instant::now() < deadline, "no refusal logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("broken.json") && logged.contains("Statement[0]"),
        "{logged}"
    );
    let (ok, out) = query();
    assert!(ok, "the old set should still allow: {out}");

    // Fixed on disk, no signal: the file watch reloads it (policy removed).
    std::fs::write(&path, with_user("")).unwrap();
    let out = eventually(false);
    assert!(out.contains("Forbidden.RAM"), "{out}");

    assert!(signal_and_wait(Running { child, http }, "-TERM").success());
}
