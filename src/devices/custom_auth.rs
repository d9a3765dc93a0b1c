//! Custom authentication: identities (AddCustomAuthIdentity and its kin)
//! and their topic permissions (AddCustomAuthPermission and its kin).
//!
//! - An identity is a username (`USER`: any client id may log in with it)
//!   or a username bound to one client id (`CLIENT`), with a secret and a
//!   sign mode: `ORIGIN` (the CONNECT password is the secret) or `SIGNED`
//!   (the password is Base64(HMAC-SHA1(secret, ClientId))). A login with a
//!   username and client id uses the `CLIENT` identity of that pair if
//!   there is one, else the username's `USER` identity.
//! - Secrets are stored sealed with the server key ([`super::keys`]):
//!   QueryCustomAuthIdentity must give them back, so they cannot be
//!   hashed; a copy of the database alone does not reveal them.
//! - A permission belongs to a username or a client id and a topic filter;
//!   (type, identity, topic) names it, so Update and Delete find it by
//!   those. Permissions do not need an identity row: a `CLIENT` rule binds
//!   that client id whichever identity it logs in with, and deleting an
//!   identity keeps its rules (delete them with DeleteCustomAuthPermission).
//! - Every change is committed before it is answered; the compiled rules
//!   of the instance ([`super::permissions::SharedRules`]) are replaced after the
//!   commit, so a live connection's next PUBLISH or SUBSCRIBE is checked
//!   against them.

use super::permissions::{
    Effect, IdentityRules, IdentityType, InstanceRules, PermitAction, Rule, SharedRules,
};
use super::{DeviceStore, ServerKey, State, StoreError};
use crate::secret::Secret;
use arc_swap::ArcSwap;
use rusqlite::{Connection, params};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// How a custom-auth CONNECT password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMode {
    /// The password is the secret.
    Origin,
    /// The password is Base64(HMAC-SHA1(secret, ClientId)).
    Signed,
}

impl SignMode {
    pub fn label(self) -> &'static str {
        match self {
            SignMode::Origin => "ORIGIN",
            SignMode::Signed => "SIGNED",
        }
    }

    pub fn from_label(label: &str) -> Option<SignMode> {
        match label {
            "ORIGIN" => Some(SignMode::Origin),
            "SIGNED" => Some(SignMode::Signed),
            _ => None,
        }
    }
}

/// (type, username, client id — empty for `USER`): what names an identity,
/// in the order queries page through.
pub type IdentityKey = (IdentityType, String, String);
/// (type, username or client id, topic): what names a permission.
pub type PermissionKey = (IdentityType, String, String);

/// One custom-auth identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub kind: IdentityType,
    pub username: String,
    /// The client id of a `CLIENT` identity; empty for `USER`.
    pub client_id: String,
    pub sign_mode: SignMode,
    pub secret: Secret,
}

impl Identity {
    fn key(&self) -> IdentityKey {
        (self.kind, self.username.clone(), self.client_id.clone())
    }
}

/// One instance's custom-auth state, in memory.
#[derive(Debug)]
pub(super) struct CustomAuth {
    identities: BTreeMap<IdentityKey, Identity>,
    permissions: BTreeMap<PermissionKey, Rule>,
    rules: SharedRules,
}

impl Default for CustomAuth {
    fn default() -> Self {
        CustomAuth {
            identities: BTreeMap::new(),
            permissions: BTreeMap::new(),
            rules: Arc::new(ArcSwap::from_pointee(InstanceRules::default())),
        }
    }
}

impl CustomAuth {
    /// Publishes a new snapshot with one identity's rules replaced by
    /// `compiled` (compiled in the writing transaction, outside the state
    /// lock: compiling 1,000 rules takes about 0.6 ms, and CONNECTs read
    /// that state).
    fn install(&self, kind: IdentityType, identity: &str, compiled: Option<IdentityRules>) {
        let next = self.rules.load().with_identity(kind, identity, compiled);
        self.rules.store(Arc::new(next));
    }
}

/// One identity's rules as the transaction sees them, compiled (`None`: it
/// has none).
fn compile_identity(
    tx: &rusqlite::Transaction<'_>,
    instance_id: &str,
    kind: IdentityType,
    identity: &str,
) -> rusqlite::Result<Option<IdentityRules>> {
    let mut statement = tx.prepare_cached(
        "SELECT topic, effect, permit_action FROM custom_auth_permissions
         WHERE instance_id = ?1 AND identity_type = ?2 AND identity = ?3",
    )?;
    let rows = statement.query_map(params![instance_id, kind.label(), identity], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut rules = Vec::new();
    for row in rows {
        let (topic, effect, action) = row?;
        if let (Some(effect), Some(action)) = (
            Effect::from_label(&effect),
            PermitAction::from_label(&action),
        ) {
            rules.push(Rule {
                topic,
                effect,
                action,
            });
        }
    }
    Ok((!rules.is_empty()).then(|| IdentityRules::compile(&rules)))
}

/// What the store holds for custom auth, across instances.
#[derive(Debug, Default)]
pub(super) struct CustomAuths {
    by_instance: HashMap<String, CustomAuth>,
    /// username -> instances that hold an identity with it (a login on the
    /// shared MQTT port finds its instance here).
    instances_by_username: HashMap<String, BTreeSet<String>>,
}

impl CustomAuths {
    fn index_username(&mut self, instance_id: &str, username: &str) {
        self.instances_by_username
            .entry(username.to_string())
            .or_default()
            .insert(instance_id.to_string());
    }

    /// Replaces one instance's identities and permissions by `fresh`'s,
    /// keeping its [`SharedRules`] (connections hold it) and storing the
    /// fresh snapshot into it.
    pub(super) fn replace_instance(&mut self, instance_id: &str, fresh: &mut CustomAuths) {
        let new = fresh.by_instance.remove(instance_id).unwrap_or_default();
        let auth = self.by_instance.entry(instance_id.to_string()).or_default();
        let old_usernames: BTreeSet<String> =
            auth.identities.keys().map(|(_, u, _)| u.clone()).collect();
        auth.identities = new.identities;
        auth.permissions = new.permissions;
        auth.rules.store(new.rules.load_full());
        let new_usernames: BTreeSet<String> =
            auth.identities.keys().map(|(_, u, _)| u.clone()).collect();
        for username in &old_usernames {
            self.unindex_username(instance_id, username);
        }
        for username in &new_usernames {
            self.index_username(instance_id, username);
        }
    }

    pub(super) fn instances(&self) -> impl Iterator<Item = &String> {
        self.by_instance.keys()
    }

    fn unindex_username(&mut self, instance_id: &str, username: &str) {
        let still_held = self
            .by_instance
            .get(instance_id)
            .is_some_and(|auth| auth.identities.keys().any(|(_, u, _)| u == username));
        if still_held {
            return;
        }
        if let Some(instances) = self.instances_by_username.get_mut(username) {
            instances.remove(instance_id);
            if instances.is_empty() {
                self.instances_by_username.remove(username);
            }
        }
    }
}

/// The bytes a sealed secret is bound to: its row.
fn seal_context(instance_id: &str, kind: IdentityType, username: &str, client_id: &str) -> Vec<u8> {
    format!("{instance_id}\0{}\0{username}\0{client_id}", kind.label()).into_bytes()
}

pub(super) fn load(
    connection: &Connection,
    key: &ServerKey,
    only: Option<&str>,
) -> rusqlite::Result<CustomAuths> {
    let mut all = CustomAuths::default();
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, identity_type, username, client_id, sign_mode, secret FROM custom_auth_identities",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, Vec<u8>>(5)?,
        ))
    })?;
    let mut unreadable = 0usize;
    for row in rows {
        let (instance_id, kind, username, client_id, sign_mode, sealed) = row?;
        let (Some(kind), Some(sign_mode)) = (
            IdentityType::from_label(&kind),
            SignMode::from_label(&sign_mode),
        ) else {
            unreadable += 1;
            continue;
        };
        let Some(secret) = key.open(
            &seal_context(&instance_id, kind, &username, &client_id),
            &sealed,
        ) else {
            unreadable += 1;
            continue;
        };
        all.index_username(&instance_id, &username);
        let identity = Identity {
            kind,
            username,
            client_id,
            sign_mode,
            secret,
        };
        all.by_instance
            .entry(instance_id)
            .or_default()
            .identities
            .insert(identity.key(), identity);
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            "custom-auth identities whose secret does not open with this server key are left out; restore the devices key file they were sealed with"
        );
    }
    let mut statement = connection.prepare(&super::scoped(
        "SELECT instance_id, identity_type, identity, topic, effect, permit_action FROM custom_auth_permissions",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
        ))
    })?;
    for row in rows {
        let (instance_id, kind, identity, topic, effect, action) = row?;
        let (Some(kind), Some(effect), Some(action)) = (
            IdentityType::from_label(&kind),
            Effect::from_label(&effect),
            PermitAction::from_label(&action),
        ) else {
            continue;
        };
        all.by_instance
            .entry(instance_id)
            .or_default()
            .permissions
            .insert(
                (kind, identity, topic.clone()),
                Rule {
                    topic,
                    effect,
                    action,
                },
            );
    }
    // One snapshot per instance, built in one pass.
    for auth in all.by_instance.values_mut() {
        let mut snapshot = InstanceRules::default();
        let mut by_identity: BTreeMap<(IdentityType, &str), Vec<&Rule>> = BTreeMap::new();
        for ((kind, identity, _), rule) in &auth.permissions {
            by_identity.entry((*kind, identity)).or_default().push(rule);
        }
        for ((kind, identity), rules) in by_identity {
            snapshot.insert(kind, identity, IdentityRules::compile(rules));
        }
        auth.rules.store(Arc::new(snapshot));
    }
    Ok(all)
}

/// The outcome of adding an identity or a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    /// One with the same name exists (change it with Update...).
    Exists,
    /// The instance holds its limit already.
    LimitReached,
}

/// What a query keeps: `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct IdentityFilter {
    pub kind: Option<IdentityType>,
    pub username: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct PermissionFilter {
    pub kind: Option<IdentityType>,
    pub identity: Option<String>,
    pub topic: Option<String>,
}

/// A permission as queries answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub kind: IdentityType,
    pub identity: String,
    pub rule: Rule,
}

/// The text a page key is written as in a NextToken (NUL cannot occur in
/// MQTT strings, so it separates the parts unambiguously).
pub fn page_key(key: &(IdentityType, String, String)) -> String {
    format!("{}\0{}\0{}", key.0.label(), key.1, key.2)
}

/// Reads back what [`page_key`] wrote.
pub fn parse_page_key(text: &str) -> Option<(IdentityType, String, String)> {
    let mut parts = text.split('\0');
    let (Some(kind), Some(a), Some(b), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((
        IdentityType::from_label(kind)?,
        a.to_string(),
        b.to_string(),
    ))
}

/// Up to `size` entries of `map` after `after`, those `keep` accepts, and
/// whether more follow.
fn page<K: Ord + Clone, V, T>(
    map: &BTreeMap<K, V>,
    after: Option<&K>,
    size: usize,
    keep: impl Fn(&K, &V) -> bool,
    answer: impl Fn(&K, &V) -> T,
) -> (Vec<T>, Option<K>) {
    let range = match after {
        Some(after) => map.range((
            std::ops::Bound::Excluded(after.clone()),
            std::ops::Bound::Unbounded,
        )),
        None => map.range(..),
    };
    let mut kept = range.filter(|(k, v)| keep(k, v));
    let page: Vec<(&K, &V)> = kept.by_ref().take(size).collect();
    let more = kept.next().is_some();
    let last = page.last().map(|(k, _)| (*k).clone());
    (
        page.into_iter().map(|(k, v)| answer(k, v)).collect(),
        if more { last } else { None },
    )
}

impl DeviceStore {
    /// Adds an identity, unless one with the same name exists or the
    /// instance holds `limit` identities.
    pub async fn add_custom_identity(
        &self,
        instance_id: &str,
        identity: Identity,
        now_ms: i64,
        limit: usize,
    ) -> Result<Added, StoreError> {
        let context = seal_context(
            instance_id,
            identity.kind,
            &identity.username,
            &identity.client_id,
        );
        let sealed = self.key.seal(&context, identity.secret.expose())?;
        let instance = instance_id.to_string();
        let kept = (instance.clone(), identity.clone());
        self.write(
            move |tx| {
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM custom_auth_identities WHERE instance_id = ?1",
                    params![instance],
                    |row| row.get(0),
                )?;
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO custom_auth_identities
                     (instance_id, identity_type, username, client_id, sign_mode, secret, create_time, update_time)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7 WHERE ?8",
                    params![
                        instance,
                        identity.kind.label(),
                        identity.username,
                        identity.client_id,
                        identity.sign_mode.label(),
                        sealed,
                        now_ms,
                        (count as usize) < limit,
                    ],
                )?;
                if inserted == 1 {
                    return Ok(Added::Added);
                }
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM custom_auth_identities WHERE instance_id = ?1
                     AND identity_type = ?2 AND username = ?3 AND client_id = ?4)",
                    params![instance, identity.kind.label(), identity.username, identity.client_id],
                    |row| row.get(0),
                )?;
                Ok(if exists { Added::Exists } else { Added::LimitReached })
            },
            move |state: &mut State, outcome: &mut Added| {
                if *outcome == Added::Added {
                    let (instance, identity) = kept;
                    state.custom_auth.index_username(&instance, &identity.username);
                    state
                        .custom_auth
                        .by_instance
                        .entry(instance)
                        .or_default()
                        .identities
                        .insert(identity.key(), identity);
                }
            },
        )
        .await
    }

    /// Replaces an identity's secret and sign mode; `false` if there is no
    /// such identity.
    pub async fn update_custom_identity(
        &self,
        instance_id: &str,
        identity: Identity,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let context = seal_context(
            instance_id,
            identity.kind,
            &identity.username,
            &identity.client_id,
        );
        let sealed = self.key.seal(&context, identity.secret.expose())?;
        let instance = instance_id.to_string();
        let kept = (instance.clone(), identity.clone());
        self.write(
            move |tx| {
                let updated = tx.execute(
                    "UPDATE custom_auth_identities SET sign_mode = ?5, secret = ?6, update_time = ?7
                     WHERE instance_id = ?1 AND identity_type = ?2 AND username = ?3 AND client_id = ?4",
                    params![
                        instance,
                        identity.kind.label(),
                        identity.username,
                        identity.client_id,
                        identity.sign_mode.label(),
                        sealed,
                        now_ms,
                    ],
                )?;
                Ok(updated == 1)
            },
            move |state: &mut State, updated: &mut bool| {
                if *updated {
                    let (instance, identity) = kept;
                    if let Some(auth) = state.custom_auth.by_instance.get_mut(&instance) {
                        auth.identities.insert(identity.key(), identity);
                    }
                }
            },
        )
        .await
    }

    /// Deletes an identity; `false` if there was none.
    pub async fn delete_custom_identity(
        &self,
        instance_id: &str,
        kind: IdentityType,
        username: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let key: IdentityKey = (kind, username.to_string(), client_id.to_string());
        let instance = instance_id.to_string();
        let kept = (instance.clone(), key.clone());
        self.write(
            move |tx| {
                let deleted = tx.execute(
                    "DELETE FROM custom_auth_identities
                     WHERE instance_id = ?1 AND identity_type = ?2 AND username = ?3 AND client_id = ?4",
                    params![instance, key.0.label(), key.1, key.2],
                )?;
                Ok(deleted == 1)
            },
            move |state: &mut State, deleted: &mut bool| {
                if *deleted {
                    let (instance, key) = kept;
                    if let Some(auth) = state.custom_auth.by_instance.get_mut(&instance) {
                        auth.identities.remove(&key);
                    }
                    state.custom_auth.unindex_username(&instance, &key.1);
                }
            },
        )
        .await
    }

    /// A page of an instance's identities (sorted by type, username, client
    /// id) after `after`, and the key to continue after if more follow.
    pub fn custom_identities(
        &self,
        instance_id: &str,
        filter: &IdentityFilter,
        after: Option<&IdentityKey>,
        size: usize,
    ) -> (Vec<Identity>, Option<IdentityKey>) {
        let state = self.read();
        let Some(auth) = state.custom_auth.by_instance.get(instance_id) else {
            return (Vec::new(), None);
        };
        page(
            &auth.identities,
            after,
            size,
            |(kind, username, client_id), _| {
                filter.kind.is_none_or(|k| k == *kind)
                    && filter.username.as_ref().is_none_or(|u| u == username)
                    && filter.client_id.as_ref().is_none_or(|c| c == client_id)
            },
            |_, identity| identity.clone(),
        )
    }

    /// The identity a custom-auth CONNECT logs in as: the `CLIENT` identity
    /// of this username and client id, else the username's `USER` identity.
    pub fn custom_login(
        &self,
        instance_id: &str,
        username: &str,
        client_id: &str,
    ) -> Option<Identity> {
        let state = self.read();
        let auth = state.custom_auth.by_instance.get(instance_id)?;
        auth.identities
            .get(&(
                IdentityType::Client,
                username.to_string(),
                client_id.to_string(),
            ))
            .or_else(|| {
                auth.identities
                    .get(&(IdentityType::User, username.to_string(), String::new()))
            })
            .cloned()
    }

    /// The instances holding an identity with this username.
    pub fn custom_username_instances(&self, username: &str) -> Vec<String> {
        self.read()
            .custom_auth
            .instances_by_username
            .get(username)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds a permission, unless one exists for the same identity and
    /// topic or the instance holds `limit` permissions.
    pub async fn add_custom_permission(
        &self,
        instance_id: &str,
        permission: Permission,
        now_ms: i64,
        limit: usize,
    ) -> Result<Added, StoreError> {
        let instance = instance_id.to_string();
        let kept = (instance.clone(), permission.clone());
        self.write(
            move |tx| {
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM custom_auth_permissions WHERE instance_id = ?1",
                    params![instance],
                    |row| row.get(0),
                )?;
                let p = &permission;
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO custom_auth_permissions
                     (instance_id, identity_type, identity, topic, effect, permit_action, create_time, update_time)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7 WHERE ?8",
                    params![
                        instance,
                        p.kind.label(),
                        p.identity,
                        p.rule.topic,
                        p.rule.effect.label(),
                        p.rule.action.label(),
                        now_ms,
                        (count as usize) < limit,
                    ],
                )?;
                if inserted == 1 {
                    let compiled = compile_identity(tx, &instance, p.kind, &p.identity)?;
                    return Ok((Added::Added, Some(compiled)));
                }
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM custom_auth_permissions WHERE instance_id = ?1
                     AND identity_type = ?2 AND identity = ?3 AND topic = ?4)",
                    params![instance, p.kind.label(), p.identity, p.rule.topic],
                    |row| row.get(0),
                )?;
                let outcome = if exists { Added::Exists } else { Added::LimitReached };
                Ok((outcome, None))
            },
            move |state: &mut State, (_, compiled)| {
                if let Some(compiled) = compiled.take() {
                    let (instance, p) = kept;
                    let auth = state.custom_auth.by_instance.entry(instance).or_default();
                    auth.permissions
                        .insert((p.kind, p.identity.clone(), p.rule.topic.clone()), p.rule);
                    auth.install(p.kind, &p.identity, compiled);
                }
            },
        )
        .await
        .map(|(outcome, _)| outcome)
    }

    /// Changes a permission's effect and action; `false` if there is none
    /// for this identity and topic.
    pub async fn update_custom_permission(
        &self,
        instance_id: &str,
        permission: Permission,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let instance = instance_id.to_string();
        let kept = (instance.clone(), permission.clone());
        self.write(
            move |tx| {
                let p = &permission;
                let updated = tx.execute(
                    "UPDATE custom_auth_permissions SET effect = ?5, permit_action = ?6, update_time = ?7
                     WHERE instance_id = ?1 AND identity_type = ?2 AND identity = ?3 AND topic = ?4",
                    params![
                        instance,
                        p.kind.label(),
                        p.identity,
                        p.rule.topic,
                        p.rule.effect.label(),
                        p.rule.action.label(),
                        now_ms,
                    ],
                )?;
                if updated != 1 {
                    return Ok((false, None));
                }
                let compiled = compile_identity(tx, &instance, p.kind, &p.identity)?;
                Ok((true, Some(compiled)))
            },
            move |state: &mut State, (_, compiled)| {
                if let Some(compiled) = compiled.take() {
                    let (instance, p) = kept;
                    if let Some(auth) = state.custom_auth.by_instance.get_mut(&instance) {
                        auth.permissions
                            .insert((p.kind, p.identity.clone(), p.rule.topic.clone()), p.rule);
                        auth.install(p.kind, &p.identity, compiled);
                    }
                }
            },
        )
        .await
        .map(|(changed, _)| changed)
    }

    /// Deletes a permission; `false` if there was none.
    pub async fn delete_custom_permission(
        &self,
        instance_id: &str,
        kind: IdentityType,
        identity: &str,
        topic: &str,
    ) -> Result<bool, StoreError> {
        let key: PermissionKey = (kind, identity.to_string(), topic.to_string());
        let instance = instance_id.to_string();
        let kept = (instance.clone(), key.clone());
        self.write(
            move |tx| {
                let deleted = tx.execute(
                    "DELETE FROM custom_auth_permissions
                     WHERE instance_id = ?1 AND identity_type = ?2 AND identity = ?3 AND topic = ?4",
                    params![instance, key.0.label(), key.1, key.2],
                )?;
                if deleted != 1 {
                    return Ok((false, None));
                }
                let compiled = compile_identity(tx, &instance, key.0, &key.1)?;
                Ok((true, Some(compiled)))
            },
            move |state: &mut State, (_, compiled)| {
                if let Some(compiled) = compiled.take() {
                    let (instance, key) = kept;
                    if let Some(auth) = state.custom_auth.by_instance.get_mut(&instance) {
                        auth.permissions.remove(&key);
                        auth.install(key.0, &key.1, compiled);
                    }
                }
            },
        )
        .await
        .map(|(changed, _)| changed)
    }

    /// A page of an instance's permissions (sorted by type, identity,
    /// topic) after `after`, and the key to continue after if more follow.
    pub fn custom_permissions(
        &self,
        instance_id: &str,
        filter: &PermissionFilter,
        after: Option<&PermissionKey>,
        size: usize,
    ) -> (Vec<Permission>, Option<PermissionKey>) {
        let state = self.read();
        let Some(auth) = state.custom_auth.by_instance.get(instance_id) else {
            return (Vec::new(), None);
        };
        page(
            &auth.permissions,
            after,
            size,
            |(kind, identity, topic), _| {
                filter.kind.is_none_or(|k| k == *kind)
                    && filter.identity.as_ref().is_none_or(|i| i == identity)
                    && filter.topic.as_ref().is_none_or(|t| t == topic)
            },
            |(kind, identity, _), rule| Permission {
                kind: *kind,
                identity: identity.clone(),
                rule: rule.clone(),
            },
        )
    }

    /// The compiled permission rules of an instance, shared with the
    /// connections that check against them (created empty on first use).
    pub fn custom_rules(&self, instance_id: &str) -> SharedRules {
        if let Some(auth) = self.read().custom_auth.by_instance.get(instance_id) {
            return auth.rules.clone();
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state
            .custom_auth
            .by_instance
            .entry(instance_id.to_string())
            .or_default()
            .rules
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(identity: &str, topic: &str, effect: Effect, action: PermitAction) -> Permission {
        Permission {
            kind: IdentityType::User,
            identity: identity.into(),
            rule: Rule {
                topic: topic.into(),
                effect,
                action,
            },
        }
    }

    #[tokio::test]
    async fn every_change_reaches_the_compiled_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(dir.path(), None).unwrap();
        let rules = store.custom_rules("i1");
        let add = |p| store.add_custom_permission("i1", p, 1, 100);
        assert_eq!(
            add(permission("u", "a/+", Effect::Allow, PermitAction::Pub))
                .await
                .unwrap(),
            Added::Added
        );
        assert_eq!(
            add(permission("u", "b/#", Effect::Allow, PermitAction::Sub))
                .await
                .unwrap(),
            Added::Added
        );
        assert!(rules.load().publish("u", "c", "a/1").allowed());
        assert!(rules.load().subscribe("u", "c", "b/#").allowed());
        let updated = store
            .update_custom_permission(
                "i1",
                permission("u", "a/+", Effect::Deny, PermitAction::Pub),
                2,
            )
            .await
            .unwrap();
        assert!(updated);
        assert!(!rules.load().publish("u", "c", "a/1").allowed());
        assert!(
            store
                .delete_custom_permission("i1", IdentityType::User, "u", "b/#")
                .await
                .unwrap()
        );
        assert!(!rules.load().subscribe("u", "c", "b/#").allowed());
        assert!(
            !store
                .delete_custom_permission("i1", IdentityType::User, "u", "b/#")
                .await
                .unwrap()
        );
        // Reopened, the store compiles the same rules from the database.
        drop(store);
        let store = DeviceStore::open(dir.path(), None).unwrap();
        let rules = store.custom_rules("i1");
        assert_eq!(
            rules.load().publish("u", "c", "a/1"),
            crate::devices::Decision::Denied
        );
        assert!(!rules.load().subscribe("u", "c", "b/#").allowed());
    }
}
