//! The configuration file: its shape, its defaults, the demo set-up, and the
//! checks that stop start-up with a message naming the file, the field and
//! what is wrong.
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt key is an error, not
//! a silently ignored line.

use crate::api::Limit;
use crate::ram::{self, Policy};
use crate::secret::Secret;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The whole configuration, as loaded and validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub trace: TraceConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[cluster]`: several nodes sharing one Redis. Absent: this node
    /// stands alone.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Calls per second per account, by action name (or `EmqxApi` for the
    /// EMQX API), for every account (defaults: the action table's, and 100
    /// for the EMQX API).
    #[serde(default)]
    pub limits: HashMap<String, u32>,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
}

/// `[cluster]`: this node is one of several behind a balancer, sharing one
/// Redis (or Valkey) for what must hold across them ([`crate::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port` (or `redis://:password@host:port/db`,
    /// `rediss://` for TLS). Every node names the same one.
    pub redis_url: Secret,
    /// This node's name among its peers: letters, digits, `-` and `_`, up
    /// to 64; unique in the cluster.
    pub node_id: String,
    /// Prefix of every key mqgate writes, so that one Redis can hold
    /// several clusters (and other users' keys) apart.
    #[serde(default = "default_cluster_key_prefix")]
    pub key_prefix: String,
    /// How long a call waits for Redis before it is answered
    /// `ServiceUnavailable` (and mqgate waits for it at start before it
    /// gives up).
    #[serde(default = "default_cluster_timeout_ms")]
    pub timeout_ms: u64,
    /// Where this node takes the device connections other nodes relay to
    /// it, for the instances it holds ([`crate::cluster::placement`]).
    /// Port 0 picks a free one: peers learn the address through Redis.
    #[serde(default = "default_cluster_relay_listen")]
    pub relay_listen: SocketAddr,
    /// The host (name or address) peers reach `relay_listen` at; needed
    /// when `relay_listen` binds every interface (`0.0.0.0`, `::`).
    #[serde(default)]
    pub advertise_host: Option<String>,
}

fn default_cluster_relay_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn default_cluster_key_prefix() -> String {
    "mqgate".to_string()
}

fn default_cluster_timeout_ms() -> u64 {
    500
}

/// `[metrics]`: who may read `GET /metrics` (Prometheus text). By default
/// it is served on the API port to anyone who reaches it; counters name
/// instances and actions, so a deployment reachable by others moves it to
/// a listener of its own, requires a bearer token, or both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` on this address alone (then not on the API port),
    /// e.g. `127.0.0.1:9464`. Port 0 picks a free port.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` (at least 16 characters),
    /// compared in constant time.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
}

/// `[trace]`: the trace store (`storage.dir/traces.sqlite3`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Record device events for the trace actions.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Events older than this are deleted (Alibaba keeps traces 3 days).
    #[serde(default = "default_trace_retention_hours")]
    pub retention_hours: u64,
    /// A cap on the trace database's size: past it, the oldest events go.
    #[serde(default = "default_trace_max_bytes")]
    pub max_bytes: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            enabled: true,
            retention_hours: default_trace_retention_hours(),
            max_bytes: default_trace_max_bytes(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_trace_retention_hours() -> u64 {
    72
}
fn default_trace_max_bytes() -> u64 {
    1 << 30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP API (RPC endpoint at `/`). Port 0 picks a free port.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// How stale `BatchQuerySessionByClientIds` may be, in milliseconds: its
    /// answers come from a cache of online status with this time to live.
    #[serde(default = "default_batch_status_ttl_ms")]
    pub batch_status_ttl_ms: u64,
    /// Allowed clock difference between a signed request's timestamp and this
    /// server, in seconds, both ways (Alibaba's gateway uses 15 minutes).
    #[serde(default = "default_timestamp_window_secs")]
    pub timestamp_window_secs: u64,
    /// Most signature nonces remembered at once (about 40 bytes each). When
    /// all are still within the window, new calls are refused
    /// (`ServiceUnavailable`) rather than forgetting one and allowing a replay.
    #[serde(default = "default_max_remembered_nonces")]
    pub max_remembered_nonces: usize,
    /// Peers whose `X-Forwarded-For` is believed for `acs:SourceIp` (the
    /// address of a reverse proxy in front of mqgate). Empty: the TCP peer's
    /// address is the source, whatever headers say.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// HTTPS for the same API, beside `listen` (absent: not served); needs
    /// `tls_cert` and `tls_key`. Port 0 picks a free port.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// The HTTPS certificate chain, PEM (the server's certificate first,
    /// then its intermediates). Relative paths are read from the working
    /// directory, like `storage.dir`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The HTTPS private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How long a client has to send its request head (and, over HTTPS, to
    /// finish its TLS handshake), in seconds; then the connection is
    /// closed (slow-header floods).
    #[serde(default = "default_http_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// How long a request's body may take to arrive once its head has, in
    /// seconds; then the call is answered `MalformedRequest` and the
    /// connection closed (a body declared and never sent).
    #[serde(default = "default_http_body_timeout_secs")]
    pub body_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The public MQTT port (3.1.1 and 5 on one port). Port 0 picks a free port.
    #[serde(default = "default_mqtt_listen")]
    pub listen: SocketAddr,
    /// Instance that clients connecting without a username land in; absent:
    /// such clients are refused.
    #[serde(default)]
    pub anonymous_instance: Option<String>,
    /// Largest MQTT packet accepted, in bytes.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Most concurrent connections per instance (rumqttd's router limit).
    #[serde(default = "default_max_connections")]
    pub max_connections_per_instance: usize,
    /// Seconds a new connection has to send its CONNECT.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds a client may leave what mqgate sends it unread (its socket
    /// full) before it is disconnected, as a client that stopped reading:
    /// meanwhile at most rumqttd's per-connection queue (200 messages) waits
    /// for it, and other clients are not held up.
    #[serde(default = "default_send_timeout_secs")]
    pub send_timeout_secs: u64,
    /// How long an MQTT 3.1.1 session with clean session false is kept (and
    /// shown as disconnected) after its client leaves; 3.1.1 has no expiry
    /// of its own. MQTT 5 sessions use their Session Expiry Interval.
    #[serde(default = "default_session_expiry_secs")]
    pub session_expiry_secs: u64,
    /// MQTT over TLS (conventionally port 8883); absent: not served. Needs
    /// `tls_cert` and `tls_key`. Port 0 picks a free port.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`); absent: not
    /// served. Port 0 picks a free port.
    #[serde(default)]
    pub ws_listen: Option<SocketAddr>,
    /// MQTT over secure WebSocket (TLS with `tls_cert` and `tls_key`, then
    /// as `ws_listen`); absent: not served. Port 0 picks a free port.
    #[serde(default)]
    pub wss_listen: Option<SocketAddr>,
    /// The certificate chain of `tls_listen` and `wss_listen`, PEM (the
    /// server's certificate first, then its intermediates). Relative paths
    /// are read from the working directory, like `storage.dir`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for mqgate's durable state. Created if missing.
    #[serde(default = "default_storage_dir")]
    pub dir: PathBuf,
    /// The server key device secrets are derived from (created, 0600, if
    /// missing). Default: `dir/devices.key`. Keep it apart from the
    /// database to keep a copy of the database from holding what derives
    /// the secrets.
    #[serde(default)]
    pub device_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub id: String,
    /// This account's own calls-per-second limits, by action name.
    #[serde(default)]
    pub limits: HashMap<String, u32>,
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub id: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Billed transactions allowed per UTC month; absent: no limit.
    #[serde(default)]
    pub monthly_transaction_quota: Option<u64>,
    /// Refuse a client whose client id's group id (`{GroupId}@@@{DeviceId}`)
    /// has not been created with CreateGroupId. Off by default.
    #[serde(default)]
    pub require_group_ids: bool,
    /// Most group ids the instance holds (CreateGroupId past it answers
    /// `GroupIdNumExceed`).
    #[serde(default = "default_max_group_ids")]
    pub max_group_ids: usize,
    /// Most device credentials the instance holds (RegisterDeviceCredential
    /// past it answers `DeviceCredentialNumExceed`).
    #[serde(default = "default_max_device_credentials")]
    pub max_device_credentials: usize,
    /// Most unexpired tokens the instance holds (ApplyToken past it answers
    /// `TokenNumExceed`).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Most client ids on the instance's connection blacklist
    /// (AddCustomAuthConnectBlack past it answers `Customauth.over.capacity`).
    #[serde(default = "default_max_blacklisted_clients")]
    pub max_blacklisted_clients: usize,
    /// Most custom-auth identities the instance holds
    /// (AddCustomAuthIdentity past it answers `Customauth.over.capacity`).
    #[serde(default = "default_max_custom_auth_identities")]
    pub max_custom_auth_identities: usize,
    /// Most custom-auth permission rules the instance holds
    /// (AddCustomAuthPermission past it answers `Customauth.over.capacity`).
    #[serde(default = "default_max_custom_auth_permissions")]
    pub max_custom_auth_permissions: usize,
    /// An MQTT listener of the instance's own: a custom-auth login there
    /// belongs to this instance, whatever other instances hold its
    /// username (the way Alibaba tells instances apart by endpoint). Read
    /// at start; a reload does not open or close listeners.
    #[serde(default)]
    pub mqtt_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// The account's own key: full access to the account's instances.
    #[serde(default)]
    pub root: bool,
    /// A disabled key is refused with `InvalidAccessKeyId.Inactive`.
    #[serde(default)]
    pub disabled: bool,
    /// RAM policies: names of the system policies in `policies/` or paths
    /// to JSON documents (relative to the configuration file).
    #[serde(default)]
    pub policies: Vec<String>,
    /// The policies above, compiled when the configuration is loaded.
    #[serde(skip)]
    pub compiled_policies: Vec<Arc<Policy>>,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_batch_status_ttl_ms() -> u64 {
    1000
}
fn default_timestamp_window_secs() -> u64 {
    15 * 60
}
fn default_max_remembered_nonces() -> usize {
    2_000_000
}
fn default_max_packet_size() -> usize {
    256 * 1024
}
fn default_max_connections() -> usize {
    20_000
}
fn default_http_header_timeout_secs() -> u64 {
    10
}
fn default_http_body_timeout_secs() -> u64 {
    10
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_send_timeout_secs() -> u64 {
    15
}
fn default_session_expiry_secs() -> u64 {
    7200
}
fn default_storage_dir() -> PathBuf {
    PathBuf::from("./mqgate-data")
}
fn default_max_group_ids() -> usize {
    10_000
}
fn default_max_device_credentials() -> usize {
    100_000
}
fn default_max_custom_auth_identities() -> usize {
    10_000
}
fn default_max_custom_auth_permissions() -> usize {
    50_000
}
fn default_max_blacklisted_clients() -> usize {
    10_000
}
fn default_max_tokens() -> usize {
    100_000
}
fn default_region() -> String {
    "cn-hangzhou".to_string()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            batch_status_ttl_ms: default_batch_status_ttl_ms(),
            timestamp_window_secs: default_timestamp_window_secs(),
            max_remembered_nonces: default_max_remembered_nonces(),
            trusted_proxies: Vec::new(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            header_timeout_secs: default_http_header_timeout_secs(),
            body_timeout_secs: default_http_body_timeout_secs(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: default_mqtt_listen(),
            anonymous_instance: None,
            max_packet_size: default_max_packet_size(),
            max_connections_per_instance: default_max_connections(),
            connect_timeout_secs: default_connect_timeout_secs(),
            send_timeout_secs: default_send_timeout_secs(),
            session_expiry_secs: default_session_expiry_secs(),
            tls_listen: None,
            ws_listen: None,
            wss_listen: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: default_storage_dir(),
            device_key_file: None,
        }
    }
}

/// Why a configuration was refused. The message names the file, the field
/// and what to change.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub problem: Problem,
}

/// What is wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// Not TOML, or not the shape of a configuration (toml's message says
    /// where and which key).
    #[error("{0}")]
    Syntax(String),
    /// A value the types accept but the service cannot: the field's path
    /// (`accounts[0].users[1].access_key_id`) and what to change.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// A [`Problem::Invalid`].
fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Credentials of the demo set-up that `mqgate serve` starts without `--config`.
pub mod demo {
    pub const ACCOUNT_ID: &str = "1000000000000001";
    pub const INSTANCE_ID: &str = "mqtt-demo-0001";
    pub const REGION: &str = "cn-hangzhou";
    pub const USER_NAME: &str = "root";
    pub const ACCESS_KEY_ID: &str = "mqgate-demo-key";
    pub const ACCESS_KEY_SECRET: &str = "mqgate-demo-secret";
    /// The demo's secure and WebSocket ports (beside HTTP 8080 and MQTT
    /// 1883): MQTT over TLS, WebSocket, secure WebSocket, and HTTPS.
    pub const MQTT_TLS_PORT: u16 = 8883;
    pub const MQTT_WS_PORT: u16 = 8083;
    pub const MQTT_WSS_PORT: u16 = 8084;
    pub const HTTPS_PORT: u16 = 8443;
    /// Where in the demo's storage directory its certificates are
    /// (generated at start when missing, kept across restarts), and their
    /// names there (the same `mqgate cert` writes).
    pub const TLS_DIR: &str = "tls";
    pub const TLS_CA_FILE: &str = "ca.crt";
    pub const TLS_CERT_FILE: &str = "server.crt";
    pub const TLS_KEY_FILE: &str = "server.key";
}

impl Config {
    /// The demo: loopback only, one account, one instance, one root key, and
    /// anonymous MQTT clients land in that instance. Besides HTTP and MQTT,
    /// it serves MQTT over TLS, WebSocket and secure WebSocket, and HTTPS,
    /// with the certificate `mqgate serve` generates in `storage.dir/tls`
    /// when it is missing.
    pub fn demo() -> Config {
        let dir = std::env::temp_dir().join("mqgate-demo");
        let loopback = |port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        let tls = dir.join(demo::TLS_DIR);
        Config {
            http: HttpConfig {
                tls_listen: loopback(demo::HTTPS_PORT),
                tls_cert: Some(tls.join(demo::TLS_CERT_FILE)),
                tls_key: Some(tls.join(demo::TLS_KEY_FILE)),
                ..HttpConfig::default()
            },
            mqtt: MqttConfig {
                anonymous_instance: Some(demo::INSTANCE_ID.to_string()),
                tls_listen: loopback(demo::MQTT_TLS_PORT),
                ws_listen: loopback(demo::MQTT_WS_PORT),
                wss_listen: loopback(demo::MQTT_WSS_PORT),
                tls_cert: Some(tls.join(demo::TLS_CERT_FILE)),
                tls_key: Some(tls.join(demo::TLS_KEY_FILE)),
                ..MqttConfig::default()
            },
            storage: StorageConfig {
                dir,
                device_key_file: None,
            },
            trace: TraceConfig::default(),
            metrics: MetricsConfig::default(),
            cluster: None,
            limits: HashMap::new(),
            accounts: vec![AccountConfig {
                id: demo::ACCOUNT_ID.to_string(),
                limits: HashMap::new(),
                instances: vec![InstanceConfig {
                    id: demo::INSTANCE_ID.to_string(),
                    region: demo::REGION.to_string(),
                    monthly_transaction_quota: None,
                    require_group_ids: false,
                    max_group_ids: default_max_group_ids(),
                    max_device_credentials: default_max_device_credentials(),
                    max_tokens: default_max_tokens(),
                    max_blacklisted_clients: default_max_blacklisted_clients(),
                    max_custom_auth_identities: default_max_custom_auth_identities(),
                    max_custom_auth_permissions: default_max_custom_auth_permissions(),
                    mqtt_listen: None,
                }],
                users: vec![UserConfig {
                    name: demo::USER_NAME.to_string(),
                    access_key_id: demo::ACCESS_KEY_ID.to_string(),
                    access_key_secret: Secret::new(demo::ACCESS_KEY_SECRET),
                    root: true,
                    disabled: false,
                    policies: Vec::new(),
                    compiled_policies: Vec::new(),
                }],
            }],
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problem: Problem::Read(e),
        })?;
        Config::parse(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors,
    /// and policy paths are relative to its directory.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let error = |problem: Problem| ConfigError {
            file: file.to_string(),
            problem,
        };
        let mut config: Config = toml::from_str(text)
            .map_err(|e| error(Problem::Syntax(e.to_string().trim_end().to_string())))?;
        config.validate().map_err(error)?;
        let base_dir = Path::new(file).parent().unwrap_or(Path::new("."));
        config.compile_policies(base_dir).map_err(error)?;
        Ok(config)
    }

    /// Loads every user's policies. Each file is read once, however many
    /// users attach it.
    fn compile_policies(&mut self, base_dir: &Path) -> Result<(), Problem> {
        let mut loaded: HashMap<String, Arc<Policy>> = HashMap::new();
        for (a, account) in self.accounts.iter_mut().enumerate() {
            for (u, user) in account.users.iter_mut().enumerate() {
                user.compiled_policies.clear();
                for (p, reference) in user.policies.iter().enumerate() {
                    let policy = match loaded.get(reference) {
                        Some(policy) => policy.clone(),
                        None => {
                            let policy =
                                Arc::new(ram::load_policy(reference, base_dir).map_err(|e| {
                                    invalid(format!("accounts[{a}].users[{u}].policies[{p}]"), e)
                                })?);
                            loaded.insert(reference.clone(), policy.clone());
                            policy
                        }
                    };
                    user.compiled_policies.push(policy);
                }
            }
        }
        Ok(())
    }

    /// Every policy file the configuration refers to (for change watching).
    pub fn policy_files(&self, base_dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .accounts
            .iter()
            .flat_map(|a| &a.users)
            .flat_map(|u| &u.policies)
            .filter(|r| ram::system_policy(r).is_none())
            .map(|r| base_dir.join(r))
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// Checks what the types alone cannot: ids that must be unique or must
    /// exist, and values that must be in range.
    fn validate(&self) -> Result<(), Problem> {
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if let Some(token) = &self.metrics.bearer_token
            && token.expose().chars().count() < 16
        {
            return Err(invalid(
                "metrics.bearer_token",
                "use at least 16 characters (e.g. the output of `openssl rand -hex 16`)",
            ));
        }
        if self.accounts.is_empty() {
            return Err(invalid(
                "accounts",
                "at least one [[accounts]] table is needed",
            ));
        }
        if self.mqtt.max_packet_size < 1024 || self.mqtt.max_packet_size > 268_435_455 {
            return Err(invalid(
                "mqtt.max_packet_size",
                format!(
                    "{} is out of range; use 1024..=268435455 bytes",
                    self.mqtt.max_packet_size
                ),
            ));
        }
        for (field, value) in [
            (
                "mqtt.max_connections_per_instance",
                self.mqtt.max_connections_per_instance as u64,
            ),
            ("mqtt.connect_timeout_secs", self.mqtt.connect_timeout_secs),
            ("mqtt.send_timeout_secs", self.mqtt.send_timeout_secs),
            (
                "http.max_remembered_nonces",
                self.http.max_remembered_nonces as u64,
            ),
            (
                "http.timestamp_window_secs",
                self.http.timestamp_window_secs,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        // A connection's head or body may not hold its descriptor for
        // ever, nor be refused before a real client could send it.
        for (field, value) in [
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(invalid(
                    field,
                    format!("{value} is out of range; use 1..=3600 seconds"),
                ));
            }
        }
        self.check_tls()?;
        check_limits(&self.limits, "limits")?;
        let mut accounts: HashMap<&str, usize> = HashMap::new();
        let mut instances: HashMap<&str, String> = HashMap::new();
        let mut keys: HashMap<&str, String> = HashMap::new();
        for (a, account) in self.accounts.iter().enumerate() {
            let here = format!("accounts[{a}]");
            check_id(&account.id, &format!("{here}.id"))?;
            check_limits(&account.limits, &format!("{here}.limits"))?;
            if let Some(first) = accounts.insert(&account.id, a) {
                return Err(invalid(
                    format!("{here}.id"),
                    format!(
                        "account \"{}\" is already defined at accounts[{first}]",
                        account.id
                    ),
                ));
            }
            for (i, instance) in account.instances.iter().enumerate() {
                let here = format!("{here}.instances[{i}]");
                check_id(&instance.id, &format!("{here}.id"))?;
                check_id(&instance.region, &format!("{here}.region"))?;
                if let Some(first) = instances.insert(&instance.id, here.clone()) {
                    return Err(invalid(
                        format!("{here}.id"),
                        format!(
                            "instance \"{}\" is already defined at {first}; instance ids are unique across accounts",
                            instance.id
                        ),
                    ));
                }
            }
            for (u, user) in account.users.iter().enumerate() {
                let here = format!("{here}.users[{u}]");
                if user.name.trim().is_empty() {
                    return Err(invalid(format!("{here}.name"), "must not be empty"));
                }
                check_id(&user.access_key_id, &format!("{here}.access_key_id"))?;
                if user.access_key_secret.expose().is_empty() {
                    return Err(invalid(
                        format!("{here}.access_key_secret"),
                        "must not be empty",
                    ));
                }
                if let Some(first) = keys.insert(&user.access_key_id, here.clone()) {
                    return Err(invalid(
                        format!("{here}.access_key_id"),
                        format!(
                            "\"{}\" is already used at {first}; AccessKeyIds are unique",
                            user.access_key_id
                        ),
                    ));
                }
            }
        }
        if let Some(anonymous) = &self.mqtt.anonymous_instance
            && !instances.contains_key(anonymous.as_str())
        {
            return Err(invalid(
                "mqtt.anonymous_instance",
                format!("no instance \"{anonymous}\" is defined in [[accounts.instances]]"),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// A TLS listener needs both files of its section; a certificate needs
    /// its key and the other way round. (The files themselves are read at
    /// start, [`crate::transport::tls`].)
    fn check_tls(&self) -> Result<(), Problem> {
        let sections = [
            (
                "http",
                &self.http.tls_cert,
                &self.http.tls_key,
                vec![("http.tls_listen", self.http.tls_listen)],
            ),
            (
                "mqtt",
                &self.mqtt.tls_cert,
                &self.mqtt.tls_key,
                vec![
                    ("mqtt.tls_listen", self.mqtt.tls_listen),
                    ("mqtt.wss_listen", self.mqtt.wss_listen),
                ],
            ),
        ];
        for (section, cert, key, listeners) in sections {
            let needed_by = listeners
                .iter()
                .find(|(_, addr)| addr.is_some())
                .map(|(field, _)| *field);
            for (name, value, other) in [("tls_cert", cert, key), ("tls_key", key, cert)] {
                if value.is_some() {
                    continue;
                }
                let field = format!("{section}.{name}");
                if let Some(listener) = needed_by {
                    return Err(invalid(
                        field,
                        format!(
                            "{listener} needs a certificate: set {section}.tls_cert and {section}.tls_key (PEM files)"
                        ),
                    ));
                }
                if other.is_some() {
                    return Err(invalid(
                        field,
                        format!(
                            "{section}.tls_cert and {section}.tls_key go together: set both or neither"
                        ),
                    ));
                }
            }
            for (field, value) in [("tls_cert", cert), ("tls_key", key)] {
                if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(invalid(format!("{section}.{field}"), "must not be empty"));
                }
            }
        }
        Ok(())
    }
}

/// Limits name actions mqgate serves (or `EmqxApi`), with at least one call
/// per second.
fn check_limits(limits: &HashMap<String, u32>, field: &str) -> Result<(), Problem> {
    let mut names: Vec<&String> = limits.keys().collect();
    names.sort();
    for name in names {
        if Limit::from_name(name).is_none() {
            let known: Vec<&str> = Limit::all().map(Limit::name).collect();
            return Err(invalid(
                format!("{field}.{name}"),
                format!("not an action; use one of {}", known.join(", ")),
            ));
        }
        if limits[name] == 0 {
            return Err(invalid(
                format!("{field}.{name}"),
                "must be at least 1 call per second",
            ));
        }
    }
    Ok(())
}

/// Ids end up in ARNs (`acs:mq:region:account:instance`) and MQTT usernames
/// (`Signature|key|instance`), so `:`, `|`, `/`, whitespace and control
/// characters would make them ambiguous.
fn check_id(value: &str, field: &str) -> Result<(), Problem> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > 128 {
        return Err(invalid(
            field,
            format!("\"{value}\" is longer than 128 characters"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
    {
        return Err(invalid(
            field,
            format!("\"{value}\" contains '{bad}'; use letters, digits, '-', '_', '.' or '@'"),
        ));
    }
    Ok(())
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), Problem> {
        let url = self.redis_url.expose();
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err(invalid(
                "cluster.redis_url",
                "use a Redis URL: redis://host:port (rediss:// for TLS, unix:///path for a socket)",
            ));
        }
        let id = &self.node_id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "cluster.node_id",
                format!("{id:?}: use 1 to 64 letters, digits, '-' or '_', unique in the cluster"),
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err(invalid(
                "cluster.key_prefix",
                "use a non-empty prefix without spaces (e.g. \"mqgate\")",
            ));
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "cluster.timeout_ms",
                format!("{} is out of range; use 10..=60000 ms", self.timeout_ms),
            ));
        }
        match &self.advertise_host {
            Some(host) if host.is_empty() || host.contains(char::is_whitespace) => {
                return Err(invalid(
                    "cluster.advertise_host",
                    "use the host name or address peers reach this node at, without spaces",
                ));
            }
            None if self.relay_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "cluster.advertise_host",
                    format!(
                        "relay_listen {} binds every interface: set advertise_host to the address the other nodes reach this node at",
                        self.relay_listen
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [http]
        listen = "127.0.0.1:8080"
        [mqtt]
        listen = "127.0.0.1:1883"
        anonymous_instance = "post-cn-demo"
        [storage]
        dir = "./mqgate-data"
        [[accounts]]
        id = "1234567890"
          [[accounts.instances]]
          id = "post-cn-demo"
          region = "cn-hangzhou"
          [[accounts.users]]
          name = "root"
          access_key_id = "testid"
          access_key_secret = "testsecret"
          root = true
    "#;

    #[test]
    fn the_issue_example_loads() {
        let c = Config::parse(GOOD, "x.toml").unwrap();
        assert_eq!(c.accounts[0].instances[0].id, "post-cn-demo");
        assert_eq!(c.mqtt.anonymous_instance.as_deref(), Some("post-cn-demo"));
        assert!(c.accounts[0].users[0].root);
        assert_eq!(c.http.batch_status_ttl_ms, 1000);
    }

    #[test]
    fn the_example_file_and_the_demo_are_valid() {
        let text = include_str!("../mqgate.example.toml");
        Config::parse(text, "mqgate.example.toml").unwrap();
        Config::demo().validate().unwrap();
    }

    /// Each bad file is refused with a message that names the field.
    #[test]
    fn bad_files_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "unknown key",
                "[http]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
                "listen_port",
            ),
            ("bad address", "[http]\nlisten = \"localhost\"\n", "listen"),
            ("no accounts", "[http]\n", "accounts"),
            (
                "duplicate instance",
                &GOOD.replace(
                    "[[accounts.users]]",
                    "[[accounts.instances]]\nid = \"post-cn-demo\"\n[[accounts.users]]",
                ),
                "accounts[0].instances[1].id",
            ),
            (
                "anonymous instance missing",
                &GOOD.replace(
                    "anonymous_instance = \"post-cn-demo\"",
                    "anonymous_instance = \"nope\"",
                ),
                "mqtt.anonymous_instance",
            ),
            (
                "bad instance id",
                &GOOD.replace("id = \"post-cn-demo\"", "id = \"a:b\""),
                "accounts[0].instances[0].id",
            ),
            (
                "empty secret",
                &GOOD.replace("\"testsecret\"", "\"\""),
                "accounts[0].users[0].access_key_secret",
            ),
            (
                "missing secret",
                &GOOD.replace("access_key_secret = \"testsecret\"", ""),
                "access_key_secret",
            ),
            (
                "a TLS listener without a certificate",
                &GOOD.replace("[mqtt]\n", "[mqtt]\ntls_listen = \"127.0.0.1:8883\"\n"),
                "mqtt.tls_cert: mqtt.tls_listen needs a certificate",
            ),
            (
                "a secure WebSocket listener without a key",
                &GOOD.replace(
                    "[mqtt]\n",
                    "[mqtt]\nwss_listen = \"127.0.0.1:8084\"\ntls_cert = \"c.pem\"\n",
                ),
                "mqtt.tls_key: mqtt.wss_listen needs a certificate",
            ),
            (
                "HTTPS without a certificate",
                &GOOD.replace("[http]\n", "[http]\ntls_listen = \"127.0.0.1:8443\"\n"),
                "http.tls_cert: http.tls_listen needs",
            ),
            (
                "a key without its certificate",
                &GOOD.replace("[http]\n", "[http]\ntls_key = \"k.pem\"\n"),
                "http.tls_cert: http.tls_cert and http.tls_key go together",
            ),
            (
                "a header timeout of 0",
                &GOOD.replace("[http]\n", "[http]\nheader_timeout_secs = 0\n"),
                "http.header_timeout_secs: 0 is out of range",
            ),
            (
                "a body timeout of a day",
                &GOOD.replace("[http]\n", "[http]\nbody_timeout_secs = 86400\n"),
                "http.body_timeout_secs: 86400 is out of range",
            ),
            (
                "a misspelt TLS key",
                &GOOD.replace("[mqtt]\n", "[mqtt]\ntls_certificate = \"c.pem\"\n"),
                "tls_certificate",
            ),
        ];
        for (name, text, field) in cases {
            let err = Config::parse(text, "bad.toml").expect_err(name);
            let msg = err.to_string();
            assert!(msg.starts_with("bad.toml: "), "{name}: {msg}");
            assert!(msg.contains(field), "{name}: expected {field} in: {msg}");
        }
    }

    /// A plain WebSocket listener needs no certificate; with one, every
    /// secure listener is accepted.
    #[test]
    fn transports_load() {
        let text = GOOD.replace("[mqtt]\n", "[mqtt]\nws_listen = \"127.0.0.1:0\"\n");
        let c = Config::parse(&text, "x.toml").unwrap();
        assert!(c.mqtt.ws_listen.is_some() && c.mqtt.tls_listen.is_none());
        let text = GOOD
            .replace(
                "[mqtt]\n",
                "[mqtt]\ntls_listen = \"127.0.0.1:0\"\nwss_listen = \"127.0.0.1:0\"\n\
                 tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
            )
            .replace(
                "[http]\n",
                "[http]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
            );
        let c = Config::parse(&text, "x.toml").unwrap();
        assert_eq!(c.http.tls_key.as_deref(), Some(Path::new("k.pem")));
        assert!(c.mqtt.wss_listen.is_some());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::parse(GOOD, "x.toml").unwrap();
        assert!(!format!("{c:?}").contains("testsecret"));
        let clustered = format!(
            "{GOOD}\n[cluster]\nredis_url = \"redis://:hunter2@127.0.0.1:6379\"\nnode_id = \"n1\"\n"
        );
        let c = Config::parse(&clustered, "x.toml").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_cluster_section_is_checked() {
        let with = |body: &str| format!("{GOOD}\n[cluster]\n{body}\n");
        let c = Config::parse(
            &with("redis_url = \"redis://127.0.0.1:6379\"\nnode_id = \"n-1_a\""),
            "x.toml",
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(
            (cluster.key_prefix.as_str(), cluster.timeout_ms),
            ("mqgate", 500)
        );
        let refused = |body: &str, field: &str| {
            let e = Config::parse(&with(body), "x.toml").unwrap_err();
            assert!(e.to_string().contains(field), "{body}: {e}");
        };
        refused("node_id = \"n1\"", "redis_url");
        refused("redis_url = \"redis://127.0.0.1:6379\"", "node_id");
        refused(
            "redis_url = \"http://127.0.0.1:6379\"\nnode_id = \"n1\"",
            "cluster.redis_url",
        );
        refused(
            "redis_url = \"redis://127.0.0.1:6379\"\nnode_id = \"n 1\"",
            "cluster.node_id",
        );
        refused(
            "redis_url = \"redis://127.0.0.1:6379\"\nnode_id = \"n1\"\ntimeout_ms = 0",
            "cluster.timeout_ms",
        );
        refused(
            "redis_url = \"redis://127.0.0.1:6379\"\nnode_id = \"n1\"\nkey_prefix = \"\"",
            "cluster.key_prefix",
        );
        refused(
            "redis_url = \"redis://127.0.0.1:6379\"\nnode_id = \"n1\"\nrelay_listen = \"0.0.0.0:1885\"",
            "cluster.advertise_host",
        );
        let c = Config::parse(
            &with("redis_url = \"redis://r:6379\"\nnode_id = \"n1\"\nrelay_listen = \"0.0.0.0:1885\"\nadvertise_host = \"10.0.0.7\""),
            "x.toml",
        )
        .unwrap();
        assert_eq!(
            c.cluster.unwrap().advertise_host.as_deref(),
            Some("10.0.0.7")
        );
    }
}
