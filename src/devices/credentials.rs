//! Device credentials: one DeviceAccessKeyId and secret per client id of
//! an instance, for the `DeviceCredential|{DeviceAccessKeyId}|{InstanceId}`
//! login. The secret is derived, not stored (see [`super::keys`]).

use super::{DeviceStore, State, StoreError};
use crate::secret::Secret;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};

/// A device credential; times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub instance_id: String,
    pub client_id: String,
    pub access_key_id: String,
    /// Bumped by each refresh: the secret is derived from it.
    pub generation: u32,
    pub create_time: i64,
    pub update_time: i64,
}

/// Credentials in memory: by instance and client id, and by key id.
#[derive(Debug, Default)]
pub(super) struct Credentials {
    by_client: HashMap<String, BTreeMap<String, Credential>>,
    by_key: HashMap<String, (String, String)>,
}

impl Credentials {
    fn insert(&mut self, credential: Credential) {
        let by_client = self
            .by_client
            .entry(credential.instance_id.clone())
            .or_default();
        if let Some(old) = by_client.get(&credential.client_id) {
            self.by_key.remove(&old.access_key_id);
        }
        self.by_key.insert(
            credential.access_key_id.clone(),
            (credential.instance_id.clone(), credential.client_id.clone()),
        );
        by_client.insert(credential.client_id.clone(), credential);
    }

    fn remove(&mut self, instance_id: &str, client_id: &str) {
        if let Some(old) = self
            .by_client
            .get_mut(instance_id)
            .and_then(|by_client| by_client.remove(client_id))
        {
            self.by_key.remove(&old.access_key_id);
        }
    }

    /// Replaces one instance's credentials by `fresh`'s.
    pub(super) fn replace_instance(&mut self, instance_id: &str, fresh: &mut Credentials) {
        if let Some(old) = self.by_client.remove(instance_id) {
            for credential in old.values() {
                self.by_key.remove(&credential.access_key_id);
            }
        }
        for (_, credential) in fresh.by_client.remove(instance_id).unwrap_or_default() {
            self.insert(credential);
        }
    }

    /// One row from another node: `image` (the row as a JSON object) set,
    /// or `None`: the credential of `client_id` removed.
    pub(super) fn apply_row(
        &mut self,
        instance_id: &str,
        client_id: &str,
        image: Option<&serde_json::Value>,
    ) {
        let Some(image) = image else {
            self.remove(instance_id, client_id);
            return;
        };
        let text = |name: &str| image.get(name)?.as_str().map(str::to_string);
        let number = |name: &str| image.get(name)?.as_i64();
        let credential = (|| {
            Some(Credential {
                instance_id: text("instance_id")?,
                client_id: text("client_id")?,
                access_key_id: text("access_key_id")?,
                generation: u32::try_from(number("generation")?).ok()?,
                create_time: number("create_time")?,
                update_time: number("update_time")?,
            })
        })();
        if let Some(credential) = credential {
            self.insert(credential);
        }
    }

    pub(super) fn instances(&self) -> impl Iterator<Item = &String> {
        self.by_client.keys()
    }

    fn get(&self, instance_id: &str, client_id: &str) -> Option<&Credential> {
        self.by_client.get(instance_id)?.get(client_id)
    }
}

pub(super) fn load(connection: &Connection, only: Option<&str>) -> rusqlite::Result<Credentials> {
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, client_id, access_key_id, generation, create_time, update_time FROM device_credentials",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok(Credential {
            instance_id: row.get(0)?,
            client_id: row.get(1)?,
            access_key_id: row.get(2)?,
            generation: row.get(3)?,
            create_time: row.get(4)?,
            update_time: row.get(5)?,
        })
    })?;
    let mut credentials = Credentials::default();
    for row in rows {
        credentials.insert(row?);
    }
    Ok(credentials)
}

/// The outcome of registering a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new credential (replacing the client id's previous one, if any).
    New(Credential),
    /// The instance holds its limit of credentials already.
    LimitReached,
}

impl DeviceStore {
    /// Issues a credential for a client id, replacing the one it had (as
    /// Alibaba documents: the latest registration prevails), unless the
    /// instance holds `limit` credentials already.
    pub async fn register_credential(
        &self,
        instance_id: &str,
        client_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Registered, StoreError> {
        let access_key_id =
            super::keys::random_id("DC.", 22).map_err(|e| StoreError::Task(e.to_string()))?;
        let credential = Credential {
            instance_id: instance_id.to_string(),
            client_id: client_id.to_string(),
            access_key_id,
            generation: 0,
            create_time: now_ms,
            update_time: now_ms,
        };
        self.write(
            move |tx| {
                let exists: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM device_credentials WHERE instance_id = ?1 AND client_id = ?2",
                        params![credential.instance_id, credential.client_id],
                        |row| row.get(0),
                    )
                    .optional()?;
                if exists.is_none() {
                    let count: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM device_credentials WHERE instance_id = ?1",
                        params![credential.instance_id],
                        |row| row.get(0),
                    )?;
                    if count as usize >= limit {
                        return Ok(Registered::LimitReached);
                    }
                }
                tx.execute(
                    "INSERT OR REPLACE INTO device_credentials
                     (instance_id, client_id, access_key_id, generation, create_time, update_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        credential.instance_id,
                        credential.client_id,
                        credential.access_key_id,
                        credential.generation,
                        credential.create_time,
                        credential.update_time
                    ],
                )?;
                Ok(Registered::New(credential))
            },
            |state: &mut State, registered: &mut Registered| {
                if let Registered::New(credential) = registered {
                    state.credentials.insert(credential.clone());
                }
            },
        )
        .await
    }

    /// Gives a client id's credential a new secret (its DeviceAccessKeyId
    /// stays); `None` if it has no credential.
    pub async fn refresh_credential(
        &self,
        instance_id: &str,
        client_id: &str,
        now_ms: i64,
    ) -> Result<Option<Credential>, StoreError> {
        let Some(mut credential) = self.credential(instance_id, client_id) else {
            return Ok(None);
        };
        credential.generation = credential.generation.wrapping_add(1);
        credential.update_time = now_ms;
        self.write(
            move |tx| {
                // Keyed on the DeviceAccessKeyId too: a registration that
                // replaced the credential meanwhile is not refreshed.
                let updated = tx.execute(
                    "UPDATE device_credentials SET generation = ?1, update_time = ?2
                     WHERE instance_id = ?3 AND client_id = ?4 AND access_key_id = ?5",
                    params![
                        credential.generation,
                        credential.update_time,
                        credential.instance_id,
                        credential.client_id,
                        credential.access_key_id
                    ],
                )?;
                Ok((updated > 0).then_some(credential))
            },
            |state: &mut State, refreshed: &mut Option<Credential>| {
                if let Some(credential) = refreshed {
                    state.credentials.insert(credential.clone());
                }
            },
        )
        .await
    }

    /// Removes a client id's credential; `false` if it had none.
    pub async fn unregister_credential(
        &self,
        instance_id: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let (instance, client) = (instance_id.to_string(), client_id.to_string());
        let key = (instance.clone(), client.clone());
        self.write(
            move |tx| {
                let deleted = tx.execute(
                    "DELETE FROM device_credentials WHERE instance_id = ?1 AND client_id = ?2",
                    params![instance, client],
                )?;
                Ok(deleted > 0)
            },
            move |state: &mut State, deleted: &mut bool| {
                if *deleted {
                    state.credentials.remove(&key.0, &key.1);
                }
            },
        )
        .await
    }

    /// A client id's credential.
    pub fn credential(&self, instance_id: &str, client_id: &str) -> Option<Credential> {
        self.read().credentials.get(instance_id, client_id).cloned()
    }

    /// The credential with this DeviceAccessKeyId.
    pub fn credential_by_key(&self, access_key_id: &str) -> Option<Credential> {
        let state = self.read();
        let (instance, client) = state.credentials.by_key.get(access_key_id)?;
        state.credentials.get(instance, client).cloned()
    }

    /// The client ids of a group that have a credential, sorted.
    pub fn credential_client_ids(&self, instance_id: &str, group_id: &str) -> Vec<String> {
        let prefix = format!("{group_id}@@@");
        self.read()
            .credentials
            .by_client
            .get(instance_id)
            .map(|by_client| {
                by_client
                    .range(prefix.clone()..)
                    .take_while(|(client, _)| client.starts_with(&prefix))
                    .map(|(client, _)| client.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A credential's secret.
    pub fn credential_secret(&self, credential: &Credential) -> Secret {
        self.key.device_secret(
            &credential.instance_id,
            &credential.client_id,
            &credential.access_key_id,
            credential.generation,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_are_durable_replaced_refreshed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(dir.path(), None).unwrap();
        let Registered::New(first) = store
            .register_credential("i", "GID_a@@@d1", 1000, 10)
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        let first_secret = store.credential_secret(&first);
        assert!(first.access_key_id.starts_with("DC."));
        assert_eq!(
            store.credential_by_key(&first.access_key_id),
            Some(first.clone())
        );
        // Registered again: a new credential, the old key gone.
        let Registered::New(second) = store
            .register_credential("i", "GID_a@@@d1", 2000, 10)
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        assert_ne!(second.access_key_id, first.access_key_id);
        assert_eq!(store.credential_by_key(&first.access_key_id), None);
        assert_ne!(
            store.credential_secret(&second).expose(),
            first_secret.expose()
        );
        // Refreshed: same key id, new secret, same creation time.
        let refreshed = store
            .refresh_credential("i", "GID_a@@@d1", 3000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refreshed.access_key_id, second.access_key_id);
        assert_eq!((refreshed.create_time, refreshed.update_time), (2000, 3000));
        assert_ne!(
            store.credential_secret(&refreshed).expose(),
            store.credential_secret(&second).expose()
        );
        store
            .register_credential("i", "GID_a@@@d2", 4000, 10)
            .await
            .unwrap();
        store
            .register_credential("i", "GID_b@@@d3", 4000, 10)
            .await
            .unwrap();
        assert_eq!(
            store
                .register_credential("i", "GID_b@@@d4", 4000, 3)
                .await
                .unwrap(),
            Registered::LimitReached
        );
        assert_eq!(
            store.credential_client_ids("i", "GID_a"),
            ["GID_a@@@d1", "GID_a@@@d2"]
        );
        assert!(
            store
                .unregister_credential("i", "GID_a@@@d2")
                .await
                .unwrap()
        );
        assert!(
            !store
                .unregister_credential("i", "GID_a@@@d2")
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .refresh_credential("i", "GID_a@@@d2", 5000)
                .await
                .unwrap(),
            None
        );

        // What was answered is what a restart finds, secrets included.
        let expected = store.credential("i", "GID_a@@@d1").unwrap();
        let expected_secret = store.credential_secret(&expected);
        drop(store);
        let reopened = DeviceStore::open(dir.path(), None).unwrap();
        let found = reopened.credential("i", "GID_a@@@d1").unwrap();
        assert_eq!(found, expected);
        assert_eq!(
            reopened.credential_secret(&found).expose(),
            expected_secret.expose()
        );
        assert_eq!(reopened.credential_client_ids("i", "GID_a"), ["GID_a@@@d1"]);
        // The database (and its write-ahead log) holds no secret.
        for file in ["devices.sqlite3", "devices.sqlite3-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&expected_secret.expose()[3..]), "{file}");
        }
    }
}
