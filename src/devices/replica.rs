//! The device-side state as rows that nodes exchange: what a cluster
//! needs from the store (`cluster::devices` moves the rows through Redis).
//!
//! # How a change travels
//! - **Queued in its own transaction.** In a cluster, SQLite triggers on
//!   every replicated table write each changed row into `device_outbox`:
//!   the row's name (`table` + U+001F + its primary key as a JSON array)
//!   and its whole image as a JSON object (blobs in hex), or no image when
//!   it was deleted. The queue commits with the change, so a change
//!   committed is a change that will be shipped, across a SIGKILL too.
//!   The write methods of the store are not touched by this: whatever SQL
//!   they run, the triggers see its rows.
//! - **Shipped before the answer.** A write's call waits until the queue
//!   holds nothing of it unshipped, at most the cluster's timeout (then the
//!   change is committed here and shipped when Redis answers again).
//! - **Applied everywhere in one order**, this node included: a row image
//!   is written when it differs from the row held (`INSERT OR REPLACE`),
//!   a deletion deletes. The triggers' queue entries of an applied change
//!   are dropped in its own transaction (a change from the log is not
//!   shipped again). Since every node applies every image in the log's
//!   order, the last image of a row in the log is the row on every node,
//!   whatever the order of changes made concurrently through two nodes.
//! - **Memory follows**: a token's or credential's row is applied to
//!   memory from its image; the other parts of state an applied change
//!   touched are reloaded for its instance from the database, keeping the
//!   handles connections hold (see `State::replace_instance`).

use super::{DeviceStore, Parts, State, StoreError};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use std::collections::BTreeMap;
use std::time::Duration;

/// The tables whose rows every node of a cluster holds.
pub const REPLICATED: [&str; 8] = [
    "group_ids",
    "device_credentials",
    "tokens",
    "custom_auth_identities",
    "custom_auth_permissions",
    "connect_blacklist",
    "instance_tags",
    "instances_seen",
];

/// Separates a row's table from its key in [`RowChange::field`].
pub const FIELD_SEPARATOR: char = '\u{1f}';

/// One row's change, as nodes exchange it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowChange {
    pub instance_id: String,
    /// The row's name: its table, [`FIELD_SEPARATOR`], its primary key as
    /// a JSON array.
    pub field: String,
    /// The whole row, a JSON object (blobs in hex); `None`: deleted.
    pub row: Option<String>,
}

impl std::fmt::Debug for RowChange {
    // A row may hold a sealed secret or a token's hash: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.field.split(FIELD_SEPARATOR).next().unwrap_or("");
        f.debug_struct("RowChange")
            .field("instance_id", &self.instance_id)
            .field("table", &table)
            .field("deleted", &self.row.is_none())
            .finish_non_exhaustive()
    }
}

/// A row an applied change altered here.
#[derive(Clone, PartialEq, Eq)]
pub struct Touched {
    pub instance_id: String,
    pub table: &'static str,
    /// The row's primary key, in the table's order.
    pub key: Vec<serde_json::Value>,
    pub deleted: bool,
    /// The row's new image (a JSON object), unless it was deleted.
    pub row: Option<String>,
    /// The image it replaced, if the row was held (of a row set).
    pub previous: Option<String>,
}

impl std::fmt::Debug for Touched {
    // The image may hold a sealed secret or a token's hash: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Touched")
            .field("instance_id", &self.instance_id)
            .field("table", &self.table)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

impl Touched {
    /// A column of the row's new image.
    pub fn column(&self, column: &str) -> Option<serde_json::Value> {
        column_of(self.row.as_deref()?, column)
    }

    /// A column of the image the row replaced.
    pub fn previous_column(&self, column: &str) -> Option<serde_json::Value> {
        column_of(self.previous.as_deref()?, column)
    }

    /// The key's column `index` as text (a client id, ...).
    pub fn key_text(&self, index: usize) -> Option<&str> {
        self.key.get(index)?.as_str()
    }
}

fn column_of(image: &str, column: &str) -> Option<serde_json::Value> {
    let mut image: serde_json::Map<String, serde_json::Value> = serde_json::from_str(image).ok()?;
    image.remove(column)
}

/// Where this node stands in the cluster's log of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaMark {
    /// The cluster store's generation this node's copy belongs to (a new
    /// one when Redis lost the store and a node seeded it again).
    pub epoch: Option<String>,
    /// The last log entry applied here.
    pub applied: Option<String>,
}

/// The link between the store's writes and the task that ships them.
#[derive(Debug)]
pub struct Replication {
    /// Told of every write that queued rows.
    pub wake: tokio::sync::Notify,
    /// The last queue entry shipped.
    pub shipped: tokio::sync::watch::Sender<i64>,
    /// How long a write's call waits for its rows to be shipped.
    pub wait: Duration,
}

impl Replication {
    /// Waits (at most `wait`) until every queue entry up to `last` is
    /// shipped.
    pub(super) async fn shipped(&self, last: i64) {
        if last <= *self.shipped.borrow() {
            return;
        }
        self.wake.notify_one();
        let mut shipped = self.shipped.subscribe();
        let waited = tokio::time::timeout(self.wait, shipped.wait_for(|at| *at >= last)).await;
        if waited.is_err() {
            tracing::warn!(
                waited_ms = self.wait.as_millis() as u64,
                "a device-state change is committed here but not yet shipped to the cluster; it will be when Redis answers"
            );
        }
    }
}

/// The last entry of the queue (0: empty), read in a write's transaction.
pub(super) fn last_queued(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM device_outbox",
        [],
        |row| row.get(0),
    )
}

#[derive(Debug)]
struct Column {
    name: String,
    blob: bool,
}

#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: Vec<Column>,
    /// Indexes into `columns`, in primary-key order.
    key: Vec<usize>,
}

/// The replicated tables' columns, read from the database.
#[derive(Debug)]
pub struct Schema {
    tables: Vec<Table>,
}

/// `column` of row `side` (`NEW`, `OLD`, or "" for the table's own).
fn column_sql(side: &str, column: &Column) -> String {
    let name = if side.is_empty() {
        column.name.clone()
    } else {
        format!("{side}.{}", column.name)
    };
    if column.blob {
        format!("hex({name})")
    } else {
        name
    }
}

impl Table {
    fn field_sql(&self, side: &str) -> String {
        let key: Vec<String> = self
            .key
            .iter()
            .map(|&i| column_sql(side, &self.columns[i]))
            .collect();
        format!(
            "'{}' || char(31) || json_array({})",
            self.name,
            key.join(", ")
        )
    }

    fn row_sql(&self, side: &str) -> String {
        let pairs: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("'{}', {}", c.name, column_sql(side, c)))
            .collect();
        format!("json_object({})", pairs.join(", "))
    }

    fn key_condition(&self) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ?{}", self.columns[i].name, n + 1))
            .collect();
        parts.join(" AND ")
    }

    fn triggers(&self) -> String {
        let t = self.name;
        let queue = "INSERT INTO device_outbox (instance_id, field, row)";
        format!(
            "CREATE TRIGGER IF NOT EXISTS replicate_{t}_insert AFTER INSERT ON {t} BEGIN
               {queue} VALUES (NEW.instance_id, {new_field}, {new_row});
             END;
             CREATE TRIGGER IF NOT EXISTS replicate_{t}_update AFTER UPDATE ON {t} BEGIN
               {queue} SELECT OLD.instance_id, {old_field}, NULL WHERE {old_field} IS NOT {new_field};
               {queue} VALUES (NEW.instance_id, {new_field}, {new_row});
             END;
             CREATE TRIGGER IF NOT EXISTS replicate_{t}_delete AFTER DELETE ON {t} BEGIN
               {queue} VALUES (OLD.instance_id, {old_field}, NULL);
             END;",
            new_field = self.field_sql("NEW"),
            old_field = self.field_sql("OLD"),
            new_row = self.row_sql("NEW"),
        )
    }

    /// The key's values as SQL parameters, from the row's name.
    fn key_values(&self, key: &[serde_json::Value]) -> Result<Vec<SqlValue>, String> {
        if key.len() != self.key.len() {
            return Err(format!(
                "{}: a key of {} columns, expected {}",
                self.name,
                key.len(),
                self.key.len()
            ));
        }
        self.key
            .iter()
            .zip(key)
            .map(|(&i, value)| sql_value(value, self.columns[i].blob))
            .collect()
    }

    fn row_values(&self, row: &str) -> Result<Vec<SqlValue>, String> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(row)
            .map_err(|e| format!("{}: a row that is not JSON: {e}", self.name))?;
        self.columns
            .iter()
            .map(|c| {
                sql_value(
                    object.get(&c.name).unwrap_or(&serde_json::Value::Null),
                    c.blob,
                )
            })
            .collect()
    }
}

fn sql_value(value: &serde_json::Value, blob: bool) -> Result<SqlValue, String> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) if blob => {
            SqlValue::Blob(hex::decode(s).map_err(|e| format!("a blob that is not hex: {e}"))?)
        }
        Value::String(s) => SqlValue::Text(s.clone()),
        other => return Err(format!("a value of unexpected type: {other}")),
    })
}

impl Schema {
    /// Reads the replicated tables' columns (`PRAGMA table_info`).
    pub(super) fn read(connection: &Connection) -> rusqlite::Result<Schema> {
        let mut tables = Vec::new();
        for name in REPLICATED {
            let mut statement = connection.prepare(&format!("PRAGMA table_info({name})"))?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(5)?,
                ))
            })?;
            let mut columns = Vec::new();
            let mut key = Vec::new();
            for row in rows {
                let (column, kind, pk) = row?;
                if pk > 0 {
                    key.push((pk, columns.len()));
                }
                columns.push(Column {
                    name: column,
                    blob: kind.eq_ignore_ascii_case("BLOB"),
                });
            }
            key.sort();
            tables.push(Table {
                name,
                columns,
                key: key.into_iter().map(|(_, i)| i).collect(),
            });
        }
        Ok(Schema { tables })
    }

    fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    fn triggers(&self) -> String {
        self.tables.iter().map(Table::triggers).collect()
    }

    pub(super) fn drop_triggers(&self) -> String {
        let mut sql = String::new();
        for table in &self.tables {
            for kind in ["insert", "update", "delete"] {
                sql.push_str(&format!(
                    "DROP TRIGGER IF EXISTS replicate_{}_{kind};\n",
                    table.name
                ));
            }
        }
        sql
    }

    /// Splits a row's name into its table and key.
    fn parse_field<'a>(
        &'a self,
        field: &str,
    ) -> Result<(&'a Table, Vec<serde_json::Value>), String> {
        let (name, key) = field
            .split_once(FIELD_SEPARATOR)
            .ok_or_else(|| "a row name without a table".to_string())?;
        let table = self
            .table(name)
            .ok_or_else(|| format!("a row of an unknown table {name:?}"))?;
        let key: Vec<serde_json::Value> = serde_json::from_str(key)
            .map_err(|e| format!("{name}: a key that is not JSON: {e}"))?;
        Ok((table, key))
    }

    /// Applies one change in `tx`; the row it altered, if any.
    fn apply(&self, tx: &Transaction<'_>, change: &RowChange) -> Result<Option<Touched>, String> {
        let (table, key) = self.parse_field(&change.field)?;
        let key_values = table.key_values(&key)?;
        let sql_error = |e: rusqlite::Error| format!("{}: {e}", table.name);
        let mut previous = None;
        let altered = match &change.row {
            None => {
                let sql = format!("DELETE FROM {} WHERE {}", table.name, table.key_condition());
                tx.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(params_from_iter(&key_values)))
                    .map_err(sql_error)?
                    > 0
            }
            Some(row) => {
                let sql = format!(
                    "SELECT {} FROM {} WHERE {}",
                    table.row_sql(""),
                    table.name,
                    table.key_condition()
                );
                let held: Option<String> = tx
                    .prepare_cached(&sql)
                    .and_then(|mut s| {
                        s.query_row(params_from_iter(&key_values), |r| r.get(0))
                            .optional()
                    })
                    .map_err(sql_error)?;
                if held.as_deref() == Some(row.as_str()) {
                    false
                } else {
                    previous = held;
                    let values = table.row_values(row)?;
                    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
                    let marks: Vec<String> = (1..=names.len()).map(|n| format!("?{n}")).collect();
                    let sql = format!(
                        "INSERT OR REPLACE INTO {} ({}) VALUES ({})",
                        table.name,
                        names.join(", "),
                        marks.join(", ")
                    );
                    tx.prepare_cached(&sql)
                        .and_then(|mut s| s.execute(params_from_iter(&values)))
                        .map_err(sql_error)?;
                    true
                }
            }
        };
        Ok(altered.then(|| Touched {
            instance_id: change.instance_id.clone(),
            table: table.name,
            key,
            deleted: change.row.is_none(),
            row: change.row.clone(),
            previous,
        }))
    }
}

fn set_mark(tx: &Transaction<'_>, mark: &ReplicaMark) -> rusqlite::Result<()> {
    for (name, value) in [("epoch", &mark.epoch), ("applied", &mark.applied)] {
        match value {
            Some(value) => tx.execute(
                "INSERT OR REPLACE INTO device_replica (name, value) VALUES (?1, ?2)",
                params![name, value],
            )?,
            None => tx.execute("DELETE FROM device_replica WHERE name = ?1", params![name])?,
        };
    }
    Ok(())
}

/// Runs `write` (rows from the cluster) in one transaction that drops
/// what the triggers queued meanwhile (it is the cluster's already) and
/// records `mark`, so that the rows and the log position commit together.
fn from_the_cluster<T>(
    connection: &mut Connection,
    mark: &ReplicaMark,
    write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = connection.transaction()?;
    let queued_before = last_queued(&tx)?;
    let written = write(&tx)?;
    tx.execute(
        "DELETE FROM device_outbox WHERE seq > ?1",
        params![queued_before],
    )?;
    set_mark(&tx, mark)?;
    tx.commit()?;
    Ok(written)
}

/// Memory follows applied rows: tokens and credentials (an instance may
/// hold 100,000s, and each is one row) row by row from their images; the
/// other parts reloaded from the database for each instance they reached.
fn reload(
    connection: &Connection,
    key: &super::ServerKey,
    state: &std::sync::RwLock<State>,
    touched: &[Touched],
) -> rusqlite::Result<()> {
    let mut reached: BTreeMap<String, Parts> = BTreeMap::new();
    let mut row_by_row = Vec::new();
    for row in touched {
        match row.table {
            "tokens" | "device_credentials" => {
                let image = row
                    .row
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok());
                row_by_row.push((row, image));
            }
            table => reached
                .entry(row.instance_id.clone())
                .or_default()
                .add(Parts::of_table(table)),
        }
    }
    reload_parts(connection, key, state, reached)?;
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    for (row, image) in row_by_row {
        match (row.table, row.key_text(0), row.key_text(1)) {
            ("tokens", Some(hash), _) => state.tokens.apply_row(hash, image.as_ref()),
            ("device_credentials", Some(instance), Some(client)) => {
                state
                    .credentials
                    .apply_row(instance, client, image.as_ref())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reloads, for each instance, the parts of its state a change reached.
fn reload_parts(
    connection: &Connection,
    key: &super::ServerKey,
    state: &std::sync::RwLock<State>,
    reached: BTreeMap<String, Parts>,
) -> rusqlite::Result<()> {
    let mut fresh = Vec::with_capacity(reached.len());
    for (instance, parts) in reached {
        // Loaded outside the state lock: CONNECTs read that state.
        let loaded = State::load(connection, key, Some(&instance), parts)?;
        fresh.push((instance, loaded, parts));
    }
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    for (instance, mut loaded, parts) in fresh {
        state.replace_instance(&instance, &mut loaded, parts);
    }
    Ok(())
}

impl DeviceStore {
    /// From now on every change is queued for the cluster (the triggers
    /// installed), and a write's call waits up to `wait` for it to be
    /// shipped. The handle is the shipping task's side of that.
    pub async fn replicate(
        &self,
        wait: Duration,
    ) -> Result<std::sync::Arc<Replication>, StoreError> {
        let replication = std::sync::Arc::new(Replication {
            wake: tokio::sync::Notify::new(),
            shipped: tokio::sync::watch::Sender::new(0),
            wait,
        });
        let triggers = self.schema.triggers();
        self.blocking(move |connection, _, _| Ok(connection.execute_batch(&triggers)?))
            .await?;
        let _ = self.replication.set(replication.clone());
        Ok(replication)
    }

    /// Runs `work` on the blocking pool with the database (under its lock).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(
            &mut Connection,
            &std::sync::RwLock<State>,
            &super::ServerKey,
        ) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let (db, state, key) = (self.db.clone(), self.state.clone(), self.key.clone());
        tokio::task::spawn_blocking(move || {
            let mut connection = db.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection, &state, &key)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Up to `max` queued changes, oldest first, and the last one's number
    /// (0: none queued).
    pub async fn queued(&self, max: usize) -> Result<(i64, Vec<RowChange>), StoreError> {
        self.blocking(move |connection, _, _| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, instance_id, field, row FROM device_outbox ORDER BY seq LIMIT ?1",
            )?;
            let rows = statement.query_map(params![max as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    RowChange {
                        instance_id: row.get(1)?,
                        field: row.get(2)?,
                        row: row.get(3)?,
                    },
                ))
            })?;
            let mut last = 0;
            let mut changes = Vec::new();
            for row in rows {
                let (seq, change) = row?;
                last = seq;
                changes.push(change);
            }
            Ok((last, changes))
        })
        .await
    }

    /// Drops the queued changes up to `last` (they are shipped).
    pub async fn forget_queued(&self, last: i64) -> Result<(), StoreError> {
        self.blocking(move |connection, _, _| {
            connection.execute("DELETE FROM device_outbox WHERE seq <= ?1", params![last])?;
            Ok(())
        })
        .await
    }

    /// Where this node stands in the cluster's log.
    pub async fn replica_mark(&self) -> Result<ReplicaMark, StoreError> {
        self.blocking(|connection, _, _| {
            let get = |name: &str| -> rusqlite::Result<Option<String>> {
                connection
                    .query_row(
                        "SELECT value FROM device_replica WHERE name = ?1",
                        params![name],
                        |row| row.get(0),
                    )
                    .optional()
            };
            Ok(ReplicaMark {
                epoch: get("epoch")?,
                applied: get("applied")?,
            })
        })
        .await
    }

    /// Records where this node stands, with nothing else changed.
    pub async fn set_replica_mark(&self, mark: ReplicaMark) -> Result<(), StoreError> {
        self.blocking(move |connection, _, _| {
            let tx = connection.transaction()?;
            set_mark(&tx, &mark)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Applies changes from the cluster's log in order, in one transaction
    /// that also records `mark`; then memory follows. Returns the rows
    /// that changed here (a change this node held already alters nothing).
    /// A change this build cannot read is skipped with a warning, so that
    /// it cannot stop the log.
    pub async fn apply_changes(
        &self,
        changes: Vec<RowChange>,
        mark: ReplicaMark,
    ) -> Result<Vec<Touched>, StoreError> {
        let schema = self.schema.clone();
        self.blocking(move |connection, state, key| {
            let touched = from_the_cluster(connection, &mark, |tx| {
                let mut touched = Vec::new();
                for change in &changes {
                    match schema.apply(tx, change) {
                        Ok(Some(row)) => touched.push(row),
                        Ok(None) => {}
                        Err(why) => {
                            tracing::warn!(%why, instance = %change.instance_id, "a device-state change from the cluster could not be applied; skipped")
                        }
                    }
                }
                Ok(touched)
            })?;
            reload(connection, key, state, &touched)?;
            Ok(touched)
        })
        .await
    }

    /// Replaces every replicated row by `rows` (the cluster's whole state)
    /// and records `mark`; memory follows. Returns how many rows this node
    /// held before and holds now.
    pub async fn replace_all(
        &self,
        rows: Vec<RowChange>,
        mark: ReplicaMark,
    ) -> Result<(usize, usize), StoreError> {
        let schema = self.schema.clone();
        self.blocking(move |connection, state, key| {
            let (before, after) = from_the_cluster(connection, &mark, |tx| {
                let mut before = 0;
                for table in &schema.tables {
                    before += tx.execute(&format!("DELETE FROM {}", table.name), [])?;
                }
                let mut after = 0;
                for row in rows.iter().filter(|r| r.row.is_some()) {
                    match schema.apply(tx, row) {
                        Ok(_) => after += 1,
                        Err(why) => {
                            tracing::warn!(%why, instance = %row.instance_id, "a device-state row from the cluster could not be stored; skipped")
                        }
                    }
                }
                Ok((before, after))
            })?;
            let mut instances = state.read().unwrap_or_else(|e| e.into_inner()).instances();
            instances.extend(rows.iter().map(|r| r.instance_id.clone()));
            let reached = instances.into_iter().map(|i| (i, Parts::ALL)).collect();
            reload_parts(connection, key, state, reached)?;
            Ok((before, after))
        })
        .await
    }

    /// Every replicated row this node holds, as changes that would set it.
    pub async fn snapshot(&self) -> Result<Vec<RowChange>, StoreError> {
        let schema = self.schema.clone();
        self.blocking(move |connection, _, _| {
            let mut rows = Vec::new();
            for table in &schema.tables {
                let sql = format!(
                    "SELECT instance_id, {}, {} FROM {}",
                    table.field_sql(""),
                    table.row_sql(""),
                    table.name
                );
                let mut statement = connection.prepare(&sql)?;
                let found = statement.query_map([], |row| {
                    Ok(RowChange {
                        instance_id: row.get(0)?,
                        field: row.get(1)?,
                        row: Some(row.get(2)?),
                    })
                })?;
                for row in found {
                    rows.push(row?);
                }
            }
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{
        Applied, Effect, Identity, IdentityType, Permission, PermitAction, Rule, SignMode,
        TokenRequest, TokenType,
    };
    use crate::secret::Secret;

    /// Two nodes' stores sharing one server key, as a cluster's must.
    fn two_stores() -> (tempfile::TempDir, DeviceStore, DeviceStore) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("shared.key");
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        let a = DeviceStore::open(&dir.path().join("a"), Some(&key)).unwrap();
        let b = DeviceStore::open(&dir.path().join("b"), Some(&key)).unwrap();
        (dir, a, b)
    }

    /// Ships what `from` queued to `to` (and back to `from`, as the log
    /// does); the rows `to` saw change.
    async fn ship(from: &DeviceStore, to: &DeviceStore) -> Vec<Touched> {
        let (last, changes) = from.queued(10_000).await.unwrap();
        from.forget_queued(last).await.unwrap();
        let touched = to
            .apply_changes(changes.clone(), ReplicaMark::default())
            .await
            .unwrap();
        let own = from
            .apply_changes(changes, ReplicaMark::default())
            .await
            .unwrap();
        assert!(own.is_empty(), "its own changes alter nothing: {own:?}");
        touched
    }

    fn token_request() -> TokenRequest {
        TokenRequest {
            account_id: "acct".into(),
            instance_id: "i1".into(),
            kind: TokenType::from_label("R").unwrap(),
            resources: vec!["t/#".into()],
            expire_time: i64::MAX / 2,
        }
    }

    #[tokio::test]
    async fn every_kind_of_change_reaches_the_other_node() {
        let (_dir, a, b) = two_stores();
        a.replicate(Duration::from_millis(1)).await.unwrap();
        a.create_group("i1", "GID_a", 1, 100).await.unwrap();
        let Applied::New(token, _) = a.apply_token(token_request(), 1, 100).await.unwrap() else {
            panic!("no token");
        };
        a.register_credential("i1", "GID_a@@@d1", 1, 100)
            .await
            .unwrap();
        a.blacklist("i1", "GID_a@@@bad", 1, 100).await.unwrap();
        a.tag_instances(vec!["i1".into()], vec![("k".into(), "v".into())])
            .await
            .unwrap();
        a.add_custom_identity(
            "i1",
            Identity {
                kind: IdentityType::User,
                username: "user1".into(),
                client_id: String::new(),
                sign_mode: SignMode::from_label("ORIGIN").unwrap(),
                secret: Secret::new("s3cret".to_string()),
            },
            1,
            100,
        )
        .await
        .unwrap();
        let rules = b.custom_rules("i1");
        a.add_custom_permission(
            "i1",
            Permission {
                kind: IdentityType::User,
                identity: "user1".into(),
                rule: Rule {
                    topic: "up/#".into(),
                    effect: Effect::Allow,
                    action: PermitAction::Pub,
                },
            },
            1,
            100,
        )
        .await
        .unwrap();

        assert!(b.token(&token).is_none());
        let touched = ship(&a, &b).await;
        assert_eq!(touched.len(), 7, "{touched:?}");
        assert!(b.has_group("i1", "GID_a"));
        assert!(b.token_status("i1", &token, 2));
        let credential = b.credential("i1", "GID_a@@@d1").unwrap();
        assert_eq!(Some(credential.clone()), a.credential("i1", "GID_a@@@d1"));
        // The secret is derived from the shared key: the same on both.
        assert_eq!(
            a.credential_secret(&credential).expose(),
            b.credential_secret(&credential).expose()
        );
        assert!(b.is_blacklisted("i1", "GID_a@@@bad"));
        assert_eq!(b.instance_tags("i1"), vec![("k".into(), "v".into())]);
        let login = b.custom_login("i1", "user1", "c1").unwrap();
        assert_eq!(login.secret.expose(), "s3cret");
        // The handle taken before the change sees the rule.
        assert!(rules.load().publish("user1", "c1", "up/1").allowed());

        // A revocation on a reaches a session holding b's grant.
        let held = b.token(&token).unwrap();
        a.revoke_token("i1", &token).await.unwrap().unwrap();
        let touched = ship(&a, &b).await;
        assert_eq!(touched.len(), 1);
        assert!(touched[0].deleted);
        assert!(held.revoked());
        assert!(!b.token_status("i1", &token, 2));
    }

    #[tokio::test]
    async fn concurrent_changes_converge_in_the_log_order() {
        let (_dir, a, b) = two_stores();
        a.replicate(Duration::from_millis(1)).await.unwrap();
        b.replicate(Duration::from_millis(1)).await.unwrap();
        // The same tag key set on both nodes before either heard of the
        // other's change.
        a.tag_instances(vec!["i1".into()], vec![("k".into(), "from a".into())])
            .await
            .unwrap();
        b.tag_instances(vec!["i1".into()], vec![("k".into(), "from b".into())])
            .await
            .unwrap();
        let (last_a, from_a) = a.queued(100).await.unwrap();
        let (last_b, from_b) = b.queued(100).await.unwrap();
        a.forget_queued(last_a).await.unwrap();
        b.forget_queued(last_b).await.unwrap();
        // The log holds a's change, then b's; both apply it in that order.
        let log: Vec<RowChange> = from_a.into_iter().chain(from_b).collect();
        for store in [&a, &b] {
            store
                .apply_changes(log.clone(), ReplicaMark::default())
                .await
                .unwrap();
        }
        assert_eq!(a.instance_tags("i1"), vec![("k".into(), "from b".into())]);
        assert_eq!(b.instance_tags("i1"), a.instance_tags("i1"));
        // Applying a change queues nothing to ship again.
        assert_eq!(a.queued(100).await.unwrap().1, vec![]);
    }

    #[tokio::test]
    async fn a_snapshot_replaces_a_nodes_whole_state() {
        let (_dir, a, b) = two_stores();
        a.create_group("i1", "GID_a", 1, 100).await.unwrap();
        b.create_group("i2", "GID_b", 1, 100).await.unwrap();
        let Applied::New(token, _) = b.apply_token(token_request(), 1, 100).await.unwrap() else {
            panic!("no token");
        };
        let held = b.token(&token).unwrap();
        let mark = ReplicaMark {
            epoch: Some("e1".into()),
            applied: Some("5-0".into()),
        };
        let (before, after) = b
            .replace_all(a.snapshot().await.unwrap(), mark.clone())
            .await
            .unwrap();
        assert_eq!((before, after), (2, 1));
        assert!(b.has_group("i1", "GID_a"));
        assert!(!b.has_group("i2", "GID_b"));
        assert!(held.revoked(), "a token the cluster does not hold ends");
        assert_eq!(b.replica_mark().await.unwrap(), mark);
    }

    #[test]
    fn a_change_prints_no_row() {
        let change = RowChange {
            instance_id: "i1".into(),
            field: format!("tokens{FIELD_SEPARATOR}[\"ab\"]"),
            row: Some("{\"token_hash\":\"secretish\"}".into()),
        };
        let printed = format!("{change:?}");
        assert!(
            printed.contains("tokens") && !printed.contains("secretish"),
            "{printed}"
        );
    }
}
