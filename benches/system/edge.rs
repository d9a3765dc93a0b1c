//! The device edge (issue 15), measured from outside: only mqgate's public
//! interfaces (its binary and configuration, the MQTT port, the HTTP API)
//! and `mqgate-load`, so that the same sections measure the front layer of
//! today and whatever replaces it.
//!
//! - `idle`: resident memory and descriptors per idle MQTT 3.1.1 device,
//!   over TCP, TLS, WebSocket and secure WebSocket (each where the build
//!   takes the configuration for it).
//! - `capacity`: the most idle devices one mqgate process holds under its
//!   descriptor limit.
//! - `connect_rate`: authenticated CONNECTs per second through mqgate
//!   against a plain rumqttd (`mqgate-load rumqttd`) in the same run.
//! - `flood`: QuerySessionByClientId's latency while devices connect,
//!   authenticate and leave at 5,000 a second.
//! - `slow_subscriber`: a publisher/subscriber pair beside subscribers that
//!   never read their sockets.
//! - `hostile`: a publisher/subscriber pair beside hostile MQTT clients
//!   (malformed packets, 256 MB headers, 10,000 filters in a SUBSCRIBE, a
//!   QoS 2 flood without PUBREL, dribbled CONNECTs) and mqgate's memory
//!   after they left; the HTTP API's p99 beside half-sent requests and
//!   header floods (what `tests/hostile_*.rs` assert, measured).
//!
//! Every server here is a separate mqgate process (the binary the
//! benchmark was built with) whose soft descriptor limit is raised to its
//! hard limit before it starts, so that nothing depends on mqgate raising
//! it itself.

use super::{INSTANCE, LOAD, MQGATE, Setting, config_text_full, rss_kib};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keepalive of the benchmark's idle devices: they never ping, and no
/// section lasts an hour.
const KEEP_ALIVE: u16 = 3600;
/// How long a device may take to get its CONNACK.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);
/// The root key of the benchmark's configuration; the Signature login of
/// its instance.
const SIGNATURE: &str = "testid:testsecret:post-cn-bench";

/// `sh -c` words that raise the soft descriptor limit to the hard one, then
/// run the program that follows (`"$0" "$@"`).
const RAISED_LIMIT: &str = r#"ulimit -Sn "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#;

/// A command running `program` with its soft descriptor limit raised to the
/// hard limit (a setrlimit in the shell before the exec).
fn raised(program: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", RAISED_LIMIT, program]);
    command
}

/// Raises this process's soft descriptor limit to its hard limit (it holds
/// the idle devices' sockets), with util-linux's `prlimit` on its own pid;
/// where that is missing, the limit stays as it is and a device failing
/// with "Too many open files" says so.
fn raise_own_limit() {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(4).map(str::to_string)
        });
    if let Some(hard) = hard {
        let _ = Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string()])
            .arg(format!("--nofile={hard}:{hard}"))
            .stderr(Stdio::null())
            .status();
    }
}

/// A free loopback port (bound, read and released: the server binds it
/// next).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// The mqgate binary these sections start: the one built with the
/// benchmark, or the one `MQGATE_BENCH_MQGATE` names (another build's, to
/// compare two builds with the same client side).
fn mqgate_bin() -> String {
    std::env::var("MQGATE_BENCH_MQGATE").unwrap_or_else(|_| MQGATE.to_string())
}

/// mqgate in a process of its own; killed when dropped.
struct Gate {
    child: Child,
    http: SocketAddr,
    mqtt: SocketAddr,
    /// The server's files, deleted when it is dropped.
    _storage: tempfile::TempDir,
}

impl Gate {
    /// Starts mqgate with the benchmark's configuration plus `mqtt_extra`
    /// in its `[mqtt]` table; why not, when it does not start (its error
    /// output's last line).
    fn start(mqtt_extra: &str) -> Result<Gate, String> {
        Gate::start_with(mqtt_extra, "")
    }

    /// [`Gate::start`], with `http_extra` in the `[http]` table too.
    fn start_with(mqtt_extra: &str, http_extra: &str) -> Result<Gate, String> {
        let storage = tempfile::tempdir().unwrap();
        let config = storage.path().join("bench.toml");
        let text = config_text_full(&storage.path().join("data"), true, mqtt_extra).replacen(
            "[http]\n",
            &format!("[http]\n{http_extra}\n"),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let log_path = storage.path().join("mqgate.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = raised(&mqgate_bin())
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut first = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut first);
        if !first.contains("listening") {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let why = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_string();
            return Err(why);
        }
        let addr = |key: &str| -> SocketAddr {
            first
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {first:?}"))
                .parse()
                .unwrap()
        };
        let (http, mqtt) = (addr("http="), addr("mqtt="));
        // Let start-up's allocations settle before anything is measured.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Gate {
            child,
            http,
            mqtt,
            _storage: storage,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Open descriptors of the process.
    fn descriptors(&self) -> usize {
        descriptors(self.pid())
    }

    /// The process's descriptor limits, `soft/hard`.
    fn files_limit(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/limits", self.pid()))
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("Max open files"))?;
                let words: Vec<&str> = line.split_whitespace().collect();
                Some(format!("{}/{}", words.get(3)?, words.get(4)?))
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// A value of `/metrics` (the first line starting with `name`).
    fn metric(&self, name: &str) -> Option<f64> {
        let mut stream = TcpStream::connect(self.http).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// ---------------------------------------------------------------------
// Devices, encoded by hand (cheap enough to hold 10,000 in this process).

/// An MQTT 3.1.1 CONNECT, clean session, anonymous or with a login.
fn connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
    body.push(if login.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&KEEP_ALIVE.to_be_bytes());
    let mut string = |s: &str| {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    };
    string(client_id);
    if let Some((username, password)) = login {
        string(username);
        string(password);
    }
    packet(0x10, &body)
}

/// A SUBSCRIBE of one filter at `qos`, packet id 1.
fn subscribe_packet(filter: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// How devices reach the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WebSocket",
            Transport::Wss => "secure WebSocket",
        }
    }

    fn csv(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The `[mqtt]` lines that make mqgate serve this transport on `port`
    /// (the keys of issue 15: `tls_listen`, `ws_listen`, `wss_listen`, with
    /// `tls_cert`/`tls_key`).
    fn config(self, port: SocketAddr, certs: &Certs) -> String {
        let tls = format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            certs.cert.display().to_string(),
            certs.key.display().to_string()
        );
        match self {
            Transport::Tcp => String::new(),
            Transport::Tls => format!("tls_listen = \"{port}\"\n{tls}"),
            Transport::Ws => format!("ws_listen = \"{port}\"\n"),
            Transport::Wss => format!("wss_listen = \"{port}\"\n{tls}"),
        }
    }
}

/// A certificate for mqgate (signed by a CA made for the run) and a rustls
/// client that trusts that CA.
struct Certs {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client: Arc<rustls::ClientConfig>,
}

impl Certs {
    fn generate() -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mqgate benchmark CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, leaf.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        // The provider named, not inferred: other crates of the build may
        // enable another one.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Certs {
            _dir: dir,
            cert: cert_path,
            key: key_path,
            client: Arc::new(client),
        }
    }
}

/// A connected device, held open (never read again).
#[allow(dead_code)]
enum Held {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A device over plain TCP: CONNECT (anonymous: the benchmark's
/// instance), then an accepting CONNACK.
fn tcp_device(addr: SocketAddr, client_id: &str) -> Result<TcpStream, String> {
    let mut tcp = socket(addr)?;
    mqtt_connect(&mut tcp, addr, false, &connect_packet(client_id, None))?;
    Ok(tcp)
}

fn socket(addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, DEVICE_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(DEVICE_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(DEVICE_TIMEOUT)).unwrap();
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A device over `transport`, as [`tcp_device`].
fn open_device(
    transport: Transport,
    addr: SocketAddr,
    client_id: &str,
    certs: &Certs,
) -> Result<Held, String> {
    let tcp = socket(addr)?;
    let connect = connect_packet(client_id, None);
    let ws = matches!(transport, Transport::Ws | Transport::Wss);
    match transport {
        Transport::Tcp | Transport::Ws => {
            let mut tcp = tcp;
            mqtt_connect(&mut tcp, addr, ws, &connect)?;
            Ok(Held::Plain(tcp))
        }
        Transport::Tls | Transport::Wss => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let connection = rustls::ClientConnection::new(certs.client.clone(), name)
                .map_err(|e| format!("TLS: {e}"))?;
            let mut stream = rustls::StreamOwned::new(connection, tcp);
            mqtt_connect(&mut stream, addr, ws, &connect)?;
            Ok(Held::Tls(Box::new(stream)))
        }
    }
}

/// CONNECT and CONNACK on an open stream (inside WebSocket frames with
/// `ws`, after the upgrade).
fn mqtt_connect<S: Read + Write>(
    stream: &mut S,
    addr: SocketAddr,
    ws: bool,
    connect: &[u8],
) -> Result<(), String> {
    if ws {
        ws_upgrade(stream, addr)?;
        ws_send(stream, connect).map_err(|e| format!("writing CONNECT: {e}"))?;
    } else {
        stream
            .write_all(connect)
            .map_err(|e| format!("writing CONNECT: {e}"))?;
    }
    stream
        .flush()
        .map_err(|e| format!("writing CONNECT: {e}"))?;
    let mut ack = [0u8; 4];
    let read = if ws {
        ws_receive(stream, &mut ack)
    } else {
        stream.read_exact(&mut ack)
    };
    read.map_err(|e| format!("reading CONNACK: {e}"))?;
    if ack[..2] != [0x20, 0x02] {
        return Err(format!("not a CONNACK: {ack:02x?}"));
    }
    if ack[3] != 0 {
        return Err(refused(ack[3]));
    }
    Ok(())
}

/// An MQTT 3.1.1 CONNACK's refusal, said.
fn refused(code: u8) -> String {
    let why = match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    };
    format!("CONNACK refused, return code {code} ({why})")
}

/// The WebSocket opening handshake of MQTT over WebSocket (path `/mqtt`,
/// subprotocol `mqtt`).
fn ws_upgrade<S: Read + Write>(stream: &mut S, addr: SocketAddr) -> Result<(), String> {
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("WebSocket upgrade: {e}"))?;
        head.push(byte[0]);
        if head.len() > 8192 {
            return Err("WebSocket upgrade: answer head too long".into());
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "WebSocket upgrade refused: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(())
}

/// One binary WebSocket frame, masked as a client's must be.
fn ws_send<S: Write>(stream: &mut S, payload: &[u8]) -> std::io::Result<()> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut frame = vec![0x82];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame)
}

/// Fills `out` with the payload bytes of the next data frames.
fn ws_receive<S: Read>(stream: &mut S, out: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < out.len() {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head)?;
        let mut len = u64::from(head[1] & 0x7F);
        if len == 126 {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext)?;
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext)?;
            len = u64::from_be_bytes(ext);
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            stream.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload)?;
        let opcode = head[0] & 0x0F;
        if opcode == 0x8 {
            return Err(std::io::Error::other("WebSocket closed by the server"));
        }
        // Data frames only (binary, continuation); pings and the like skipped.
        if opcode <= 0x2 {
            for (i, b) in payload.iter().enumerate() {
                if filled < out.len() {
                    out[filled] = b ^ mask[i % 4];
                    filled += 1;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// idle

/// Idle MQTT 3.1.1 devices on a fresh mqgate per transport: resident
/// memory and descriptors per device at each count of
/// `setting.idle_connections`.
pub fn idle(setting: &Setting, out_dir: &Path, results: &mut String) {
    raise_own_limit();
    let certs = Certs::generate();
    let mut csv =
        String::from("transport,connections,rss_kib,kib_per_connection,fds_per_connection\n");
    let mut rows = String::new();
    let mut notes = Vec::new();
    let mut limit = String::from("unknown");
    for transport in Transport::ALL {
        let port = free_port();
        let gate = match Gate::start(&transport.config(port, &certs)) {
            Ok(gate) => gate,
            Err(why) => {
                let _ = writeln!(
                    rows,
                    "| {} | - | - | - | - | skipped: not configured/not supported by this build |",
                    transport.name()
                );
                notes.push(format!(
                    "{}: mqgate refused the configuration: {why}",
                    transport.name()
                ));
                continue;
            }
        };
        limit = gate.files_limit();
        let addr = if transport == Transport::Tcp {
            gate.mqtt
        } else {
            port
        };
        let (base_rss, base_fds) = (gate.rss_kib(), gate.descriptors());
        let mut held = Vec::new();
        for &target in setting.idle_connections {
            let started = Instant::now();
            let mut failure = None;
            while held.len() < target {
                let id = format!("GID_idle@@@{}-{}", transport.csv(), held.len());
                match open_device(transport, addr, &id, &certs) {
                    Ok(device) => held.push(device),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_millis(500));
            let (rss, fds) = (gate.rss_kib(), gate.descriptors());
            let n = held.len().max(1) as f64;
            let per = rss.saturating_sub(base_rss) as f64 / n;
            let fds_per = fds.saturating_sub(base_fds) as f64 / n;
            match failure {
                None => {
                    let _ = writeln!(
                        rows,
                        "| {} | {target} | {rss} | {per:.1} | {fds_per:.2} | connected in {seconds:.1} s |",
                        transport.name()
                    );
                    let _ = writeln!(
                        csv,
                        "{},{target},{rss},{per:.2},{fds_per:.3}",
                        transport.csv()
                    );
                }
                Some(why) => {
                    let _ = writeln!(
                        rows,
                        "| {} | {target} | failed | - | - | device {} failed: {why}; at {} devices: RSS {rss} KiB, {per:.1} KiB and {fds_per:.2} descriptors per device |",
                        transport.name(),
                        held.len() + 1,
                        held.len()
                    );
                    break;
                }
            }
        }
        drop(held);
        drop(gate);
    }
    let _ = writeln!(results, "## Idle devices\n");
    let _ = writeln!(
        results,
        "MQTT 3.1.1 devices that connect (CONNECT, CONNACK; keepalive {KEEP_ALIVE} s) and stay idle, one after another, held by the benchmark's process; a fresh mqgate process per transport (descriptor limit soft/hard {limit}), whose resident memory (`VmRSS`) and open descriptors (`/proc/PID/fd`) are read before the first device and 0.5 s after the last: the growth divided by the devices. TLS and secure WebSocket: a certificate signed by a CA made for the run (ECDSA P-256); WebSocket: path `/mqtt`, subprotocol `mqtt`.\n"
    );
    let _ = writeln!(
        results,
        "| transport | idle devices | RSS KiB | KiB per device | descriptors per device | note |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|");
    results.push_str(&rows);
    for note in notes {
        let _ = writeln!(results, "\n{note}");
    }
    let _ = writeln!(results);
    std::fs::write(out_dir.join("idle.csv"), csv).unwrap();
}

// ---------------------------------------------------------------------
// capacity

/// One `mqgate-load idle` process holding devices.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    open: usize,
}

impl Holder {
    fn start(addr: SocketAddr, prefix: &str) -> Holder {
        let mut child = raised(LOAD)
            .args(["idle", "--addr", &addr.to_string(), "--prefix", prefix])
            .args(["--keep-alive", &KEEP_ALIVE.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Holder {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            open: 0,
        }
    }

    /// Sends a command, reads its one-line JSON answer.
    fn command(&mut self, line: &str) -> serde_json::Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("mqgate-load idle answered {answer:?}: {e}"))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // End of input: it closes its connections and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The most idle devices one mqgate process holds: devices are added in
/// steps (held by `mqgate-load idle` processes, each within its own
/// descriptor limit) until one fails or the goal is reached.
pub fn capacity(setting: &Setting, results: &mut String) {
    let gate = Gate::start("").expect("mqgate starts");
    let limit = gate.files_limit();
    let (base_rss, base_fds) = (gate.rss_kib(), gate.descriptors());
    let started = Instant::now();
    let mut holders: Vec<Holder> = Vec::new();
    let mut total = 0;
    let mut stopped = None;
    while total < setting.capacity_goal {
        let step = setting.capacity_step.min(setting.capacity_goal - total);
        if holders
            .last()
            .is_none_or(|h| h.open + step > setting.devices_per_holder)
        {
            let prefix = format!("GID_cap@@@h{}", holders.len());
            holders.push(Holder::start(gate.mqtt, &prefix));
        }
        let holder = holders.last_mut().unwrap();
        let answer = holder.command(&step.to_string());
        holder.open = answer["open"].as_u64().unwrap_or(0) as usize;
        total = holders.iter().map(|h| h.open).sum();
        if let Some(why) = answer["error"].as_str() {
            stopped = Some(why.to_string());
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    // Devices whose connection the server has closed meanwhile do not count.
    let mut still_open = 0;
    for holder in &mut holders {
        still_open += holder.command("check")["open"].as_u64().unwrap_or(0) as usize;
    }
    let (rss, fds) = (gate.rss_kib(), gate.descriptors());
    let connected = gate.metric(&format!(
        "mqgate_mqtt_connected_clients{{instance=\"{INSTANCE}\"}}"
    ));
    let per = rss.saturating_sub(base_rss) as f64 / still_open.max(1) as f64;
    let fds_per = fds.saturating_sub(base_fds) as f64 / still_open.max(1) as f64;
    let why = match &stopped {
        Some(why) => format!("a device failed with {total} held: {why}"),
        None => format!("reached the goal of {}", setting.capacity_goal),
    };
    drop(holders);
    drop(gate);
    let _ = writeln!(results, "## Devices one process holds\n");
    let _ = writeln!(
        results,
        "Idle MQTT 3.1.1 devices (TCP, anonymous, keepalive {KEEP_ALIVE} s) added to one mqgate process in steps of {}, up to {} (goal of the device-edge issue: at least 19,000), until a device fails (no accepting CONNACK within {} s, or the connection refused or closed); the devices are held by `mqgate-load idle` processes of at most {} each (each has its own descriptors), set up {} at a time. mqgate's descriptor limit soft/hard: {limit} (raised to the hard limit before it starts). Devices still open 1 s after the last step, as the clients see them (a non-blocking read on each); `mqgate_mqtt_connected_clients` as mqgate counts them.\n",
        setting.capacity_step,
        setting.capacity_goal,
        DEVICE_TIMEOUT.as_secs(),
        setting.devices_per_holder,
        64
    );
    let _ = writeln!(
        results,
        "| devices held | mqgate's count | RSS KiB | KiB per device | descriptors | descriptors per device | stopped because |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        results,
        "| {still_open} | {} | {rss} | {per:.1} | {fds} | {fds_per:.2} | {why} (after {seconds:.0} s) |\n",
        connected.map_or("-".to_string(), |c| format!("{c:.0}")),
    );
}

// ---------------------------------------------------------------------
// connect_rate and flood

/// `mqgate-load connect`'s summary, or why it failed.
fn connect_load(
    addr: SocketAddr,
    login: &[&str],
    connectors: usize,
    seconds: f64,
    rate: Option<f64>,
    prefix: &str,
) -> Result<serde_json::Value, String> {
    let mut command = raised(LOAD);
    command.args(["connect", "--json", "--addr", &addr.to_string()]);
    command.args(["--connectors", &connectors.to_string()]);
    command.args(["--duration", &seconds.to_string(), "--prefix", prefix]);
    if let Some(rate) = rate {
        command.args(["--rate", &rate.to_string()]);
    }
    command.args(login);
    let output = command.output().unwrap();
    if !output.status.success() {
        return Err(format!(
            "mqgate-load connect on {addr}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

/// A plain rumqttd in a process of its own (`mqgate-load rumqttd`).
pub(super) struct PlainRumqttd {
    child: Child,
    pub(super) addr: SocketAddr,
}

impl PlainRumqttd {
    pub(super) const USERNAME: &'static str = "bench";
    pub(super) const PASSWORD: &'static str = "bench-secret";
    const LOGIN: [&'static str; 4] = ["--username", Self::USERNAME, "--password", Self::PASSWORD];

    pub(super) fn start() -> PlainRumqttd {
        let mut child = raised(LOAD)
            .args(["rumqttd", "--listen", "127.0.0.1:0"])
            .args(Self::LOGIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut first);
        let addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mqtt="))
            .unwrap_or_else(|| panic!("mqgate-load rumqttd did not start: {first:?}"))
            .parse()
            .unwrap();
        PlainRumqttd { child, addr }
    }
}

impl Drop for PlainRumqttd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn failures_text(v: &serde_json::Value) -> String {
    match v["failures"].as_object() {
        Some(kinds) if !kinds.is_empty() => kinds
            .iter()
            .map(|(k, n)| format!("{n} × {k}"))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "none".into(),
    }
}

/// Authenticated CONNECTs per second through mqgate (Signature mode: the
/// client id signed with the account's key) against a plain rumqttd
/// (username and password) in the same run, rounds interleaved.
pub fn connect_rate(setting: &Setting, results: &mut String) {
    let gate = Gate::start("").expect("mqgate starts");
    let plain = PlainRumqttd::start();
    let signature = ["--signature", SIGNATURE];
    let mut rounds: Vec<(serde_json::Value, serde_json::Value)> = Vec::new();
    for round in 0..setting.connect_rounds {
        let run = |gate_side: bool| {
            let (addr, login): (SocketAddr, &[&str]) = if gate_side {
                (gate.mqtt, &signature)
            } else {
                (plain.addr, &PlainRumqttd::LOGIN)
            };
            connect_load(
                addr,
                login,
                setting.connectors,
                setting.connect_seconds,
                None,
                &format!("GID_rate@@@r{round}"),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        // Which side goes first alternates.
        let (ours, theirs) = if round % 2 == 0 {
            let ours = run(true);
            (ours, run(false))
        } else {
            let theirs = run(false);
            (run(true), theirs)
        };
        rounds.push((ours, theirs));
    }
    let rate = |v: &serde_json::Value| v["cycles_per_second"].as_f64().unwrap_or(0.0);
    let ratio = |r: &(serde_json::Value, serde_json::Value)| rate(&r.0) / rate(&r.1).max(1e-9);
    rounds.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let (low, high) = (ratio(&rounds[0]), ratio(&rounds[rounds.len() - 1]));
    let (ours, theirs) = &rounds[rounds.len() / 2];
    let p99 = |v: &serde_json::Value| v["connack_p99_ms"].as_f64().unwrap_or(0.0);
    let _ = writeln!(results, "## Connection rate against rumqttd\n");
    let _ = writeln!(
        results,
        "{} concurrent loops, each: open a TCP connection, CONNECT with a new client id, read the CONNACK, send DISCONNECT, wait for the server to close; {} s per run (`mqgate-load connect`). mqgate: Signature mode (the client id signed with the account's key, checked by mqgate), in its own process; rumqttd: a plain rumqttd 0.20 broker with one MQTT 3.1.1 listener and a username/password (`mqgate-load rumqttd`, router settings as mqgate's), in its own process, both with the same descriptor limit. {} rounds, interleaved, the first side alternating; the row is the median round by mqgate/rumqttd, every round's lowest and highest in brackets. Goal of the device-edge issue: at least 0.8.\n",
        setting.connectors, setting.connect_seconds, setting.connect_rounds
    );
    let _ = writeln!(
        results,
        "| mqgate CONNECTs/s | rumqttd CONNECTs/s | mqgate/rumqttd | p99 to CONNACK mqgate ms | p99 rumqttd ms | failed mqgate | failed rumqttd |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        results,
        "| {:.0} | {:.0} | {:.2} ({low:.2}-{high:.2}) | {:.3} | {:.3} | {} | {} |\n",
        rate(ours),
        rate(theirs),
        ratio(&(ours.clone(), theirs.clone())),
        p99(ours),
        p99(theirs),
        failures_text(ours),
        failures_text(theirs)
    );
}

/// QuerySessionByClientId latencies (ms) at `rate` calls per second for
/// `seconds`, each call on its own task (a slow answer does not delay the
/// next call), each on a new HTTP connection as mqgate's client makes it;
/// and how many answers were not 200 with `OnlineStatus` true.
async fn query_latencies(
    endpoint: &str,
    client_id: &str,
    rate: f64,
    seconds: f64,
) -> (Vec<f64>, usize) {
    let params = vec![
        ("InstanceId".to_string(), INSTANCE.to_string()),
        ("ClientId".to_string(), client_id.to_string()),
    ];
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
    let mut calls = Vec::new();
    while Instant::now() < stop_at {
        ticks.tick().await;
        let (endpoint, params) = (endpoint.to_string(), params.clone());
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
            let answer = mqgate::client::call(
                &endpoint,
                "GET",
                mqgate::client::Signing::V1,
                "QuerySessionByClientId",
                &params,
                "testid",
                "testsecret",
            )
            .await;
            let ms = began.elapsed().as_secs_f64() * 1000.0;
            let good = matches!(&answer, Ok((200, body)) if body.contains("\"OnlineStatus\":true"));
            (ms, good)
        }));
    }
    let mut latencies = Vec::with_capacity(calls.len());
    let mut bad = 0;
    for call in calls {
        let (ms, good) = call.await.unwrap();
        latencies.push(ms);
        bad += usize::from(!good);
    }
    latencies.sort_by(f64::total_cmp);
    (latencies, bad)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// QuerySessionByClientId's latency at a steady rate, quiet and during a
/// CONNECT flood (devices that connect, authenticate and leave at
/// `setting.flood_rate` a second).
pub async fn flood(setting: &Setting, results: &mut String) {
    let gate = Gate::start("").expect("mqgate starts");
    let endpoint = gate.endpoint();
    // The device the API is asked about, connected throughout.
    let watched = "GID_bench@@@watched";
    let _device = tcp_device(gate.mqtt, watched).unwrap();
    let seconds = setting.flood_seconds;
    // A first run takes what a new process pays once (the billing
    // database's first pages, the HTTP side's first connections).
    query_latencies(&endpoint, watched, setting.query_rate, 1.0).await;
    // Quiet: half before the flood, half after (this machine's other work
    // comes and goes; neither side gets only its quiet stretches).
    let (mut quiet, mut quiet_bad) =
        query_latencies(&endpoint, watched, setting.query_rate, seconds / 2.0).await;
    let (addr, connectors, rate) = (gate.mqtt, setting.flood_connectors, setting.flood_rate);
    // The flood runs half a second longer on each side of the measurement.
    let flooding = tokio::task::spawn_blocking(move || {
        connect_load(
            addr,
            &["--signature", SIGNATURE],
            connectors,
            seconds + 1.0,
            Some(rate),
            "GID_flood@@@f",
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (during, during_bad) =
        query_latencies(&endpoint, watched, setting.query_rate, seconds).await;
    let flood = flooding.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    // The flood's devices have left (each waits for the server to close).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, after_bad) =
        query_latencies(&endpoint, watched, setting.query_rate, seconds / 2.0).await;
    quiet.extend(after);
    quiet.sort_by(f64::total_cmp);
    quiet_bad += after_bad;
    let reached = flood["cycles_per_second"].as_f64().unwrap_or(0.0);
    let _ = writeln!(results, "## The HTTP API during a CONNECT flood\n");
    let _ = writeln!(
        results,
        "QuerySessionByClientId (signed, each call on a new HTTP connection, as mqgate's client makes it) at {:.0} calls a second about a device that stays connected: quiet ({} s before the flood and {} s after it), and for {seconds} s while `mqgate-load connect` offers {rate:.0} connections a second ({connectors} loops, Signature mode: connect, CONNECT, CONNACK, DISCONNECT, close) to the same mqgate process. The flood reached {reached:.0} a second ({} connections in {:.1} s; failed: {}).\n",
        setting.query_rate,
        seconds / 2.0,
        seconds / 2.0,
        flood["cycles"].as_u64().unwrap_or(0),
        flood["seconds"].as_f64().unwrap_or(0.0),
        failures_text(&flood)
    );
    let _ = writeln!(
        results,
        "| QuerySessionByClientId | calls | p50 ms | p99 ms | max ms | not 200 with OnlineStatus true |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|");
    for (name, l, bad) in [
        ("quiet", &quiet, quiet_bad),
        ("during the flood", &during, during_bad),
    ] {
        let _ = writeln!(
            results,
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {bad} |",
            l.len(),
            percentile(l, 50.0),
            percentile(l, 99.0),
            percentile(l, 100.0)
        );
    }
    let _ = writeln!(
        results,
        "\np99 during the flood / quiet: {:.2}.\n",
        percentile(&during, 99.0) / percentile(&quiet, 99.0).max(1e-9)
    );
}

// ---------------------------------------------------------------------
// slow_subscriber

/// What one run of the pair measured.
struct PairRun {
    rate: f64,
    base_rss: u64,
    peak_rss: u64,
    /// Per slow subscriber (QoS 0, QoS 1): seconds from the pair's start
    /// until mqgate no longer reported it online, if it did not.
    disconnected: Vec<Option<f64>>,
    seconds: f64,
}

/// Subscribes to `filter` at `qos` and never reads again (after the
/// CONNACK and SUBACK).
fn never_reading_subscriber(addr: SocketAddr, client_id: &str, filter: &str, qos: u8) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEVICE_TIMEOUT)).unwrap();
    stream.write_all(&connect_packet(client_id, None)).unwrap();
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK of {client_id}");
    stream.write_all(&subscribe_packet(filter, qos)).unwrap();
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).unwrap();
    assert_eq!(
        suback[..4],
        [0x90, 0x03, 0x00, 0x01],
        "SUBACK of {client_id}"
    );
    assert!(
        suback[4] <= 2,
        "{client_id}'s subscription refused: {suback:02x?}"
    );
    stream
}

/// Whether mqgate reports `client_id` online.
async fn online(endpoint: &str, client_id: &str) -> Option<bool> {
    let params = vec![
        ("InstanceId".to_string(), INSTANCE.to_string()),
        ("ClientId".to_string(), client_id.to_string()),
    ];
    let (status, body) = mqgate::client::call(
        endpoint,
        "GET",
        mqgate::client::Signing::V1,
        "QuerySessionByClientId",
        &params,
        "testid",
        "testsecret",
    )
    .await
    .ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&body).ok()?["OnlineStatus"].as_bool()
}

/// One run of the pair (`mqgate-load mqtt`, one publisher and one
/// subscriber on `bench/0`, QoS 1, 1 KiB payloads) on a fresh mqgate,
/// beside two never-reading subscribers to the same topic (QoS 0 and 1)
/// with `slow`.
async fn pair_run(slow: bool, seconds: f64) -> PairRun {
    const SLOW_IDS: [&str; 2] = ["GID_bench@@@slow-qos0", "GID_bench@@@slow-qos1"];
    let gate = Gate::start("").expect("mqgate starts");
    let endpoint = gate.endpoint();
    let _slow: Vec<TcpStream> = if slow {
        SLOW_IDS
            .iter()
            .enumerate()
            .map(|(qos, id)| never_reading_subscriber(gate.mqtt, id, "bench/0", qos as u8))
            .collect()
    } else {
        Vec::new()
    };
    let base_rss = gate.rss_kib();
    let pid = gate.pid();
    let front = gate.mqtt;
    let started = Instant::now();
    let pair = tokio::task::spawn_blocking(move || {
        super::try_mqtt_load_json(front, &["--payload", "1024"], 1, 2, seconds)
    });
    let mut peak_rss = base_rss;
    let mut disconnected = vec![None; if slow { SLOW_IDS.len() } else { 0 }];
    let mut checks = tokio::time::interval(Duration::from_millis(250));
    while !pair.is_finished() {
        checks.tick().await;
        peak_rss = peak_rss.max(rss_kib(pid));
        for (i, id) in SLOW_IDS.iter().enumerate().take(disconnected.len()) {
            if disconnected[i].is_none() && online(&endpoint, id).await == Some(false) {
                disconnected[i] = Some(started.elapsed().as_secs_f64());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let v = pair.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    PairRun {
        rate: v["messages_per_second"].as_f64().unwrap_or(0.0),
        base_rss,
        peak_rss: peak_rss.max(rss_kib(pid)),
        disconnected,
        seconds: elapsed,
    }
}

/// A publisher/subscriber pair alone against beside two subscribers (QoS 0
/// and QoS 1) that never read their sockets; rounds interleaved, each run
/// on a fresh mqgate.
pub async fn slow_subscriber(setting: &Setting, results: &mut String) {
    let mut rounds: Vec<(PairRun, PairRun)> = Vec::new();
    for round in 0..setting.slow_rounds {
        let (alone, beside) = if round % 2 == 0 {
            let alone = pair_run(false, setting.slow_seconds).await;
            (alone, pair_run(true, setting.slow_seconds).await)
        } else {
            let beside = pair_run(true, setting.slow_seconds).await;
            (pair_run(false, setting.slow_seconds).await, beside)
        };
        rounds.push((alone, beside));
    }
    let ratio = |r: &(PairRun, PairRun)| r.1.rate / r.0.rate.max(1e-9);
    rounds.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let (low, high) = (ratio(&rounds[0]), ratio(&rounds[rounds.len() - 1]));
    let median = &rounds[rounds.len() / 2];
    let (alone, beside) = median;
    let fate = |d: Option<f64>, run: &PairRun| match d {
        Some(s) => format!("disconnected by mqgate within {s:.1} s"),
        None => format!("still connected after {:.1} s", run.seconds),
    };
    let every_round = if rounds
        .iter()
        .all(|(_, b)| b.disconnected.iter().all(Option::is_none))
    {
        "mqgate disconnected neither, in any round".to_string()
    } else {
        rounds
            .iter()
            .enumerate()
            .map(|(i, (_, b))| {
                let each: Vec<String> = b
                    .disconnected
                    .iter()
                    .enumerate()
                    .map(|(qos, d)| format!("QoS {qos} {}", fate(*d, b)))
                    .collect();
                format!("round {}: {}", i + 1, each.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let _ = writeln!(results, "## A subscriber that never reads\n");
    let _ = writeln!(
        results,
        "A publisher/subscriber pair (`mqgate-load mqtt --clients 2 --qos 1 --payload 1024`, topic `bench/0`, {} s), alone, and beside two subscribers to `bench/0` (QoS 0 and QoS 1, raw sockets: CONNECT, SUBSCRIBE, then never a read), each run on a fresh mqgate process; mqgate's resident memory before the pair and its peak during the run (every 250 ms), and whether mqgate disconnected the slow subscribers (QuerySessionByClientId every 250 ms). {} rounds, interleaved; the row is the median round by beside/alone, every round's lowest and highest in brackets. Goal of the device-edge issue: at least 0.9, memory bounded.\n",
        setting.slow_seconds, setting.slow_rounds
    );
    let _ = writeln!(
        results,
        "| pair | msgs/s | RSS before KiB | peak RSS KiB | slow subscribers |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|");
    let _ = writeln!(
        results,
        "| alone | {:.0} | {} | {} | - |",
        alone.rate, alone.base_rss, alone.peak_rss
    );
    let _ = writeln!(
        results,
        "| beside two never-reading subscribers | {:.0} | {} | {} | {} |",
        beside.rate,
        beside.base_rss,
        beside.peak_rss,
        beside
            .disconnected
            .iter()
            .enumerate()
            .map(|(qos, d)| format!("QoS {qos}: {}", fate(*d, beside)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        results,
        "\nBeside/alone: {:.2} ({low:.2}-{high:.2}). The slow subscribers: {every_round}.\n",
        ratio(median)
    );
}

// ---------------------------------------------------------------------
// hostile

/// What the hostile clients of one round sent and what came of it.
#[derive(Default)]
struct HostileCount {
    /// Hostile MQTT connections, and how many of them mqgate closed.
    connections: usize,
    closed: usize,
}

/// Sends `bytes` on `stream` and reads until mqgate closes it (or 10 s);
/// whether it closed.
fn send_until_closed(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream.set_read_timeout(Some(DEVICE_TIMEOUT)).unwrap();
    let _ = stream.write_all(bytes);
    let mut sink = [0u8; 16384];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A raw MQTT 3.1.1 client past its CONNACK.
fn hostile_connected(addr: SocketAddr, client_id: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEVICE_TIMEOUT)).ok()?;
    stream.write_all(&connect_packet(client_id, None)).ok()?;
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).ok()?;
    (ack == [0x20, 0x02, 0x00, 0x00]).then_some(stream)
}

/// A 3.1.1 PUBLISH of `payload` to `topic`.
fn publish_packet(qos: u8, topic: &[u8], packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// One round of the hostile MQTT clients of `tests/hostile_mqtt.rs`
/// (which asserts mqgate's answer to each; here they are only sent).
fn hostile_mqtt_round(addr: SocketAddr, round: usize, count: &mut HostileCount) {
    let mut fresh = |bytes: &[u8]| {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            count.connections += 1;
            count.closed += usize::from(send_until_closed(&mut stream, bytes));
        }
    };
    // Before CONNECT: a reserved packet type, a PUBLISH, a 256 MB CONNECT.
    fresh(&[0x00, 0x00]);
    fresh(&publish_packet(0, b"hostile/t", 0, b"refused"));
    fresh(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F]);
    let mut connected = |kind: &str, bytes: &[u8]| {
        let id = format!("GID_hostile@@@{round}-{kind}");
        if let Some(mut stream) = hostile_connected(addr, &id) {
            count.connections += 1;
            count.closed += usize::from(send_until_closed(&mut stream, bytes));
        }
    };
    // After CONNECT: a 256 MB PUBLISH, QoS 3, a wildcard topic, a second
    // CONNECT.
    connected("huge", &[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    connected("qos3", &[0x36, 0x06, 0, 1, b'h', 0, 1, b'x']);
    connected("wildcard", &publish_packet(0, b"hostile/+", 0, b"refused"));
    connected("again", &connect_packet("again", None));
    // 10,000 filters in one SUBSCRIBE (its SUBACK read), then a goodbye.
    let mut body = vec![0x12, 0x34];
    for f in 0..10_000 {
        let filter = format!("hostile/filters/{f}");
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(1);
    }
    let mut filters = packet(0x82, &body);
    filters.extend_from_slice(&[0xE0, 0x00]);
    connected("filters", &filters);
    // A QoS 2 flood that never sends PUBREL: one past the receive maximum.
    let flood: Vec<u8> = (1..=129u16)
        .flat_map(|id| publish_packet(2, b"hostile/qos2", id, b"refused"))
        .collect();
    connected("qos2", &flood);
}

/// A CONNECT dribbled one byte a second; whether mqgate closed it.
fn dribbled_connect(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut sink = [0u8; 64];
    for byte in connect_packet("GID_hostile@@@dribbler", None) {
        if stream.write_all(&[byte]).is_err() {
            return true;
        }
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            _ => {}
        }
    }
    false
}

/// `count` HTTP connections that send half a request (no blank line),
/// then the other hostile requests of `tests/hostile_http.rs`; how many of
/// the half requests mqgate closed.
fn hostile_http(addr: SocketAddr, count: usize) -> usize {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let half = format!("POST /?n={i} HTTP/1.1\r\nHost: bench\r\nX-Half: ");
            if stream.write_all(half.as_bytes()).is_ok() {
                streams.push(stream);
            }
        }
    }
    let others = [
        b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 104857600\r\n\r\na".to_vec(),
        b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000\r\n\r\na".to_vec(),
        format!(
            "GET / HTTP/1.1\r\nHost: bench\r\n{}\r\n",
            (0..1000)
                .map(|i| format!("X-Flood-{i}: 1\r\n"))
                .collect::<String>()
        )
        .into_bytes(),
        format!(
            "GET / HTTP/1.1\r\nHost: bench\r\nX-Huge: {}\r\n\r\n",
            "h".repeat(1 << 20)
        )
        .into_bytes(),
    ];
    let sending: Vec<_> = others
        .into_iter()
        .map(|bytes| {
            std::thread::spawn(move || {
                if let Ok(mut stream) = TcpStream::connect(addr) {
                    send_until_closed(&mut stream, &bytes);
                }
            })
        })
        .collect();
    let mut closed = 0;
    for mut stream in streams {
        closed += usize::from(send_until_closed(&mut stream, b""));
    }
    for thread in sending {
        let _ = thread.join();
    }
    closed
}

/// The pair of `slow_subscriber` (`mqgate-load mqtt`, QoS 1, 512-byte
/// payloads) on `addr` for `seconds`: its messages a second.
async fn hostile_pair(addr: SocketAddr, seconds: f64) -> f64 {
    let v = tokio::task::spawn_blocking(move || {
        super::try_mqtt_load_json(addr, &["--payload", "512"], 1, 2, seconds)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    v["messages_per_second"].as_f64().unwrap_or(0.0)
}

/// One round on a fresh mqgate: the MQTT pair alone, then beside hostile
/// MQTT clients (round after round until the pair is done, and dribbled
/// CONNECTs), mqgate's RSS before and after; then the HTTP API's latency
/// quiet and beside the hostile HTTP clients.
async fn hostile_run(setting: &Setting) -> HostileRun {
    let gate = Gate::start_with(
        "connect_timeout_secs = 2",
        "header_timeout_secs = 2\nbody_timeout_secs = 2",
    )
    .expect("mqgate starts");
    let seconds = setting.hostile_seconds;
    // A warm-up: the router's log for the pair's topic grows to its bound.
    hostile_pair(gate.mqtt, seconds).await;
    let alone = hostile_pair(gate.mqtt, seconds).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = gate.rss_kib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = gate.mqtt;
    let hostile = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut count = HostileCount::default();
            let mut round = 0;
            while round == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hostile_mqtt_round(addr, round, &mut count);
                round += 1;
                // A round every quarter second, as tests/hostile_mqtt.rs.
                std::thread::sleep(Duration::from_millis(250));
            }
            count
        })
    };
    let dribbling = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut tried, mut closed) = (0, 0);
            while tried == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tried += 1;
                closed += usize::from(dribbled_connect(addr));
            }
            (tried, closed)
        })
    };
    let beside = hostile_pair(gate.mqtt, seconds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let count = hostile.join().unwrap();
    let dribbled = dribbling.join().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = gate.rss_kib();

    let endpoint = gate.endpoint();
    let watched = "GID_bench@@@nobody";
    query_latencies(&endpoint, watched, setting.query_rate, 1.0).await;
    let (quiet, _) = query_latencies(&endpoint, watched, setting.query_rate, seconds).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = gate.descriptors();
    let (http, half) = (gate.http, setting.hostile_half_requests);
    let flooding = tokio::task::spawn_blocking(move || hostile_http(http, half));
    // The flood: opening the connections, then the 2 s header timeout.
    let (during, _) = query_latencies(&endpoint, watched, setting.query_rate, 4.0).await;
    let half_closed = flooding.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.descriptors() > fds_before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    HostileRun {
        alone,
        beside,
        rss_before,
        rss_after,
        count,
        dribbled,
        quiet_p99: percentile(&quiet, 99.0),
        during_p99: percentile(&during, 99.0),
        calls: (quiet.len(), during.len()),
        half_closed,
        fds: (fds_before, gate.descriptors()),
    }
}

struct HostileRun {
    alone: f64,
    beside: f64,
    rss_before: u64,
    rss_after: u64,
    count: HostileCount,
    /// Dribbled CONNECTs, and how many mqgate closed.
    dribbled: (usize, usize),
    quiet_p99: f64,
    during_p99: f64,
    calls: (usize, usize),
    half_closed: usize,
    fds: (usize, usize),
}

impl HostileRun {
    fn throughput(&self) -> f64 {
        self.beside / self.alone.max(1e-9)
    }
    fn rss(&self) -> f64 {
        self.rss_after as f64 / self.rss_before.max(1) as f64
    }
    fn p99(&self) -> f64 {
        self.during_p99 / self.quiet_p99.max(1e-9)
    }
}

/// Hostile MQTT and HTTP clients against well-behaved ones, each round on
/// a fresh mqgate; `hostile.csv` and a table.
pub async fn hostile(setting: &Setting, out_dir: &Path, results: &mut String) {
    raise_own_limit();
    let mut runs = Vec::new();
    for _ in 0..setting.hostile_rounds {
        runs.push(hostile_run(setting).await);
    }
    let mut csv = String::from(
        "round,pair_alone_msgs_per_s,pair_beside_msgs_per_s,throughput_ratio,rss_before_kib,rss_after_kib,rss_ratio,hostile_mqtt_connections,hostile_mqtt_closed,http_quiet_p99_ms,http_beside_p99_ms,p99_ratio,half_requests,half_requests_closed,fds_before,fds_after\n",
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            csv,
            "{},{:.0},{:.0},{:.3},{},{},{:.4},{},{},{:.3},{:.3},{:.3},{},{},{},{}",
            i + 1,
            r.alone,
            r.beside,
            r.throughput(),
            r.rss_before,
            r.rss_after,
            r.rss(),
            r.count.connections,
            r.count.closed,
            r.quiet_p99,
            r.during_p99,
            r.p99(),
            setting.hostile_half_requests,
            r.half_closed,
            r.fds.0,
            r.fds.1
        );
    }
    std::fs::write(out_dir.join("hostile.csv"), csv).unwrap();
    let median = |key: fn(&HostileRun) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(key).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let _ = writeln!(results, "## Hostile clients\n");
    let _ = writeln!(
        results,
        "Each round on a fresh mqgate process (`connect_timeout_secs = 2`, `header_timeout_secs = 2`, `body_timeout_secs = 2`). MQTT: a publisher/subscriber pair (`mqgate-load mqtt --clients 2 --qos 1 --payload 512`, {} s) alone (after a warm-up run), then beside hostile MQTT clients, a round every 250 ms until the pair is done: a reserved packet type, a PUBLISH before CONNECT, a 256 MB remaining length in a CONNECT and in a PUBLISH, a PUBLISH of QoS 3 and one to a wildcard topic, a second CONNECT, 10,000 topic filters in one SUBSCRIBE, 129 QoS 2 PUBLISHes without PUBREL, and CONNECTs dribbled one byte a second; mqgate's resident memory after the warm-up and the alone run, and 1 s after the hostile clients left. HTTP: QuerySessionByClientId at {:.0} calls a second (signed, a new connection per call), quiet for {} s and for 4 s while {} connections send half a request and never finish it, beside a 100 MB Content-Length with one byte sent, a body that stops, 1,000 headers and a 1 MB header. `tests/hostile_mqtt.rs` and `tests/hostile_http.rs` assert what each gets. {} rounds; the ratios below are their medians. Goals: throughput 0.9 or more, RSS within 5%, p99 within 2x.\n",
        setting.hostile_seconds,
        setting.query_rate,
        setting.hostile_seconds,
        setting.hostile_half_requests,
        setting.hostile_rounds
    );
    let _ = writeln!(
        results,
        "| round | pair alone msgs/s | beside hostile msgs/s | ratio | RSS before KiB | RSS after KiB | ratio | hostile MQTT connections closed | dribbled CONNECTs closed | API p99 quiet ms | p99 beside ms | ratio | half requests closed | mqgate fds before/after |"
    );
    let _ = writeln!(
        results,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            results,
            "| {} | {:.0} | {:.0} | {:.2} | {} | {} | {:.3} | {}/{} | {}/{} | {:.2} ({} calls) | {:.2} ({} calls) | {:.2} | {}/{} | {}/{} |",
            i + 1,
            r.alone,
            r.beside,
            r.throughput(),
            r.rss_before,
            r.rss_after,
            r.rss(),
            r.count.closed,
            r.count.connections,
            r.dribbled.1,
            r.dribbled.0,
            r.quiet_p99,
            r.calls.0,
            r.during_p99,
            r.calls.1,
            r.p99(),
            r.half_closed,
            setting.hostile_half_requests,
            r.fds.0,
            r.fds.1
        );
    }
    let _ = writeln!(
        results,
        "\nMedians: throughput beside/alone {:.2}, RSS after/before {:.3}, API p99 beside/quiet {:.2}.\n",
        median(HostileRun::throughput),
        median(HostileRun::rss),
        median(HostileRun::p99)
    );
}
