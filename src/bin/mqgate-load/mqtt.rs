//! `mqgate-load mqtt`: publish/subscribe load on an MQTT listener (mqgate's
//! front port, or any broker), with rumqttc clients.
//!
//! Half the clients subscribe, each to its own topic `bench/{i}`; the other
//! half publish to those topics as fast as the connection takes them,
//! 100-byte payloads (by default) carrying the send time, so that the
//! subscribers measure end-to-end latency. Publishers and subscribers run in
//! this one process, so both ends read the same clock.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct MqttArgs {
    /// The MQTT listener, HOST:PORT.
    #[arg(long)]
    addr: std::net::SocketAddr,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// ApsaraMQ Signature mode, KEYID:SECRET:INSTANCE: each client logs in
    /// as `Signature|KEYID|INSTANCE` with its own client id signed.
    #[arg(long, conflicts_with_all = ["username", "password"])]
    signature: Option<String>,
    /// Clients in all: half publish, half subscribe (at least 2).
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// QoS of publications and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Payload bytes (at least 8: the send time).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Messages per second in all, spread evenly over the publishers (a
    /// steady rate, to measure the cost of a known load); absent: flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Connections opened at once while setting up: more would overflow the
/// listener's accept backlog on a small machine.
const CONNECT_AT_ONCE: usize = 200;

/// KEYID:SECRET:INSTANCE.
fn signature_parts(text: &str) -> Option<(&str, &str, &str)> {
    let mut parts = text.splitn(3, ':');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

pub async fn run(args: MqttArgs) -> Result<(), String> {
    if args
        .signature
        .as_deref()
        .is_some_and(|s| signature_parts(s).is_none())
    {
        return Err("--signature must be KEYID:SECRET:INSTANCE".into());
    }
    if args.clients < 2 {
        return Err("--clients must be at least 2 (a publisher and a subscriber)".into());
    }
    if args.payload < 8 {
        return Err("--payload must be at least 8 bytes (it carries the send time)".into());
    }
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let pairs = args.clients / 2;
    let clock = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));

    let connecting = Instant::now();
    let mut subscribers = Vec::with_capacity(pairs);
    for chunk in (0..pairs).collect::<Vec<_>>().chunks(CONNECT_AT_ONCE) {
        let mut ready = Vec::new();
        for &i in chunk {
            let options = options(&args, format!("load-sub-{i}-{}", std::process::id()));
            let (client, mut eventloop) = AsyncClient::new(options, 100);
            eventloop.set_network_options(patient_network());
            let (received, latencies) = (received.clone(), latencies.clone());
            let (mut subscribed, subscribed_rx) = Ready::new();
            client
                .subscribe(format!("bench/{i}"), qos)
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.ok(),
                        Ok(Event::Incoming(Packet::Publish(p))) if p.payload.len() >= 8 => {
                            let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                            let now = clock.elapsed().as_micros() as u64;
                            received.fetch_add(1, Ordering::Relaxed);
                            let micros = now.saturating_sub(sent).min(u32::MAX as u64) as u32;
                            latencies.lock().unwrap().push(micros);
                        }
                        Ok(_) => {}
                        Err(e) => return subscribed.failed(e.to_string()),
                    }
                }
            });
            ready.push(subscribed_rx);
            subscribers.push((client, task));
        }
        all_ready(ready, "a subscriber", "its SUBACK").await?;
    }

    let mut publishers = Vec::with_capacity(pairs);
    for chunk in (0..pairs).collect::<Vec<_>>().chunks(CONNECT_AT_ONCE) {
        let mut ready = Vec::new();
        for &i in chunk {
            let mut options = options(&args, format!("load-pub-{i}-{}", std::process::id()));
            options.set_inflight(100);
            let (client, mut eventloop) = AsyncClient::new(options, 100);
            eventloop.set_network_options(patient_network());
            let (mut connected, connected_rx) = Ready::new();
            let driver = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => connected.ok(),
                        Ok(_) => {}
                        Err(e) => return connected.failed(e.to_string()),
                    }
                }
            });
            ready.push(connected_rx);
            publishers.push((i, client, driver));
        }
        all_ready(ready, "a publisher", "its CONNACK").await?;
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();

    // Publish flat out; count what arrives while publishing.
    let stop_at = Instant::now() + Duration::from_secs_f64(args.duration);
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut running = Vec::with_capacity(pairs);
    // With --rate: each publisher sends one message per `every`, on a
    // schedule (a late send is not made up by a burst beyond the missed
    // ticks: the interval skips them).
    let every = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(pairs as f64 / rate));
    for (i, client, driver) in publishers {
        let size = args.payload;
        running.push(tokio::spawn(async move {
            let mut payload = vec![0u8; size];
            let topic = format!("bench/{i}");
            let mut ticks = every.map(|every| {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                ticks
            });
            while Instant::now() < stop_at {
                if let Some(ticks) = &mut ticks {
                    ticks.tick().await;
                }
                let now = clock.elapsed().as_micros() as u64;
                payload[..8].copy_from_slice(&now.to_be_bytes());
                if client
                    .publish(topic.as_str(), qos, false, payload.clone())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            (client, driver)
        }));
    }
    let mut stopped = Vec::with_capacity(pairs);
    for task in running {
        if let Ok(publisher) = task.await {
            stopped.push(publisher);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = received.load(Ordering::Relaxed) - before;
    // The connections are dropped, not closed with DISCONNECT: rumqttc
    // closes its socket right behind a DISCONNECT, and rumqttd (0.20) then
    // reports the connection gone twice, the second time possibly ending a
    // new connection that was given the same connection id (the next run's,
    // when the benchmark talks to rumqttd directly). mqgate's front layer
    // waits for rumqttd to close after a DISCONNECT for the same reason.
    for (client, driver) in stopped {
        driver.abort();
        drop(client);
    }
    for (client, task) in subscribers {
        task.abort();
        drop(client);
    }

    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort_unstable();
    let pct = |p: usize| -> f64 {
        if l.is_empty() {
            0.0
        } else {
            l[(l.len() * p / 100).min(l.len() - 1)] as f64 / 1000.0
        }
    };
    let rate = delivered as f64 / elapsed;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "clients": pairs * 2,
                "qos": args.qos,
                "delivered": delivered,
                "seconds": elapsed,
                "messages_per_second": rate,
                "p50_ms": pct(50),
                "p99_ms": pct(99),
                "connect_seconds": connect_seconds,
            })
        );
    } else {
        println!(
            "{} clients ({pairs} publishers, {pairs} subscribers), QoS {}: {delivered} messages delivered in {elapsed:.2} s = {rate:.0} msgs/s; latency p50 {:.3} ms, p99 {:.3} ms; connecting took {connect_seconds:.2} s",
            pairs * 2,
            args.qos,
            pct(50),
            pct(99)
        );
    }
    Ok(())
}

/// Tells the setup loop, once, whether a client got as far as it must
/// before the load starts (its CONNACK or SUBACK) or failed first.
struct Ready(Option<tokio::sync::oneshot::Sender<Result<(), String>>>);

impl Ready {
    fn new() -> (Ready, tokio::sync::oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Ready(Some(tx)), rx)
    }

    fn ok(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Ok(()));
        }
    }

    fn failed(&mut self, error: String) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Err(error));
        }
    }
}

/// Waits until every client of a chunk is ready; the first failure, named.
async fn all_ready(
    ready: Vec<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    who: &str,
    awaited: &str,
) -> Result<(), String> {
    for r in ready {
        r.await
            .map_err(|_| format!("{who} stopped before {awaited}"))?
            .map_err(|e| format!("{who} failed before {awaited}: {e}"))?;
    }
    Ok(())
}

/// rumqttc gives up on a connection that is not set up within 5 s; while
/// thousands of clients connect at once to a loaded 2-core machine, some
/// take longer, and a load generator must wait for them (their setup time
/// is reported as `connect_seconds`), not fail the run.
fn patient_network() -> rumqttc::NetworkOptions {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_connection_timeout(60);
    network
}

fn options(args: &MqttArgs, client_id: String) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, args.addr.ip().to_string(), args.addr.port());
    // Long enough that a ping left unanswered while thousands of clients
    // connect (rumqttd's router answers pings and connects in one thread)
    // does not end a client before the measurement starts.
    options.set_keep_alive(Duration::from_secs(600));
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(u), Some(p)) = (&args.username, &args.password) {
        options.set_credentials(u, p);
    }
    if let Some((key_id, secret, instance)) = args.signature.as_deref().and_then(signature_parts) {
        let password =
            mqgate::broker::device_auth::signature_password(secret, options.client_id().as_str());
        options.set_credentials(format!("Signature|{key_id}|{instance}"), password);
    }
    options
}
