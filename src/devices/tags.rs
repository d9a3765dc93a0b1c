//! Instance tags (TagResources, UntagResources, ListTagResources,
//! ListInstances): at most [`MAX_TAGS_PER_INSTANCE`] `key = value` pairs per
//! instance, durable like the rest of the device-side state, and the time
//! mqgate first served each instance (ListInstances' `CreateTime`: an
//! instance of the configuration has no creation time of its own).

use super::{DeviceStore, State, StoreError};
use rusqlite::{Connection, params};
use std::collections::{BTreeMap, HashMap};

/// Alibaba's limit: 20 tags on one resource.
pub const MAX_TAGS_PER_INSTANCE: usize = 20;

/// What the store holds for tags, in memory.
#[derive(Debug, Default)]
pub(super) struct Tags {
    /// instance -> key -> value.
    by_instance: HashMap<String, BTreeMap<String, String>>,
    /// instance -> when mqgate first served it (ms).
    first_seen: HashMap<String, i64>,
}

impl Tags {
    /// Replaces one instance's tags and first-seen time by `fresh`'s.
    pub(super) fn replace_instance(&mut self, instance_id: &str, fresh: &mut Tags) {
        match fresh.by_instance.remove(instance_id) {
            Some(tags) => self.by_instance.insert(instance_id.to_string(), tags),
            None => self.by_instance.remove(instance_id),
        };
        match fresh.first_seen.remove(instance_id) {
            Some(at) => self.first_seen.insert(instance_id.to_string(), at),
            None => self.first_seen.remove(instance_id),
        };
    }

    pub(super) fn instances(&self) -> impl Iterator<Item = &String> {
        self.by_instance.keys().chain(self.first_seen.keys())
    }
}

pub(super) fn load(connection: &Connection, only: Option<&str>) -> rusqlite::Result<Tags> {
    let mut tags = Tags::default();
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, tag_key, tag_value FROM instance_tags",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (instance, key, value) = row?;
        tags.by_instance
            .entry(instance)
            .or_default()
            .insert(key, value);
    }
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, first_seen FROM instances_seen",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (instance, at) = row?;
        tags.first_seen.insert(instance, at);
    }
    Ok(tags)
}

/// Why tags could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tagged {
    Tagged,
    /// The instance would hold more than [`MAX_TAGS_PER_INSTANCE`] tags.
    TooMany {
        instance_id: String,
    },
}

impl DeviceStore {
    /// Sets `tags` on every instance of `instance_ids` (a key an instance
    /// has gets the new value), all or none: none if one instance would
    /// hold more than [`MAX_TAGS_PER_INSTANCE`] tags.
    pub async fn tag_instances(
        &self,
        instance_ids: Vec<String>,
        tags: Vec<(String, String)>,
    ) -> Result<Tagged, StoreError> {
        let (ids, pairs) = (instance_ids.clone(), tags.clone());
        self.write(
            move |tx| {
                // Checked in the transaction, before anything is written:
                // concurrent calls cannot overrun the limit, and a refused
                // call changes nothing.
                for instance in &ids {
                    let mut keys: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
                    let mut statement =
                        tx.prepare_cached("SELECT tag_key FROM instance_tags WHERE instance_id = ?1")?;
                    for key in statement.query_map(params![instance], |row| row.get::<_, String>(0))? {
                        keys.insert(key?);
                    }
                    keys.extend(pairs.iter().map(|(k, _)| k.clone()));
                    if keys.len() > MAX_TAGS_PER_INSTANCE {
                        return Ok(Tagged::TooMany {
                            instance_id: instance.clone(),
                        });
                    }
                }
                for instance in &ids {
                    for (key, value) in &pairs {
                        tx.execute(
                            "INSERT INTO instance_tags (instance_id, tag_key, tag_value) VALUES (?1, ?2, ?3)
                             ON CONFLICT (instance_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                            params![instance, key, value],
                        )?;
                    }
                }
                Ok(Tagged::Tagged)
            },
            move |state: &mut State, outcome: &mut Tagged| {
                if *outcome != Tagged::Tagged {
                    return;
                }
                for instance in instance_ids {
                    let held = state.tags.by_instance.entry(instance).or_default();
                    for (key, value) in &tags {
                        held.insert(key.clone(), value.clone());
                    }
                }
            },
        )
        .await
    }

    /// Removes the tags `keys` (`None`: every tag) from every instance of
    /// `instance_ids`. Keys an instance does not have are ignored.
    pub async fn untag_instances(
        &self,
        instance_ids: Vec<String>,
        keys: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        let (ids, removed) = (instance_ids.clone(), keys.clone());
        self.write(
            move |tx| {
                for instance in &ids {
                    match &removed {
                        None => {
                            tx.execute(
                                "DELETE FROM instance_tags WHERE instance_id = ?1",
                                params![instance],
                            )?;
                        }
                        Some(keys) => {
                            for key in keys {
                                tx.execute(
                                    "DELETE FROM instance_tags WHERE instance_id = ?1 AND tag_key = ?2",
                                    params![instance, key],
                                )?;
                            }
                        }
                    }
                }
                Ok(())
            },
            move |state: &mut State, _: &mut ()| {
                for instance in instance_ids {
                    match &keys {
                        None => {
                            state.tags.by_instance.remove(&instance);
                        }
                        Some(keys) => {
                            if let Some(held) = state.tags.by_instance.get_mut(&instance) {
                                for key in keys {
                                    held.remove(key);
                                }
                            }
                        }
                    }
                }
            },
        )
        .await
    }

    /// An instance's tags, sorted by key.
    pub fn instance_tags(&self, instance_id: &str) -> Vec<(String, String)> {
        self.read()
            .tags
            .by_instance
            .get(instance_id)
            .map(|held| held.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Records, durably, that mqgate serves these instances, keeping the
    /// first time each was seen; returns every instance's first time.
    pub async fn record_instances(
        &self,
        instance_ids: Vec<String>,
        now_ms: i64,
    ) -> Result<HashMap<String, i64>, StoreError> {
        let unseen: Vec<String> = {
            let state = self.read();
            instance_ids
                .iter()
                .filter(|i| !state.tags.first_seen.contains_key(*i))
                .cloned()
                .collect()
        };
        if !unseen.is_empty() {
            let ids = unseen.clone();
            self.write(
                move |tx| {
                    for instance in &ids {
                        tx.execute(
                            "INSERT OR IGNORE INTO instances_seen (instance_id, first_seen) VALUES (?1, ?2)",
                            params![instance, now_ms],
                        )?;
                    }
                    Ok(())
                },
                move |state: &mut State, _: &mut ()| {
                    for instance in unseen {
                        state.tags.first_seen.entry(instance).or_insert(now_ms);
                    }
                },
            )
            .await?;
        }
        let state = self.read();
        Ok(instance_ids
            .into_iter()
            .filter_map(|i| state.tags.first_seen.get(&i).map(|at| (i, *at)))
            .collect())
    }
}
