//! Hostile HTTP clients against a real mqgate (the binary, so that its
//! open descriptors are its alone): 10,000 connections that send half a
//! request, a body declared at 100 MB and one byte sent, a body that stops
//! half way, header floods (too many headers, one huge header, a header
//! line that never ends). Each gets the answer or close mqgate documents
//! (README, "What a hostile client meets"), asserted, and the descriptors
//! come back.
//!
//! Meanwhile a well-behaved caller signed as the official SDKs sign
//! (mqgate's own client, V1) is answered 200 every time; its p99 latency
//! beside the hostile clients against a quiet run is printed (goal within
//! 2x), never asserted.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `[http] header_timeout_secs` and `body_timeout_secs` of the test's
/// mqgate (10 s by default: short here to keep the test short).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections that send half a request.
const HALF_REQUESTS: usize = 10_000;
/// Generous bound for a behaviour (a close, an answer): never a timing.
const WITHIN: Duration = Duration::from_secs(30);

/// Writes a figure so that `cargo test` shows it without `--nocapture`
/// (the harness captures `println!`/`eprintln!`, not the stderr handle).
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Raises this process's soft limit on open files to its hard limit (it
/// holds the client end of every hostile connection); the limit reached.
#[allow(unsafe_code)]
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The test's mqgate: the binary, a process of its own.
fn start_mqgate() -> common::Process {
    let (header, body) = (HEADER_TIMEOUT.as_secs(), BODY_TIMEOUT.as_secs());
    common::Process::start(&format!(
        r#"
[http]
listen = "127.0.0.1:0"
header_timeout_secs = {header}
body_timeout_secs = {body}
[mqtt]
listen = "127.0.0.1:0"
[trace]
enabled = false
[limits]
QuerySessionByClientId = 100000
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-hostile"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#
    ))
}

/// One call of the well-behaved caller: signed V1, as the Python core SDK
/// and pop-core sign. Its latency; the call must be answered 200.
async fn good_call(endpoint: &str) -> Duration {
    let params = vec![
        ("InstanceId".to_string(), "post-cn-hostile".to_string()),
        ("ClientId".to_string(), "GID_x@@@nobody".to_string()),
    ];
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        WITHIN,
        mqgate::client::call(
            endpoint,
            "POST",
            mqgate::client::Signing::V1,
            "QuerySessionByClientId",
            &params,
            "testid",
            "testsecret",
        ),
    )
    .await
    .expect("a well-behaved call was not answered")
    .expect("a well-behaved call failed");
    assert_eq!(status, 200, "a well-behaved call: {body}");
    started.elapsed()
}

/// Well-behaved calls one after another until `until` resolves; their
/// latencies.
async fn good_calls_until<F: std::future::Future>(
    endpoint: &str,
    until: F,
) -> (Vec<Duration>, F::Output) {
    let mut until = std::pin::pin!(until);
    let mut latencies = Vec::new();
    loop {
        tokio::select! {
            output = &mut until => return (latencies, output),
            latency = good_call(endpoint) => latencies.push(latency),
        }
    }
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    tokio::time::timeout(WITHIN, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not closed within {WITHIN:?}"));
    got
}

/// The status code of an HTTP answer; 0 if there is none.
fn status(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `count` connections that each send a request line and some headers,
/// never the blank line that ends them: every one must be closed by the
/// server (at the header timeout). How long the last close took.
async fn half_requests(addr: SocketAddr, count: usize) -> Duration {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let half = format!(
            "POST /?Action=QuerySessionByClientId&n={i} HTTP/1.1\r\nHost: mqgate\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Half: "
        );
        stream.write_all(half.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    let mut closing = tokio::task::JoinSet::new();
    for mut stream in streams {
        closing.spawn(async move {
            let answer = until_closed(&mut stream, "a half request").await;
            // Closed without an answer, or with hyper's 408.
            assert!(
                answer.is_empty() || status(&answer) == 408,
                "a half request was answered: {}",
                String::from_utf8_lossy(&answer)
            );
        });
    }
    while let Some(done) = closing.join_next().await {
        done.unwrap();
    }
    started.elapsed()
}

/// The hostile requests other than the half ones, one connection each:
/// each must be answered as documented, then closed.
async fn other_hostile(addr: SocketAddr) {
    // 100 MB declared, one byte sent: refused from the head, at once,
    // with the error table's code and message for a body too large.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: mqgate\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 104857600\r\n\r\na")
        .await
        .unwrap();
    let answer = until_closed(&mut stream, "a 100 MB body").await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 400, "{text}");
    assert!(text.contains("MalformedRequest"), "{text}");
    assert!(text.contains("larger than 262144 bytes"), "{text}");

    // A body within the limit that stops after one byte: answered at the
    // body timeout, then closed (it used to hold the connection for ever).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: mqgate\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\na")
        .await
        .unwrap();
    let answer = until_closed(&mut stream, "a body that stops").await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 400, "{text}");
    assert!(text.contains("MalformedRequest"), "{text}");
    assert!(text.contains("did not arrive within 2 s"), "{text}");

    // More headers than the RPC endpoint takes (64): its 400.
    let headers: String = (0..80).map(|i| format!("X-Flood-{i}: 1\r\n")).collect();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /?Format=JSON HTTP/1.1\r\nHost: mqgate\r\nConnection: close\r\n{headers}\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = until_closed(&mut stream, "80 headers").await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 400, "{text}");
    assert!(
        text.contains("MalformedRequest") && text.contains("headers"),
        "{text}"
    );

    // More than the HTTP layer parses (100): 431, then closed.
    let headers: String = (0..1000).map(|i| format!("X-Flood-{i}: 1\r\n")).collect();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: mqgate\r\n{headers}\r\n").as_bytes())
        .await;
    let answer = until_closed(&mut stream, "1,000 headers").await;
    assert_eq!(status(&answer), 431, "{}", String::from_utf8_lossy(&answer));

    // One header of 1 MB, larger than a request head may be (400 KiB):
    // 431, then closed.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: mqgate\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(1 << 20)
    );
    let (mut read, mut write) = stream.split();
    let (_, answer) = tokio::join!(write.write_all(huge.as_bytes()), async {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WITHIN, read.read_to_end(&mut got)).await;
        got
    });
    assert_eq!(status(&answer), 431, "{}", String::from_utf8_lossy(&answer));

    // A header line that never ends, sent as fast as the server reads:
    // 431 once it passes the head's limit, then closed.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write
            .write_all(b"GET / HTTP/1.1\r\nHost: mqgate\r\nX-Endless: ")
            .await;
        let chunk = vec![b'e'; 16384];
        // Up to 64 MB: far past any limit; the server stops it long before.
        for _ in 0..4096 {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(WITHIN, read.read_to_end(&mut answer))
        .await
        .expect("a never-ending header line was not closed")
        .ok();
    writer.abort();
    assert!(
        answer.is_empty() || status(&answer) == 431,
        "a never-ending header line: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_clients_are_closed_and_the_api_keeps_answering() {
    let limit = raise_descriptor_limit();
    // The client ends of the half requests, and room for the rest.
    let count = HALF_REQUESTS.min(limit.saturating_sub(200) as usize);
    if count < HALF_REQUESTS {
        report(&format!(
            "hostile_http: open-files limit {limit}: {count} half requests instead of {HALF_REQUESTS}"
        ));
    }
    let gate = start_mqgate();
    let endpoint = gate.endpoint();

    // Quiet: the caller alone.
    for _ in 0..20 {
        good_call(&endpoint).await;
    }
    let (mut quiet, ()) =
        good_calls_until(&endpoint, tokio::time::sleep(Duration::from_secs(3))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = gate.fds();

    // Beside the hostile clients.
    let addr = gate.http;
    let hostile = async move {
        let (took, ()) = tokio::join!(half_requests(addr, count), other_hostile(addr));
        took
    };
    let (mut beside, half_took) = good_calls_until(&endpoint, hostile).await;

    // Every descriptor mqgate opened for them is closed again.
    let deadline = Instant::now() + WITHIN;
    let mut fds_after = gate.fds();
    while fds_after > fds_before + 2 {
        assert!(
            Instant::now() < deadline,
            "mqgate holds {fds_after} descriptors after the hostile clients left, {fds_before} before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = gate.fds();
    }
    // Still answering.
    good_call(&endpoint).await;

    let (quiet_calls, beside_calls) = (quiet.len(), beside.len());
    let (quiet_p99, beside_p99) = (p99(&mut quiet), p99(&mut beside));
    report(&format!(
        "hostile_http: {count} half requests all closed (the last {:.1} s after the first opened; header timeout {} s); mqgate's descriptors {fds_before} before, {fds_after} after",
        half_took.as_secs_f64(),
        HEADER_TIMEOUT.as_secs()
    ));
    report(&format!(
        "hostile_http: well-behaved caller (V1, new connection per call) p99 quiet {:.2} ms ({quiet_calls} calls), beside hostile clients {:.2} ms ({beside_calls} calls, every one 200): ratio {:.2} (goal <= 2)",
        quiet_p99.as_secs_f64() * 1e3,
        beside_p99.as_secs_f64() * 1e3,
        beside_p99.as_secs_f64() / quiet_p99.as_secs_f64()
    ));
}
