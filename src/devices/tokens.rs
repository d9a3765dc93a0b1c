//! Tokens (ApplyToken, QueryToken, RevokeToken): temporary rights to read
//! (subscribe and receive) or write (publish) a set of topics of one
//! instance, presented by a device at CONNECT (`Token|{AccessKeyId}|{Instance}`,
//! password `R|{token}`, `W|{token}`, `RW|{token}` or several) or uploaded
//! during its session.
//!
//! A token is 43 random letters and digits (about 256 bits). The database
//! keeps its SHA-256, never the token: a copy of the file names no token a
//! device could use, and nothing in the API hands a token back after
//! ApplyToken. Expired and revoked tokens are deleted: QueryToken answers
//! false for them as for a token it never issued. Each grant compiles its
//! topics once ([`TopicSet`]); sessions hold the same `Arc`, so a
//! revocation reaches them at once.

use super::topics::{FilterError, TopicSet};
use super::{DeviceStore, State, StoreError};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Length of a token (letters and digits).
const TOKEN_LEN: usize = 43;

/// What a token allows: `Actions` R, W or R,W (the password's R, W, RW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    R,
    W,
    RW,
}

impl TokenType {
    /// `Actions` of ApplyToken: "R", "W", "R,W" (or "W,R").
    pub fn from_actions(actions: &str) -> Option<TokenType> {
        match actions {
            "R" => Some(TokenType::R),
            "W" => Some(TokenType::W),
            "R,W" | "W,R" => Some(TokenType::RW),
            _ => None,
        }
    }

    /// A type in a CONNECT password or an uploaded token's `type`.
    pub fn from_label(label: &str) -> Option<TokenType> {
        match label {
            "R" => Some(TokenType::R),
            "W" => Some(TokenType::W),
            "RW" => Some(TokenType::RW),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TokenType::R => "R",
            TokenType::W => "W",
            TokenType::RW => "RW",
        }
    }

    pub fn reads(self) -> bool {
        matches!(self, TokenType::R | TokenType::RW)
    }

    pub fn writes(self) -> bool {
        matches!(self, TokenType::W | TokenType::RW)
    }
}

/// A token's rights (the token itself is not kept).
pub struct TokenGrant {
    pub account_id: String,
    pub instance_id: String,
    pub kind: TokenType,
    pub topics: TopicSet,
    /// Unix milliseconds.
    pub expire_time: i64,
    pub create_time: i64,
    hash: [u8; 32],
    revoked: AtomicBool,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("instance_id", &self.instance_id)
            .field("kind", &self.kind)
            .field("topics", &self.topics.filters())
            .field("expire_time", &self.expire_time)
            .finish_non_exhaustive()
    }
}

impl TokenGrant {
    /// Neither expired nor revoked at `now_ms`.
    pub fn valid_at(&self, now_ms: i64) -> bool {
        now_ms < self.expire_time && !self.revoked()
    }

    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Whether two grants are the same token.
    pub fn same_token(&self, other: &TokenGrant) -> bool {
        self.hash == other.hash
    }
}

/// Tokens in memory, by hash, with a count per instance (for the limit).
#[derive(Debug, Default)]
pub(super) struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<TokenGrant>>,
    per_instance: HashMap<String, usize>,
}

impl Tokens {
    fn insert(&mut self, grant: Arc<TokenGrant>) {
        if self.by_hash.insert(grant.hash, grant.clone()).is_none() {
            *self
                .per_instance
                .entry(grant.instance_id.clone())
                .or_default() += 1;
        }
    }

    /// Replaces one instance's tokens by `fresh`'s. A grant still held
    /// keeps its `Arc` (sessions hold it); one gone is marked revoked, so
    /// the sessions holding it see it end.
    pub(super) fn replace_instance(&mut self, instance_id: &str, fresh: &Tokens) {
        let gone: Vec<[u8; 32]> = self
            .by_hash
            .values()
            .filter(|g| g.instance_id == instance_id && !fresh.by_hash.contains_key(&g.hash))
            .map(|g| g.hash)
            .collect();
        for hash in gone {
            if let Some(grant) = self.remove(&hash) {
                grant.revoked.store(true, Ordering::Relaxed);
            }
        }
        for grant in fresh.by_hash.values() {
            if grant.instance_id == instance_id && !self.by_hash.contains_key(&grant.hash) {
                self.insert(grant.clone());
            }
        }
    }

    pub(super) fn instances(&self) -> impl Iterator<Item = &String> {
        self.per_instance.keys()
    }

    /// One row from another node: `image` (the row as a JSON object, hash
    /// in hex) granted, or `None`: the token with `hash_hex` ended (marked
    /// revoked for the sessions holding it). A token's row never changes
    /// while it lives, so a grant already held is kept.
    pub(super) fn apply_row(&mut self, hash_hex: &str, image: Option<&serde_json::Value>) {
        let Some(hash) = hex::decode(hash_hex)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        else {
            return;
        };
        let Some(image) = image else {
            if let Some(grant) = self.remove(&hash) {
                grant.revoked.store(true, Ordering::Relaxed);
            }
            return;
        };
        if self.by_hash.contains_key(&hash) {
            return;
        }
        let text = |name: &str| image.get(name)?.as_str().map(str::to_string);
        let number = |name: &str| image.get(name)?.as_i64();
        let grant = (|| {
            grant_of(
                hash,
                text("account_id")?,
                text("instance_id")?,
                &text("actions")?,
                &text("resources")?,
                number("expire_time")?,
                number("create_time")?,
            )
        })();
        if let Some(grant) = grant {
            self.insert(Arc::new(grant));
        }
    }

    fn remove(&mut self, hash: &[u8; 32]) -> Option<Arc<TokenGrant>> {
        let grant = self.by_hash.remove(hash)?;
        if let Some(count) = self.per_instance.get_mut(&grant.instance_id) {
            *count = count.saturating_sub(1);
        }
        Some(grant)
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn grant_of(
    hash: [u8; 32],
    account_id: String,
    instance_id: String,
    actions: &str,
    resources: &str,
    expire_time: i64,
    create_time: i64,
) -> Option<TokenGrant> {
    Some(TokenGrant {
        kind: TokenType::from_actions(actions)?,
        topics: TopicSet::new(resources.split(',')).ok()?,
        account_id,
        instance_id,
        expire_time,
        create_time,
        hash,
        revoked: AtomicBool::new(false),
    })
}

/// Deletes the tokens expired at `now_ms` (at start: they are not loaded
/// again).
pub(super) fn sweep_expired(connection: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    connection.execute(
        "DELETE FROM tokens WHERE expire_time <= ?1",
        params![now_ms],
    )
}

/// Loads the tokens (of one instance, if `only` names it).
pub(super) fn load(connection: &Connection, only: Option<&str>) -> rusqlite::Result<Tokens> {
    let mut statement = connection.prepare(&super::scoped(
        "SELECT token_hash, account_id, instance_id, actions, resources, expire_time, create_time FROM tokens",
        only,
    ))?;
    let rows = statement.query_map(rusqlite::params_from_iter(only), |row| {
        let hash: Vec<u8> = row.get(0)?;
        let actions: String = row.get(3)?;
        let resources: String = row.get(4)?;
        Ok(<[u8; 32]>::try_from(hash.as_slice()).ok().and_then(|hash| {
            grant_of(
                hash,
                row.get(1).ok()?,
                row.get(2).ok()?,
                &actions,
                &resources,
                row.get(5).ok()?,
                row.get(6).ok()?,
            )
        }))
    })?;
    let mut tokens = Tokens::default();
    for grant in rows.flatten().flatten() {
        tokens.insert(Arc::new(grant));
    }
    Ok(tokens)
}

/// The outcome of ApplyToken (no `Debug`: it carries the token).
pub enum Applied {
    /// The token (shown once, to the caller) and its rights.
    New(String, Arc<TokenGrant>),
    /// The instance holds its limit of valid tokens already.
    LimitReached,
}

/// An ApplyToken request, checked.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub account_id: String,
    pub instance_id: String,
    pub kind: TokenType,
    /// Sorted, without duplicates (Alibaba: "sorted in alphabetic order").
    pub resources: Vec<String>,
    pub expire_time: i64,
}

impl TokenRequest {
    pub fn topics(&self) -> Result<TopicSet, FilterError> {
        TopicSet::new(self.resources.iter().cloned())
    }
}

impl DeviceStore {
    /// Issues a token, unless the instance holds `limit` valid tokens
    /// (expired ones are swept first).
    pub async fn apply_token(
        &self,
        request: TokenRequest,
        now_ms: i64,
        limit: usize,
    ) -> Result<Applied, StoreError> {
        let topics = request
            .topics()
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let token = super::keys::random_id("", TOKEN_LEN).map_err(StoreError::Key)?;
        let grant = Arc::new(TokenGrant {
            account_id: request.account_id.clone(),
            instance_id: request.instance_id.clone(),
            kind: request.kind,
            topics,
            expire_time: request.expire_time,
            create_time: now_ms,
            hash: hash(&token),
            revoked: AtomicBool::new(false),
        });
        let full = self
            .read()
            .tokens
            .per_instance
            .get(&request.instance_id)
            .copied()
            >= Some(limit);
        let expired: Vec<[u8; 32]> = if full {
            self.read()
                .tokens
                .by_hash
                .values()
                .filter(|g| g.instance_id == request.instance_id && g.expire_time <= now_ms)
                .map(|g| g.hash)
                .collect()
        } else {
            Vec::new()
        };
        let stored = grant.clone();
        let resources = request.resources.join(",");
        self.write(
            move |tx| {
                for hash in &expired {
                    tx.execute("DELETE FROM tokens WHERE token_hash = ?1", params![&hash[..]])?;
                }
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM tokens WHERE instance_id = ?1",
                    params![stored.instance_id],
                    |row| row.get(0),
                )?;
                if count as usize >= limit {
                    return Ok((expired, false));
                }
                tx.execute(
                    "INSERT INTO tokens
                     (token_hash, account_id, instance_id, actions, resources, expire_time, create_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        &stored.hash[..],
                        stored.account_id,
                        stored.instance_id,
                        match stored.kind {
                            TokenType::R => "R",
                            TokenType::W => "W",
                            TokenType::RW => "R,W",
                        },
                        resources,
                        stored.expire_time,
                        stored.create_time
                    ],
                )?;
                Ok((expired, true))
            },
            {
                let grant = grant.clone();
                move |state: &mut State, (expired, inserted): &mut (Vec<[u8; 32]>, bool)| {
                    for hash in expired {
                        state.tokens.remove(hash);
                    }
                    if *inserted {
                        state.tokens.insert(grant);
                    }
                }
            },
        )
        .await
        .map(|(_, inserted)| match inserted {
            true => Applied::New(token, grant),
            false => Applied::LimitReached,
        })
    }

    /// The rights of a token, valid or not; `None` if it was never issued,
    /// was revoked, or expired before a restart.
    pub fn token(&self, token: &str) -> Option<Arc<TokenGrant>> {
        self.read().tokens.by_hash.get(&hash(token)).cloned()
    }

    /// QueryToken: whether the token is valid for `instance_id` now.
    pub fn token_status(&self, instance_id: &str, token: &str, now_ms: i64) -> bool {
        self.token(token)
            .is_some_and(|g| g.instance_id == instance_id && g.valid_at(now_ms))
    }

    /// RevokeToken: ends the token at once (sessions holding it see it
    /// revoked) and forgets it. `None` if `instance_id` has no such token.
    pub async fn revoke_token(
        &self,
        instance_id: &str,
        token: &str,
    ) -> Result<Option<Arc<TokenGrant>>, StoreError> {
        let Some(grant) = self.token(token).filter(|g| g.instance_id == instance_id) else {
            return Ok(None);
        };
        let hash = grant.hash;
        self.write(
            move |tx| {
                tx.execute(
                    "DELETE FROM tokens WHERE token_hash = ?1",
                    params![&hash[..]],
                )
            },
            move |state: &mut State, _: &mut usize| {
                if let Some(grant) = state.tokens.remove(&hash) {
                    grant.revoked.store(true, Ordering::Relaxed);
                }
            },
        )
        .await?;
        Ok(Some(grant))
    }

    /// How many tokens the store holds for `instance_id` (valid or expired
    /// but not yet swept).
    pub fn token_count(&self, instance_id: &str) -> usize {
        self.read()
            .tokens
            .per_instance
            .get(instance_id)
            .copied()
            .unwrap_or(0)
    }
}
