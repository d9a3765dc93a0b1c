//! The durable device-side state of every instance: the group ids created
//! on it ([`groups`]), its device credentials ([`credentials`]) and its
//! tokens ([`tokens`], topic sets compiled by [`topics`]), its
//! connection blacklist ([`blacklist`]) and its custom-auth identities and
//! topic permissions ([`custom_auth`], compiled by [`permissions`]), and
//! its tags ([`tags`]), in
//! SQLite (`storage.dir/devices.sqlite3`, WAL, `synchronous=FULL`) and in
//! memory. Device secrets are derived from a server key kept in a file of
//! its own, never stored ([`keys`]).
//!
//! Every change is committed before the call that made it is answered, so
//! it survives a restart and a SIGKILL; the in-memory view, which the front
//! layer reads on every CONNECT, is updated after the commit, under the
//! same lock, so that memory never holds what the database does not.
//! Changes are few (management calls), so each is its own transaction;
//! reads never touch the database.
//!
//! In a cluster every node holds the whole state: [`replica`] queues each
//! changed row in the write's transaction and applies the other nodes'
//! rows (`cluster::devices` moves them through Redis).

pub mod blacklist;
pub mod credentials;
pub mod custom_auth;
pub mod groups;
pub mod keys;
pub mod permissions;
pub mod replica;
pub mod tags;
pub mod tokens;
pub mod topics;

use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use blacklist::Blacklisted;
pub use credentials::{Credential, Registered};
pub use custom_auth::{Added, Identity, IdentityFilter, Permission, PermissionFilter, SignMode};
pub use groups::{Group, GroupIdError, check_group_id, group_of};
pub use keys::{KeyError, ServerKey};
pub use permissions::{Decision, Effect, IdentityType, PermitAction, Rule, SharedRules};
pub use tags::{MAX_TAGS_PER_INSTANCE, Tagged};
pub use tokens::{Applied, TokenGrant, TokenRequest, TokenType};
pub use topics::TopicSet;

/// File name of the device database inside `storage.dir`.
pub const DATABASE: &str = "devices.sqlite3";
/// File name of the server key inside `storage.dir` (unless
/// `storage.device_key_file` names another place).
pub const KEY_FILE: &str = "devices.key";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS group_ids (
    instance_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (instance_id, group_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_credentials (
    instance_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    access_key_id TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (instance_id, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    token_hash BLOB PRIMARY KEY,
    account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    resources TEXT NOT NULL,
    expire_time INTEGER NOT NULL,
    create_time INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_by_instance ON tokens (instance_id);
CREATE TABLE IF NOT EXISTS custom_auth_identities (
    instance_id TEXT NOT NULL,
    identity_type TEXT NOT NULL,
    username TEXT NOT NULL,
    client_id TEXT NOT NULL,
    sign_mode TEXT NOT NULL,
    secret BLOB NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (instance_id, identity_type, username, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS custom_auth_permissions (
    instance_id TEXT NOT NULL,
    identity_type TEXT NOT NULL,
    identity TEXT NOT NULL,
    topic TEXT NOT NULL,
    effect TEXT NOT NULL,
    permit_action TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (instance_id, identity_type, identity, topic)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instance_tags (
    instance_id TEXT NOT NULL,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (instance_id, tag_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instances_seen (
    instance_id TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connect_blacklist (
    instance_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (instance_id, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    field TEXT NOT NULL,
    row TEXT
);
CREATE TABLE IF NOT EXISTS device_replica (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// `sql` limited to one instance's rows when `only` names one (bind
/// `params_from_iter(only)`).
fn scoped(sql: &str, only: Option<&str>) -> String {
    match only {
        Some(_) => format!("{sql} WHERE instance_id = ?1"),
        None => sql.to_string(),
    }
}

/// Which parts of the in-memory state a change reaches: one per family of
/// tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    groups: bool,
    credentials: bool,
    tokens: bool,
    blacklist: bool,
    custom_auth: bool,
    tags: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        groups: true,
        credentials: true,
        tokens: true,
        blacklist: true,
        custom_auth: true,
        tags: true,
    };

    /// The part a table's rows are held in.
    fn of_table(table: &str) -> Parts {
        let mut parts = Parts::default();
        match table {
            "group_ids" => parts.groups = true,
            "device_credentials" => parts.credentials = true,
            "tokens" => parts.tokens = true,
            "connect_blacklist" => parts.blacklist = true,
            "custom_auth_identities" | "custom_auth_permissions" => parts.custom_auth = true,
            "instance_tags" | "instances_seen" => parts.tags = true,
            _ => {}
        }
        parts
    }

    fn add(&mut self, other: Parts) {
        self.groups |= other.groups;
        self.credentials |= other.credentials;
        self.tokens |= other.tokens;
        self.blacklist |= other.blacklist;
        self.custom_auth |= other.custom_auth;
        self.tags |= other.tags;
    }
}

/// Why the device database could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the device database could not be written: {0}")]
    Write(#[from] rusqlite::Error),
    #[error("the device database's writer task failed: {0}")]
    Task(String),
    #[error("device key: {0}")]
    Key(#[from] KeyError),
}

/// What the store holds in memory, per instance.
#[derive(Debug, Default)]
struct State {
    /// instance -> group id -> group.
    groups: HashMap<String, BTreeMap<String, Group>>,
    credentials: credentials::Credentials,
    tokens: tokens::Tokens,
    /// instance -> client ids refused at CONNECT.
    blacklist: HashMap<String, std::collections::BTreeSet<String>>,
    custom_auth: custom_auth::CustomAuths,
    tags: tags::Tags,
}

/// The device-side state of every instance.
pub struct DeviceStore {
    path: PathBuf,
    db: Arc<Mutex<Connection>>,
    state: Arc<RwLock<State>>,
    key: Arc<ServerKey>,
    /// The database's replicated tables, read at open ([`replica`]).
    schema: Arc<replica::Schema>,
    /// Set in a cluster: every change is queued for the other nodes, and
    /// its call waits until it is shipped ([`replica`]).
    replication: std::sync::OnceLock<Arc<replica::Replication>>,
}

impl std::fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The `parts` of the database's state (of one instance, if `only`
    /// names it); the other parts are left empty.
    fn load(
        connection: &Connection,
        key: &ServerKey,
        only: Option<&str>,
        parts: Parts,
    ) -> rusqlite::Result<State> {
        let mut state = State::default();
        if parts.groups {
            state.groups = groups::load(connection, only)?;
        }
        if parts.credentials {
            state.credentials = credentials::load(connection, only)?;
        }
        if parts.tokens {
            state.tokens = tokens::load(connection, only)?;
        }
        if parts.blacklist {
            state.blacklist = blacklist::load(connection, only)?;
        }
        if parts.custom_auth {
            state.custom_auth = custom_auth::load(connection, key, only)?;
        }
        if parts.tags {
            state.tags = tags::load(connection, only)?;
        }
        Ok(state)
    }

    /// Every instance this state holds anything of.
    fn instances(&self) -> std::collections::BTreeSet<String> {
        self.groups
            .keys()
            .chain(self.credentials.instances())
            .chain(self.tokens.instances())
            .chain(self.blacklist.keys())
            .chain(self.custom_auth.instances())
            .chain(self.tags.instances())
            .cloned()
            .collect()
    }

    /// Replaces `parts` of one instance's state by `fresh`'s (loaded for
    /// it), keeping what connections hold: a token still granted keeps its
    /// `Arc`, a token gone is marked revoked, the instance's compiled rules
    /// are stored into the same [`SharedRules`].
    fn replace_instance(&mut self, instance_id: &str, fresh: &mut State, parts: Parts) {
        if parts.groups {
            match fresh.groups.remove(instance_id) {
                Some(groups) => self.groups.insert(instance_id.to_string(), groups),
                None => self.groups.remove(instance_id),
            };
        }
        if parts.credentials {
            self.credentials
                .replace_instance(instance_id, &mut fresh.credentials);
        }
        if parts.tokens {
            self.tokens.replace_instance(instance_id, &fresh.tokens);
        }
        if parts.blacklist {
            match fresh.blacklist.remove(instance_id) {
                Some(list) => self.blacklist.insert(instance_id.to_string(), list),
                None => self.blacklist.remove(instance_id),
            };
        }
        if parts.custom_auth {
            self.custom_auth
                .replace_instance(instance_id, &mut fresh.custom_auth);
        }
        if parts.tags {
            self.tags.replace_instance(instance_id, &mut fresh.tags);
        }
    }
}

impl DeviceStore {
    /// Opens (creating if needed) the database in `dir` and loads it, with
    /// the server key at `key_file` (default: `dir/devices.key`), created
    /// if missing.
    pub fn open(dir: &Path, key_file: Option<&Path>) -> Result<DeviceStore, StoreError> {
        let key = ServerKey::load_or_create(
            &key_file.map_or_else(|| dir.join(KEY_FILE), Path::to_path_buf),
        )?;
        let path = dir.join(DATABASE);
        let open = || -> rusqlite::Result<(Connection, State, replica::Schema)> {
            let connection = Connection::open(&path)?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.busy_timeout(Duration::from_secs(5))?;
            connection.execute_batch(SCHEMA)?;
            // Alone, changes are not queued for other nodes; in a cluster
            // `replicate` installs the triggers again.
            let schema = replica::Schema::read(&connection)?;
            connection.execute_batch(&schema.drop_triggers())?;
            tokens::sweep_expired(&connection, chrono::Utc::now().timestamp_millis())?;
            let state = State::load(&connection, &key, None, Parts::ALL)?;
            Ok((connection, state, schema))
        };
        let (connection, state, schema) = open().map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(DeviceStore {
            path,
            db: Arc::new(Mutex::new(connection)),
            state: Arc::new(RwLock::new(state)),
            key: Arc::new(key),
            schema: Arc::new(schema),
            replication: std::sync::OnceLock::new(),
        })
    }

    /// The server key's fingerprint ([`ServerKey::fingerprint`]).
    pub fn key_fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `change` in one transaction on the blocking pool and, once it
    /// is committed, `apply` to the in-memory state, both under the
    /// database lock (so memory follows the database's order of changes).
    /// `apply` may take what `change` prepared for it out of the result
    /// (work done outside the state lock, which CONNECTs read).
    async fn write<T, C, A>(&self, change: C, apply: A) -> Result<T, StoreError>
    where
        T: Send + 'static,
        C: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
        A: FnOnce(&mut State, &mut T) + Send + 'static,
    {
        let (db, state) = (self.db.clone(), self.state.clone());
        let replication = self.replication.get().cloned();
        let queued = replication.is_some();
        let (result, last_queued) = tokio::task::spawn_blocking(move || {
            let mut connection = db.lock().unwrap_or_else(|e| e.into_inner());
            let transaction = connection.transaction()?;
            let mut result = change(&transaction)?;
            let last_queued = if queued {
                replica::last_queued(&transaction)?
            } else {
                0
            };
            transaction.commit()?;
            apply(
                &mut state.write().unwrap_or_else(|e| e.into_inner()),
                &mut result,
            );
            Ok::<_, StoreError>((result, last_queued))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        if let Some(replication) = replication {
            replication.shipped(last_queued).await;
        }
        Ok(result)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}
