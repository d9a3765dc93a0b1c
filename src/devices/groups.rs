//! Group ids: created on an instance before its devices use them. A client
//! id is `{GroupId}@@@{DeviceId}`.

use super::{DeviceStore, State, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};

/// A group id of an instance; times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub group_id: String,
    pub create_time: i64,
    pub update_time: i64,
}

/// What is wrong with a group id, as Alibaba's rules state them: it starts
/// with `GID_` or `GID-`, is 7 to 64 characters long, and holds only
/// letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupIdError {
    #[error("it must start with GID_ or GID-")]
    Prefix,
    #[error("it is {0} characters long; a group id has 7 to 64")]
    Length(usize),
    #[error("it contains '{0}'; use letters, digits, '-' and '_'")]
    Character(char),
}

pub fn check_group_id(group_id: &str) -> Result<(), GroupIdError> {
    if !(group_id.starts_with("GID_") || group_id.starts_with("GID-")) {
        return Err(GroupIdError::Prefix);
    }
    let length = group_id.chars().count();
    if !(7..=64).contains(&length) {
        return Err(GroupIdError::Length(length));
    }
    if let Some(bad) = group_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(GroupIdError::Character(bad));
    }
    Ok(())
}

/// The group id of a client id (`GID_x@@@device` -> `GID_x`), if it has one.
pub fn group_of(client_id: &str) -> Option<&str> {
    client_id
        .split_once("@@@")
        .map(|(group, _)| group)
        .filter(|group| !group.is_empty())
}

pub(super) fn load(
    connection: &Connection,
    only: Option<&str>,
) -> rusqlite::Result<HashMap<String, BTreeMap<String, Group>>> {
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, group_id, create_time, update_time FROM group_ids",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok((
            row.get::<_, String>(0)?,
            Group {
                group_id: row.get(1)?,
                create_time: row.get(2)?,
                update_time: row.get(3)?,
            },
        ))
    })?;
    let mut groups: HashMap<String, BTreeMap<String, Group>> = HashMap::new();
    for row in rows {
        let (instance_id, group) = row?;
        groups
            .entry(instance_id)
            .or_default()
            .insert(group.group_id.clone(), group);
    }
    Ok(groups)
}

/// The outcome of creating a group id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(Group),
    AlreadyExists,
    /// The instance holds its limit of group ids already.
    LimitReached,
}

impl DeviceStore {
    /// Creates a group id on an instance (durable before this returns),
    /// unless the instance holds `limit` group ids already.
    pub async fn create_group(
        &self,
        instance_id: &str,
        group_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Created, StoreError> {
        let (instance, group) = (instance_id.to_string(), group_id.to_string());
        let key = (instance.clone(), group.clone());
        self.write(
            move |tx| {
                let exists: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM group_ids WHERE instance_id = ?1 AND group_id = ?2",
                        params![instance, group],
                        |row| row.get(0),
                    )
                    .optional()?;
                if exists.is_some() {
                    return Ok(Created::AlreadyExists);
                }
                // Counted in the transaction: concurrent calls cannot
                // overrun the limit.
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM group_ids WHERE instance_id = ?1",
                    params![instance],
                    |row| row.get(0),
                )?;
                if count as usize >= limit {
                    return Ok(Created::LimitReached);
                }
                tx.execute(
                    "INSERT INTO group_ids (instance_id, group_id, create_time, update_time) VALUES (?1, ?2, ?3, ?3)",
                    params![instance, group, now_ms],
                )?;
                Ok(Created::New(Group {
                    group_id: group,
                    create_time: now_ms,
                    update_time: now_ms,
                }))
            },
            move |state: &mut State, created: &mut Created| {
                if let Created::New(group) = created {
                    state
                        .groups
                        .entry(key.0)
                        .or_default()
                        .insert(key.1, group.clone());
                }
            },
        )
        .await
    }

    /// Deletes a group id; `false` if the instance had no such group.
    pub async fn delete_group(
        &self,
        instance_id: &str,
        group_id: &str,
    ) -> Result<bool, StoreError> {
        let (instance, group) = (instance_id.to_string(), group_id.to_string());
        let key = (instance.clone(), group.clone());
        self.write(
            move |tx| {
                let deleted = tx.execute(
                    "DELETE FROM group_ids WHERE instance_id = ?1 AND group_id = ?2",
                    params![instance, group],
                )?;
                Ok(deleted > 0)
            },
            move |state: &mut State, deleted: &mut bool| {
                if *deleted && let Some(groups) = state.groups.get_mut(&key.0) {
                    groups.remove(&key.1);
                }
            },
        )
        .await
    }

    /// The instance's group ids, sorted by id.
    pub fn groups(&self, instance_id: &str) -> Vec<Group> {
        self.read()
            .groups
            .get(instance_id)
            .map(|groups| groups.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the instance has this group id.
    pub fn has_group(&self, instance_id: &str, group_id: &str) -> bool {
        self.read()
            .groups
            .get(instance_id)
            .is_some_and(|groups| groups.contains_key(group_id))
    }

    /// How many group ids the instance has.
    pub fn group_count(&self, instance_id: &str) -> usize {
        self.read().groups.get(instance_id).map_or(0, BTreeMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_follow_alibabas_rules() {
        for good in ["GID_test", "GID-a-b_c", &format!("GID_{}", "x".repeat(60))] {
            assert_eq!(check_group_id(good), Ok(()), "{good}");
        }
        assert_eq!(check_group_id("gid_test"), Err(GroupIdError::Prefix));
        assert_eq!(check_group_id("GID_ab"), Err(GroupIdError::Length(6)));
        assert_eq!(
            check_group_id(&format!("GID_{}", "x".repeat(61))),
            Err(GroupIdError::Length(65))
        );
        assert_eq!(
            check_group_id("GID_a.bc"),
            Err(GroupIdError::Character('.'))
        );
        assert_eq!(group_of("GID_a@@@dev-1"), Some("GID_a"));
        assert_eq!(group_of("GID_a@@@"), Some("GID_a"));
        assert_eq!(group_of("@@@dev"), None);
        assert_eq!(group_of("plain"), None);
    }

    #[tokio::test]
    async fn groups_are_durable_and_per_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(dir.path(), None).unwrap();
        assert!(matches!(
            store.create_group("i1", "GID_a", 1000, 10).await.unwrap(),
            Created::New(_)
        ));
        assert_eq!(
            store.create_group("i1", "GID_a", 2000, 10).await.unwrap(),
            Created::AlreadyExists
        );
        // Instances are separate namespaces.
        assert!(matches!(
            store.create_group("i2", "GID_a", 3000, 10).await.unwrap(),
            Created::New(_)
        ));
        store.create_group("i1", "GID_b", 4000, 10).await.unwrap();
        assert_eq!(
            store.create_group("i1", "GID_c", 5000, 2).await.unwrap(),
            Created::LimitReached
        );
        assert!(store.delete_group("i1", "GID_b").await.unwrap());
        assert!(!store.delete_group("i1", "GID_b").await.unwrap());
        drop(store);
        let reopened = DeviceStore::open(dir.path(), None).unwrap();
        let groups = reopened.groups("i1");
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].group_id.as_str(), groups[0].create_time),
            ("GID_a", 1000)
        );
        assert!(reopened.has_group("i2", "GID_a"));
        assert!(!reopened.has_group("i2", "GID_b"));
    }
}
