//! The connection blacklist of custom authentication
//! (AddCustomAuthConnectBlack and its kin): client ids an instance refuses
//! at CONNECT, whatever their login mode.

use super::{DeviceStore, State, StoreError};
use rusqlite::{Connection, params};
use std::collections::{BTreeSet, HashMap};

pub(super) fn load(
    connection: &Connection,
    only: Option<&str>,
) -> rusqlite::Result<HashMap<String, BTreeSet<String>>> {
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, client_id FROM connect_blacklist",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut blacklist: HashMap<String, BTreeSet<String>> = HashMap::new();
    for row in rows {
        let (instance_id, client_id) = row?;
        blacklist.entry(instance_id).or_default().insert(client_id);
    }
    Ok(blacklist)
}

/// The outcome of blacklisting a client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blacklisted {
    /// Now on the list (or it already was).
    Listed,
    /// The instance's list holds its limit already.
    LimitReached,
}

impl DeviceStore {
    /// Puts a client id on an instance's blacklist (durable before this
    /// returns), unless the list holds `limit` client ids already.
    pub async fn blacklist(
        &self,
        instance_id: &str,
        client_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Blacklisted, StoreError> {
        if self.is_blacklisted(instance_id, client_id) {
            return Ok(Blacklisted::Listed);
        }
        let (instance, client) = (instance_id.to_string(), client_id.to_string());
        let key = (instance.clone(), client.clone());
        self.write(
            move |tx| {
                // Counted in the transaction: concurrent calls cannot
                // overrun the limit.
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM connect_blacklist WHERE instance_id = ?1",
                    params![instance],
                    |row| row.get(0),
                )?;
                if count as usize >= limit {
                    return Ok(Blacklisted::LimitReached);
                }
                tx.execute(
                    "INSERT OR IGNORE INTO connect_blacklist (instance_id, client_id, create_time) VALUES (?1, ?2, ?3)",
                    params![instance, client, now_ms],
                )?;
                Ok(Blacklisted::Listed)
            },
            move |state: &mut State, outcome: &mut Blacklisted| {
                if *outcome == Blacklisted::Listed {
                    state.blacklist.entry(key.0).or_default().insert(key.1);
                }
            },
        )
        .await
    }

    /// Takes a client id off an instance's blacklist; `false` if it was not
    /// on it.
    pub async fn unblacklist(
        &self,
        instance_id: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let (instance, client) = (instance_id.to_string(), client_id.to_string());
        let key = (instance.clone(), client.clone());
        self.write(
            move |tx| {
                let deleted = tx.execute(
                    "DELETE FROM connect_blacklist WHERE instance_id = ?1 AND client_id = ?2",
                    params![instance, client],
                )?;
                Ok(deleted > 0)
            },
            move |state: &mut State, deleted: &mut bool| {
                if *deleted && let Some(list) = state.blacklist.get_mut(&key.0) {
                    list.remove(&key.1);
                }
            },
        )
        .await
    }

    /// Whether an instance refuses this client id.
    pub fn is_blacklisted(&self, instance_id: &str, client_id: &str) -> bool {
        self.read()
            .blacklist
            .get(instance_id)
            .is_some_and(|list| list.contains(client_id))
    }

    /// Up to `size` blacklisted client ids of an instance after `after`
    /// (sorted), and whether more follow.
    pub fn blacklisted(
        &self,
        instance_id: &str,
        after: Option<&str>,
        size: usize,
    ) -> (Vec<String>, bool) {
        let state = self.read();
        let Some(list) = state.blacklist.get(instance_id) else {
            return (Vec::new(), false);
        };
        let mut ids = match after {
            Some(after) => {
                list.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            None => list.range::<str, _>(..),
        };
        let page: Vec<String> = ids.by_ref().take(size).cloned().collect();
        (page, ids.next().is_some())
    }
}
