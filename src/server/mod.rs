//! Wiring: starts the embedded brokers, the MQTT front layer and the HTTP
//! API from a configuration ([`Server::start`]), applies a new
//! configuration ([`Server::reload`]; [`reload`] watches for one), and
//! shuts everything down cleanly ([`Server::shutdown`]).

pub mod http;
pub mod long_query;
pub mod reload;

pub use http::{BodyTimedOut, HTTP_HEADER_TIMEOUT};
pub use long_query::HTTP_MAX_HEADERS;

use crate::broker::front::FrontLayer;
use crate::broker::{self, Brokers, reason};
use crate::config::Config;
use crate::devices::DeviceStore;
use crate::directory::{Directory, DirectoryHandle};
use crate::metering::Meter;
use crate::metrics::Metrics;
use crate::replay::ReplayGuard;
use crate::rpc;
use crate::state::AppState;
use crate::throttle::Throttle;
use crate::trace::store::Retention;
use crate::trace::{TraceStore, Tracer};
use crate::transport::{Upgrade, tls, ws};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why mqgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage.dir: cannot create {dir}: {error}")]
    Storage { dir: String, error: std::io::Error },
    #[error("{field}: cannot listen on {addr}: {error}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] broker::StartError),
    #[error("storage.dir: replay journal: {0}")]
    Replay(String),
    /// `[cluster]`: Redis cannot be reached (the message says how to fix it).
    #[error("{0}")]
    Cluster(String),
    #[error("storage.dir: metering database: {0}")]
    Metering(#[from] crate::metering::OpenError),
    #[error("storage.dir: device database: {0}")]
    Devices(#[from] crate::devices::StoreError),
    #[error("storage.dir: trace database: {0}")]
    Traces(#[from] crate::trace::store::TraceError),
    /// A certificate or key file that cannot be used (the field, the file
    /// and why).
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsFileError),
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub started_instances: Vec<String>,
    pub removed_instances: Vec<String>,
    /// Settings that only a restart applies (listen addresses, storage).
    pub needs_restart: Vec<&'static str>,
}

/// A running mqgate.
pub struct Server {
    pub http_addr: SocketAddr,
    pub mqtt_addr: SocketAddr,
    /// HTTPS (`http.tls_listen`), MQTT over TLS (`mqtt.tls_listen`), over
    /// WebSocket (`mqtt.ws_listen`) and over secure WebSocket
    /// (`mqtt.wss_listen`), where configured.
    pub https_addr: Option<SocketAddr>,
    pub mqtt_tls_addr: Option<SocketAddr>,
    pub mqtt_ws_addr: Option<SocketAddr>,
    pub mqtt_wss_addr: Option<SocketAddr>,
    /// `GET /metrics` on a listener of its own (`metrics.listen`).
    pub metrics_addr: Option<SocketAddr>,
    /// The MQTT listeners of instances that have their own
    /// (`[[accounts.instances]] mqtt_listen`), by instance id.
    pub instance_mqtt_addrs: std::collections::BTreeMap<String, SocketAddr>,
    pub brokers: Arc<Brokers>,
    pub directory: Arc<DirectoryHandle>,
    shutdown: CancellationToken,
    http: Vec<JoinHandle<()>>,
    mqtt: Vec<JoinHandle<()>>,
    flusher: JoinHandle<()>,
    flusher_stop: CancellationToken,
    state: Arc<AppState>,
    config: std::sync::Mutex<Config>,
}

impl Server {
    /// The state every call is served from (for tests and benchmarks that
    /// call the pipeline without a socket).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }
}

/// The HTTP application, without a socket (tests can call it directly),
/// with `GET /metrics`.
pub fn app(state: Arc<AppState>) -> Router {
    api_app(state, true)
}

/// The API's application; `/metrics` on it unless it has a listener of its
/// own (`metrics.listen`).
fn api_app(state: Arc<AppState>, with_metrics: bool) -> Router {
    let router = Router::new().route("/", any(rpc::endpoint));
    let router = match with_metrics {
        true => router.route("/metrics", axum::routing::get(metrics)),
        false => router,
    };
    router
        .merge(crate::emqx::routes())
        .fallback(rpc::not_found)
        .with_state(state)
}

/// The application of the `metrics.listen` listener: `/metrics` alone.
fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                "this listener serves GET /metrics only\n",
            )
        })
        .with_state(state)
}

/// `GET /metrics`: Prometheus text; with `metrics.bearer_token`, only for a
/// request that carries it (401 otherwise, compared in constant time).
async fn metrics(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token {
        use subtle::ConstantTimeEq;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"mqgate metrics\"")],
                "GET /metrics needs the header Authorization: Bearer <metrics.bearer_token>\n",
            )
                .into_response();
        }
    }
    let mut text = state
        .metrics
        .render(&state.brokers, state.brokers.status_cache_hits());
    // The trace store's intake: what it recorded, and what it dropped
    // because its writer was behind.
    use std::fmt::Write as _;
    let _ = write!(
        text,
        "# HELP mqgate_trace_events_recorded_total Trace events handed to the trace store's writer.\n\
         # TYPE mqgate_trace_events_recorded_total counter\n\
         mqgate_trace_events_recorded_total {}\n\
         # HELP mqgate_trace_events_dropped_total Trace events dropped because the writer was behind.\n\
         # TYPE mqgate_trace_events_dropped_total counter\n\
         mqgate_trace_events_dropped_total {}\n",
        state.tracer.recorded(),
        state.tracer.dropped()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

impl Server {
    /// The device-side state (group ids, credentials, tokens, blacklist).
    pub fn devices(&self) -> &Arc<DeviceStore> {
        &self.state.devices
    }

    /// Where trace events are recorded (its counters: recorded, dropped).
    pub fn tracer(&self) -> &Arc<crate::trace::Tracer> {
        &self.state.tracer
    }

    pub async fn start(config: Config) -> Result<Server, StartError> {
        // First: a node that cannot reach its cluster must not serve alone.
        let cluster = match &config.cluster {
            Some(cluster) => Some(Arc::new(
                crate::cluster::Cluster::connect(cluster)
                    .await
                    .map_err(StartError::Cluster)?,
            )),
            None => None,
        };
        std::fs::create_dir_all(&config.storage.dir).map_err(|error| StartError::Storage {
            dir: config.storage.dir.display().to_string(),
            error,
        })?;
        let meter = Arc::new(Meter::open(&config.storage.dir)?);
        let devices = Arc::new(DeviceStore::open(
            &config.storage.dir,
            config.storage.device_key_file.as_deref(),
        )?);
        // The writer thread ends once every tracer is dropped; shutdown
        // flushes it instead of joining it.
        let (traces, tracer, _trace_writer) = TraceStore::open(
            &config.storage.dir,
            Retention {
                max_age: Duration::from_secs(config.trace.retention_hours.saturating_mul(3600)),
                max_bytes: config.trace.max_bytes,
            },
        )?;
        // Off: nothing is recorded (the writer ends at once); what an
        // earlier run recorded can still be queried.
        let tracer = if config.trace.enabled {
            tracer
        } else {
            Tracer::off()
        };
        // Certificates are read before anything starts: a bad file stops
        // start-up with its name.
        let mqtt_tls = match (&config.mqtt.tls_cert, &config.mqtt.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor("mqtt", cert, key, &[])?),
            _ => None,
        };
        let http_tls = match (&config.http.tls_cert, &config.http.tls_key) {
            (Some(cert), Some(key)) => {
                Some(tls::acceptor("http", cert, key, &[b"http/1.1".as_slice()])?)
            }
            _ => None,
        };
        let directory = DirectoryHandle::new(Directory::from_config(&config));
        let shutdown = CancellationToken::new();
        // In a cluster, every session that begins or ends here goes into
        // the cluster's directory (`cluster::presence`).
        let presence = cluster
            .as_ref()
            .map(|cluster| cluster.start_presence(shutdown.clone()));
        let brokers = Arc::new(
            Brokers::start(
                &directory.current(),
                &config.mqtt,
                Duration::from_millis(config.http.batch_status_ttl_ms),
                presence,
            )
            .await?,
        );
        if let Some(cluster) = &cluster {
            cluster.start_commands(
                brokers.clone(),
                traces.clone(),
                tracer.clone(),
                {
                    let (brokers, expiry) = (brokers.clone(), config.mqtt.session_expiry_secs);
                    let node = crate::emqx::calls::cluster_node_name(cluster.node_id());
                    Arc::new(move |request| {
                        let (brokers, node) = (brokers.clone(), node.clone());
                        Box::pin(async move {
                            crate::emqx::calls::answer_relayed(&brokers, expiry, &node, request)
                                .await
                        })
                    })
                },
                shutdown.clone(),
            );
            // Before any device is served: this node authenticates with
            // the cluster's device state from the first CONNECT on.
            cluster
                .share_devices(devices.clone(), brokers.clone(), shutdown.clone())
                .await
                .map_err(StartError::Cluster)?;
        }

        // The MQTT listener is handed to the brokers' runtime: the front
        // layer runs there, beside rumqttd, away from the HTTP API.
        let mqtt_listener = bind_std("mqtt.listen", config.mqtt.listen)?;
        let http_listener = bind("http.listen", config.http.listen).await?;
        let mqtt_addr = mqtt_listener
            .local_addr()
            .map_err(|error| StartError::Bind {
                field: "mqtt.listen",
                addr: config.mqtt.listen,
                error,
            })?;
        let http_addr = local_addr("http.listen", &http_listener, config.http.listen)?;

        let front = FrontLayer::new(
            brokers.clone(),
            directory.clone(),
            devices.clone(),
            tracer.clone(),
            config.mqtt.max_packet_size,
            Duration::from_secs(config.mqtt.connect_timeout_secs),
            Duration::from_secs(config.mqtt.send_timeout_secs),
        );
        let mqtt_listener = {
            // Registered with the brokers' runtime, where it is polled.
            let _mqtt_side = brokers.enter();
            TcpListener::from_std(mqtt_listener).map_err(|error| StartError::Bind {
                field: "mqtt.listen",
                addr: config.mqtt.listen,
                error,
            })?
        };
        // In a cluster: the relay listener is bound and the instances
        // placed before any device is served, so that the first CONNECT
        // already goes to its instance's node.
        let mut mqtt = Vec::new();
        if let (Some(cluster), Some(cluster_config)) = (&cluster, &config.cluster) {
            let (listener, bound) = bind_mqtt_side(
                &brokers,
                "cluster.relay_listen",
                cluster_config.relay_listen,
            )?;
            let advertised = advertised_relay(cluster_config.advertise_host.as_deref(), bound);
            tracing::info!(addr = %bound, %advertised, "cluster relay listener");
            cluster
                .start_placement(
                    advertised,
                    directory.clone(),
                    brokers.clone(),
                    shutdown.clone(),
                )
                .await;
            front.place_with(cluster.clone());
            mqtt.push(brokers.spawn(front.clone().serve_relayed(listener, shutdown.clone())));
        }
        mqtt.push(brokers.spawn(front.clone().serve(mqtt_listener, None, shutdown.clone())));
        // Instances with a listener of their own: a custom-auth login there
        // belongs to that instance.
        let mut instance_mqtt_addrs = std::collections::BTreeMap::new();
        for instance in config.accounts.iter().flat_map(|a| &a.instances) {
            let Some(addr) = instance.mqtt_listen else {
                continue;
            };
            let (listener, bound) =
                bind_mqtt_side(&brokers, "accounts.instances.mqtt_listen", addr)?;
            tracing::info!(instance = %instance.id, addr = %bound, "instance MQTT listener");
            instance_mqtt_addrs.insert(instance.id.clone(), bound);
            mqtt.push(brokers.spawn(front.clone().serve(
                listener,
                Some(instance.id.clone()),
                shutdown.clone(),
            )));
        }
        // The secure and WebSocket listeners: the same front layer, after
        // each connection's handshake.
        let ws = ws::Settings::for_max_packet_size(config.mqtt.max_packet_size);
        let upgraded = [
            (
                "mqtt.tls_listen",
                config.mqtt.tls_listen,
                mqtt_tls.clone().map(Upgrade::Tls),
            ),
            (
                "mqtt.ws_listen",
                config.mqtt.ws_listen,
                Some(Upgrade::Ws(ws)),
            ),
            (
                "mqtt.wss_listen",
                config.mqtt.wss_listen,
                mqtt_tls.map(|tls| Upgrade::Wss(tls, ws)),
            ),
        ];
        let mut upgraded_addrs = Vec::new();
        for (field, addr, upgrade) in upgraded {
            let (Some(addr), Some(upgrade)) = (addr, upgrade) else {
                upgraded_addrs.push(None);
                continue;
            };
            let (listener, bound) = bind_mqtt_side(&brokers, field, addr)?;
            tracing::info!(transport = upgrade.name(), addr = %bound, "MQTT listener");
            upgraded_addrs.push(Some(bound));
            mqtt.push(brokers.spawn(front.clone().serve_upgraded(
                listener,
                upgrade,
                None,
                shutdown.clone(),
            )));
        }
        let [mqtt_tls_addr, mqtt_ws_addr, mqtt_wss_addr] = upgraded_addrs[..] else {
            unreachable!("one address per listener kind");
        };
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(bind("metrics.listen", addr).await?),
            None => None,
        };
        let metrics_addr = match (&metrics_listener, config.metrics.listen) {
            (Some(listener), Some(addr)) => Some(local_addr("metrics.listen", listener, addr)?),
            _ => None,
        };
        if metrics_addr.is_none()
            && config.metrics.bearer_token.is_none()
            && !http_addr.ip().is_loopback()
        {
            tracing::warn!(addr = %http_addr, "GET /metrics is open to anyone who reaches the API port; set [metrics] listen or bearer_token (README: Security)");
        }
        let https_listener = match (config.http.tls_listen, &http_tls) {
            (Some(addr), Some(_)) => Some(bind("http.tls_listen", addr).await?),
            _ => None,
        };
        let https_addr = match (&https_listener, config.http.tls_listen) {
            (Some(listener), Some(addr)) => Some(local_addr("http.tls_listen", listener, addr)?),
            _ => None,
        };

        let replay = ReplayGuard::open(
            &config.storage.dir,
            config.http.timestamp_window_secs,
            config.http.max_remembered_nonces,
            chrono::Utc::now(),
        )
        .map_err(StartError::Replay)?;
        // After an unclean stop (or one in this very second) requests
        // signed in this second may have been accepted already: serve from
        // the next one (see `replay`).
        let wait = (replay.serve_from() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        if !wait.is_zero() {
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "the previous run did not record its stop in an earlier second: serving from the next second, so that no request it accepted is accepted again"
            );
            tokio::time::sleep(wait).await;
        }
        let state = Arc::new(AppState {
            directory: directory.clone(),
            brokers: brokers.clone(),
            replay,
            throttle: std::sync::RwLock::new(Arc::new(Throttle::new(
                directory.current().limits().to_vec(),
            ))),
            meter: meter.clone(),
            devices: devices.clone(),
            traces,
            tracer: tracer.clone(),
            metrics: Metrics::default(),
            session_expiry_secs: config.mqtt.session_expiry_secs,
            metrics_token: config.metrics.bearer_token.clone(),
            cluster,
        });
        if let Some(cluster) = &state.cluster {
            cluster.start_bill(meter.clone(), directory.clone(), shutdown.clone());
        }
        let flusher_stop = CancellationToken::new();
        let flusher = tokio::spawn(flush_broker_counts(
            brokers.clone(),
            meter.clone(),
            flusher_stop.clone(),
        ));
        let timeouts = http::Timeouts {
            header: Duration::from_secs(config.http.header_timeout_secs),
            body: Duration::from_secs(config.http.body_timeout_secs),
        };
        let metrics_apart = metrics_listener.is_some();
        let mut http = vec![tokio::spawn(http::serve(
            http_listener,
            None,
            http::App {
                router: api_app(state.clone(), !metrics_apart),
                rpc: Some(state.clone()),
            },
            timeouts,
            shutdown.clone(),
        ))];
        if let (Some(listener), Some(tls)) = (https_listener, http_tls) {
            http.push(tokio::spawn(http::serve(
                listener,
                Some(tls),
                http::App {
                    router: api_app(state.clone(), !metrics_apart),
                    rpc: Some(state.clone()),
                },
                timeouts,
                shutdown.clone(),
            )));
        }
        if let Some(listener) = metrics_listener {
            http.push(tokio::spawn(http::serve(
                listener,
                None,
                http::App {
                    router: metrics_app(state.clone()),
                    rpc: None,
                },
                timeouts,
                shutdown.clone(),
            )));
        }
        Ok(Server {
            http_addr,
            mqtt_addr,
            https_addr,
            mqtt_tls_addr,
            mqtt_ws_addr,
            mqtt_wss_addr,
            metrics_addr,
            instance_mqtt_addrs,
            brokers,
            directory,
            shutdown,
            http,
            mqtt,
            flusher,
            flusher_stop,
            state,
            config: std::sync::Mutex::new(config),
        })
    }

    /// Applies a new configuration (already loaded and validated): accounts,
    /// users, keys and policies take effect for the next call; calls in
    /// flight finish under the set they started with. New instances get
    /// brokers; clients of removed instances are disconnected. If a new
    /// broker cannot start, nothing changes.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, StartError> {
        let directory = Directory::from_config(&config);
        let started_instances = self.brokers.ensure_started(&directory).await?;
        let old = self.directory.current();
        let mut removed_instances: Vec<String> = old
            .instances()
            .filter(|i| directory.instance(&i.id).is_none())
            .map(|i| i.id.clone())
            .collect();
        removed_instances.sort();
        let limits_changed = directory.limits() != old.limits();
        if limits_changed {
            let mut current = self
                .state
                .throttle
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let throttle = Throttle::carrying_over(directory.limits().to_vec(), Some(&current));
            *current = Arc::new(throttle);
        }
        self.directory.replace(directory);
        for id in &removed_instances {
            if let Some(broker) = self.brokers.instance(id) {
                broker
                    .disconnect_all(
                        reason::ADMINISTRATIVE_ACTION,
                        "the instance was removed from the configuration",
                    )
                    .await;
            }
        }
        let mut previous = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut needs_restart = Vec::new();
        if previous.http.listen != config.http.listen {
            needs_restart.push("http.listen");
        }
        if previous.mqtt.listen != config.mqtt.listen {
            needs_restart.push("mqtt.listen");
        }
        if previous.storage.dir != config.storage.dir {
            needs_restart.push("storage.dir");
        }
        if previous.cluster != config.cluster {
            needs_restart.push("cluster");
        }
        if previous.metrics.listen != config.metrics.listen {
            needs_restart.push("metrics.listen");
        }
        if previous.metrics.bearer_token != config.metrics.bearer_token {
            needs_restart.push("metrics.bearer_token");
        }
        if previous.storage.device_key_file != config.storage.device_key_file {
            needs_restart.push("storage.device_key_file");
        }
        let (old_http, new_http) = (&previous.http, &config.http);
        if old_http.batch_status_ttl_ms != new_http.batch_status_ttl_ms {
            needs_restart.push("http.batch_status_ttl_ms");
        }
        if old_http.timestamp_window_secs != new_http.timestamp_window_secs {
            needs_restart.push("http.timestamp_window_secs");
        }
        if old_http.max_remembered_nonces != new_http.max_remembered_nonces {
            needs_restart.push("http.max_remembered_nonces");
        }
        if old_http.header_timeout_secs != new_http.header_timeout_secs {
            needs_restart.push("http.header_timeout_secs");
        }
        if old_http.body_timeout_secs != new_http.body_timeout_secs {
            needs_restart.push("http.body_timeout_secs");
        }
        let (old_mqtt, new_mqtt) = (&previous.mqtt, &config.mqtt);
        if old_mqtt.max_packet_size != new_mqtt.max_packet_size {
            needs_restart.push("mqtt.max_packet_size");
        }
        if old_mqtt.max_connections_per_instance != new_mqtt.max_connections_per_instance {
            needs_restart.push("mqtt.max_connections_per_instance");
        }
        if old_mqtt.connect_timeout_secs != new_mqtt.connect_timeout_secs {
            needs_restart.push("mqtt.connect_timeout_secs");
        }
        // Listeners and certificates are read at start.
        for (field, changed) in [
            (
                "http.tls_listen",
                old_http.tls_listen != new_http.tls_listen,
            ),
            ("http.tls_cert", old_http.tls_cert != new_http.tls_cert),
            ("http.tls_key", old_http.tls_key != new_http.tls_key),
            (
                "mqtt.tls_listen",
                old_mqtt.tls_listen != new_mqtt.tls_listen,
            ),
            ("mqtt.ws_listen", old_mqtt.ws_listen != new_mqtt.ws_listen),
            (
                "mqtt.wss_listen",
                old_mqtt.wss_listen != new_mqtt.wss_listen,
            ),
            ("mqtt.tls_cert", old_mqtt.tls_cert != new_mqtt.tls_cert),
            ("mqtt.tls_key", old_mqtt.tls_key != new_mqtt.tls_key),
        ] {
            if changed {
                needs_restart.push(field);
            }
        }
        *previous = config;
        Ok(ReloadReport {
            started_instances,
            removed_instances,
            needs_restart,
        })
    }

    /// Stops accepting, tells every MQTT 5 client that the server is going
    /// away, closes every connection and lets HTTP calls in flight finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for listener in self.mqtt {
            let _ = listener.await;
        }
        self.brokers
            .disconnect_all(reason::SERVER_SHUTTING_DOWN, "mqgate is shutting down")
            .await;
        // The connections' last events (their close) are committed before
        // the process ends.
        let tracer = self.state.tracer.clone();
        let _ = tokio::task::spawn_blocking(move || tracer.flush(Duration::from_secs(2))).await;
        for http in self.http {
            if let Err(e) = http.await {
                tracing::warn!(error = %e, "http server task failed");
            }
        }
        // No request can be accepted any more.
        self.state.replay.record_stop();
        // Every connection is closed: the last broker counts are final.
        self.flusher_stop.cancel();
        if let Err(e) = self.flusher.await {
            tracing::warn!(error = %e, "metering flush task failed");
        }
        self.brokers.shutdown();
    }
}

/// Writes each instance's broker counts (messages by QoS, peak
/// connections) every [`crate::metering::BROKER_FLUSH_EVERY`], on the
/// wall-clock multiples of it, and once more, durably, at shutdown.
async fn flush_broker_counts(
    brokers: Arc<Brokers>,
    meter: Arc<Meter>,
    shutdown: CancellationToken,
) {
    let every = crate::metering::BROKER_FLUSH_EVERY;
    loop {
        let now = chrono::Utc::now();
        let into =
            Duration::from_millis((now.timestamp_millis() as u64) % every.as_millis() as u64);
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every - into) => false,
            _ = shutdown.cancelled() => true,
        };
        // Counts gathered up to now belong to the minute just before it.
        let minute = crate::metering::minute_of(chrono::Utc::now() - chrono::Duration::seconds(1));
        for broker in brokers.all() {
            let current = broker.sessions.len() as u64;
            let (published, delivered, peak) = broker.meter.drain(current);
            let counts = crate::metering::BrokerCounts {
                account_id: broker.account_id.clone(),
                instance_id: broker.instance_id.clone(),
                minute,
                published,
                delivered,
                peak_connections: peak,
            };
            if let Err(e) = meter.record_broker(counts, stopping).await {
                tracing::error!(error = %e, "broker counts could not be recorded");
            }
        }
        if stopping {
            return;
        }
    }
}

/// A listener not yet tied to a runtime (for the brokers' runtime to take).
fn bind_std(field: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let bound = std::net::TcpListener::bind(addr).and_then(|listener| {
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    bound.map_err(|error| StartError::Bind { field, addr, error })
}

async fn bind(field: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind { field, addr, error })
}

fn local_addr(
    field: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|error| StartError::Bind { field, addr, error })
}

/// The relay address peers are told: `advertise_host` with the bound port,
/// or the bound address itself.
fn advertised_relay(advertise_host: Option<&str>, bound: SocketAddr) -> String {
    match advertise_host {
        // A bare IPv6 address needs its brackets before the port.
        Some(host) if host.contains(':') && !host.starts_with('[') => {
            format!("[{host}]:{}", bound.port())
        }
        Some(host) => format!("{host}:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// A listener bound to `addr` and registered with the MQTT side's runtime
/// (where the front layer polls it), and the address it got.
fn bind_mqtt_side(
    brokers: &Brokers,
    field: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = bind_std(field, addr)?;
    let bound = listener
        .local_addr()
        .map_err(|error| StartError::Bind { field, addr, error })?;
    let _mqtt_side = brokers.enter();
    let listener =
        TcpListener::from_std(listener).map_err(|error| StartError::Bind { field, addr, error })?;
    Ok((listener, bound))
}
