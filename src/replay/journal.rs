//! What replay protection must remember across a restart, in SQLite
//! (`storage.dir/replay.sqlite3`, WAL, `synchronous=FULL`):
//!
//! * how the previous run ended (`runs`): a run that did not record its
//!   stop may have accepted requests up to the instant it died, so the
//!   next one refuses everything signed before its own next second;
//! * the nonces of requests signed ahead of this server's clock
//!   (`nonces`): a restart's fence cannot cover a timestamp that lies in
//!   the future, so each such nonce is committed before its answer, by a
//!   writer thread that commits whatever has queued in one transaction.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// File name of the replay journal inside `storage.dir`.
pub const DATABASE: &str = "replay.sqlite3";
/// Most nonces one transaction carries.
const MAX_BATCH: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    started_at_ms INTEGER NOT NULL,
    stopped_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS nonces (
    access_key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    forget_after INTEGER NOT NULL,
    PRIMARY KEY (access_key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (forget_after);
";

/// How the previous run on this storage directory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousRun {
    /// None recorded: nothing was ever accepted here.
    None,
    /// It recorded its stop at this instant (unix milliseconds): it
    /// accepted nothing after it.
    Stopped(i64),
    /// It did not record a stop (killed, crashed, or still running): it may
    /// have accepted requests until now.
    Unclean,
}

/// A nonce to remember across restarts.
#[derive(Debug)]
pub struct Entry {
    pub access_key_id: String,
    pub nonce: String,
    pub forget_after: i64,
}

struct Write {
    entry: Entry,
    /// The request's time (unix seconds): rows expired by then go.
    now_secs: i64,
    done: oneshot::Sender<Result<(), String>>,
}

/// The journal: its writer's queue, and the connection that records runs.
pub struct Journal {
    queue: mpsc::Sender<Write>,
    runs: std::sync::Mutex<Connection>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// What opening the journal found.
pub struct Opened {
    pub journal: Journal,
    pub previous: PreviousRun,
    /// Nonces still to be remembered at `now`.
    pub live: Vec<Entry>,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, reads how the last
    /// run ended and the nonces still live at `now_secs`, and records this
    /// run as started (durably, before any request is accepted).
    pub fn open(dir: &Path, now_ms: i64) -> Result<Opened, String> {
        let path = dir.join(DATABASE);
        let describe = |e: rusqlite::Error| format!("{}: {e}", path.display());
        let connection = open_connection(&path).map_err(describe)?;
        let previous = connection
            .query_row("SELECT stopped_at_ms FROM runs WHERE id = 1", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .optional()
            .map_err(describe)?;
        let previous = match previous {
            None => PreviousRun::None,
            Some(Some(stopped)) => PreviousRun::Stopped(stopped),
            Some(None) => PreviousRun::Unclean,
        };
        let now_secs = now_ms.div_euclid(1000);
        connection
            .execute(
                "DELETE FROM nonces WHERE forget_after < ?1",
                params![now_secs],
            )
            .map_err(describe)?;
        let live = {
            let mut statement = connection
                .prepare("SELECT access_key_id, nonce, forget_after FROM nonces")
                .map_err(describe)?;
            statement
                .query_map([], |row| {
                    Ok(Entry {
                        access_key_id: row.get(0)?,
                        nonce: row.get(1)?,
                        forget_after: row.get(2)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(describe)?
        };
        connection
            .execute(
                "INSERT INTO runs (id, started_at_ms, stopped_at_ms) VALUES (1, ?1, NULL)
                 ON CONFLICT (id) DO UPDATE SET started_at_ms = ?1, stopped_at_ms = NULL",
                params![now_ms],
            )
            .map_err(describe)?;
        let writer = open_connection(&path).map_err(describe)?;
        let (queue, receiver) = mpsc::channel(MAX_BATCH);
        std::thread::Builder::new()
            .name("replay-journal".into())
            .spawn(move || write_loop(writer, receiver))
            .map_err(|e| format!("cannot start the replay journal's writer: {e}"))?;
        Ok(Opened {
            journal: Journal {
                queue,
                runs: std::sync::Mutex::new(connection),
            },
            previous,
            live,
        })
    }

    /// Commits `entry`; returns once it is durable.
    pub async fn record(&self, entry: Entry, now_secs: i64) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Write {
                entry,
                now_secs,
                done,
            })
            .await
            .map_err(|_| "the replay journal's writer stopped".to_string())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the replay journal's writer stopped".to_string()))
    }

    /// Records that this run accepts nothing more (a clean stop): the next
    /// run need not wait for a new second.
    pub fn record_stop(&self, now_ms: i64) -> Result<(), String> {
        let connection = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        connection
            .execute(
                "UPDATE runs SET stopped_at_ms = ?1 WHERE id = 1",
                params![now_ms],
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn write_loop(mut connection: Connection, mut queue: mpsc::Receiver<Write>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let now_secs = batch.iter().map(|w| w.now_secs).min().unwrap_or(0);
        let result = write_batch(&mut connection, &batch, now_secs).map_err(|e| e.to_string());
        for write in batch {
            let _ = write.done.send(result.clone());
        }
    }
}

fn write_batch(
    connection: &mut Connection,
    batch: &[Write],
    now_secs: i64,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO nonces (access_key_id, nonce, forget_after) VALUES (?1, ?2, ?3)
             ON CONFLICT (access_key_id, nonce) DO UPDATE SET forget_after = MAX(forget_after, excluded.forget_after)",
        )?;
        for write in batch {
            let e = &write.entry;
            insert.execute(params![e.access_key_id, e.nonce, e.forget_after])?;
        }
        // Expired entries go with the batches that follow them (indexed).
        transaction
            .prepare_cached("DELETE FROM nonces WHERE forget_after < ?1")?
            .execute(params![now_secs])?;
    }
    transaction.commit()
}
