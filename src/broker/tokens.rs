//! What a connection that logged in with tokens may do, and the token
//! events ApsaraMQ tells such a client about.
//!
//! - A connection holds at most one token per type (R, W, RW), from its
//!   CONNECT password or uploaded later on `$SYS/uploadToken` (payload
//!   `{"token": "...", "type": "R"}`; an upload replaces the token of its
//!   type).
//! - It may SUBSCRIBE (and so receive) where a valid R or RW token's topics
//!   cover the filter, and PUBLISH where a valid W or RW token's topics
//!   match the topic. Validity is checked on every use, against the grant
//!   the token store shares, so a revocation or an expiry takes effect at
//!   once.
//! - About 5 minutes before a token expires the client gets
//!   `$SYS/tokenExpireNotice` (`{"expireTime": ms, "type": "R"}`); when it
//!   expires or is revoked, `$SYS/tokenInvalidNotice` (`{"code": 2 expired
//!   or 3 revoked, "message": ..., "type": "R"}`), and the subscriptions
//!   its rights no longer cover are removed. The connection stays open, so
//!   that the client can upload a fresh token.

use crate::devices::{TokenGrant, TokenType};
use std::sync::{Arc, RwLock};

/// How long before expiry the client is warned.
pub const EXPIRE_NOTICE_MS: i64 = 5 * 60 * 1000;
/// The topic a client uploads a token to.
pub const UPLOAD_TOPIC: &str = "$SYS/uploadToken";
pub const EXPIRE_NOTICE_TOPIC: &str = "$SYS/tokenExpireNotice";
pub const INVALID_NOTICE_TOPIC: &str = "$SYS/tokenInvalidNotice";

/// `tokenInvalidNotice` codes.
pub const CODE_EXPIRED: u8 = 2;
pub const CODE_REVOKED: u8 = 3;

/// Something to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    ExpiresSoon { kind: TokenType, expire_time: i64 },
    Invalid { kind: TokenType, code: u8 },
}

impl Notice {
    /// The topic and JSON payload of the notice.
    pub fn message(&self) -> (&'static str, String) {
        match self {
            Notice::ExpiresSoon { kind, expire_time } => (
                EXPIRE_NOTICE_TOPIC,
                serde_json::json!({"expireTime": expire_time, "type": kind.label()}).to_string(),
            ),
            Notice::Invalid { kind, code } => (
                INVALID_NOTICE_TOPIC,
                serde_json::json!({
                    "code": code,
                    "message": if *code == CODE_REVOKED { "the token was revoked" } else { "the token expired" },
                    "type": kind.label(),
                })
                .to_string(),
            ),
        }
    }
}

struct Held {
    grant: Arc<TokenGrant>,
    warned: bool,
}

/// The tokens one connection holds.
pub struct TokenRights {
    pub account_id: String,
    pub instance_id: String,
    held: RwLock<Vec<Held>>,
    /// Woken when the client uploads a token (the watcher recomputes its
    /// next deadline).
    pub uploaded: tokio::sync::Notify,
}

impl std::fmt::Debug for TokenRights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.read().iter().map(|h| h.grant.kind.label()).collect();
        f.debug_struct("TokenRights")
            .field("instance_id", &self.instance_id)
            .field("types", &kinds)
            .finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl TokenRights {
    pub fn new(account_id: &str, instance_id: &str, grants: Vec<Arc<TokenGrant>>) -> TokenRights {
        TokenRights {
            account_id: account_id.to_string(),
            instance_id: instance_id.to_string(),
            held: RwLock::new(
                grants
                    .into_iter()
                    .map(|grant| Held {
                        grant,
                        warned: false,
                    })
                    .collect(),
            ),
            uploaded: tokio::sync::Notify::new(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Held>> {
        self.held.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client may publish to `topic` now.
    pub fn may_publish(&self, topic: &str) -> bool {
        let now = now_ms();
        self.read().iter().any(|h| {
            h.grant.kind.writes() && h.grant.valid_at(now) && h.grant.topics.allows_topic(topic)
        })
    }

    /// Whether the client may subscribe to `filter` now.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let now = now_ms();
        self.read().iter().any(|h| {
            h.grant.kind.reads() && h.grant.valid_at(now) && h.grant.topics.covers_filter(filter)
        })
    }

    /// An uploaded token: replaces the one of its type.
    pub fn upload(&self, grant: Arc<TokenGrant>) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        held.retain(|h| h.grant.kind != grant.kind);
        held.push(Held {
            grant,
            warned: false,
        });
        drop(held);
        self.uploaded.notify_one();
    }

    /// The notices due at `now_ms` (tokens that ended are dropped), and when
    /// the next one falls due.
    pub fn due(&self, now_ms: i64) -> (Vec<Notice>, Option<i64>) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let mut notices = Vec::new();
        held.retain_mut(|h| {
            let kind = h.grant.kind;
            if h.grant.revoked() {
                notices.push(Notice::Invalid {
                    kind,
                    code: CODE_REVOKED,
                });
                return false;
            }
            if now_ms >= h.grant.expire_time {
                notices.push(Notice::Invalid {
                    kind,
                    code: CODE_EXPIRED,
                });
                return false;
            }
            if !h.warned && now_ms >= h.grant.expire_time - EXPIRE_NOTICE_MS {
                h.warned = true;
                notices.push(Notice::ExpiresSoon {
                    kind,
                    expire_time: h.grant.expire_time,
                });
            }
            true
        });
        let next = held
            .iter()
            .map(|h| match h.warned {
                true => h.grant.expire_time,
                false => h.grant.expire_time - EXPIRE_NOTICE_MS,
            })
            .min();
        (notices, next)
    }
}

/// The notice topics: a token-mode client may subscribe to them (the front
/// layer sends the notices whether it does or not).
pub fn is_notice_topic(filter: &str) -> bool {
    filter == EXPIRE_NOTICE_TOPIC || filter == INVALID_NOTICE_TOPIC
}

/// The grant an uploaded payload names, if the connection may hold it; else
/// why not (a sentence for the log and the MQTT 5 reason string, without
/// the token).
pub fn uploaded_grant(
    rights: &TokenRights,
    devices: &crate::devices::DeviceStore,
    payload: &[u8],
) -> Result<Arc<TokenGrant>, String> {
    #[derive(serde::Deserialize)]
    struct Upload {
        #[serde(alias = "Token")]
        token: String,
        #[serde(rename = "type", alias = "Type")]
        kind: String,
    }
    let upload: Upload = serde_json::from_slice(payload).map_err(|_| {
        format!("the payload of {UPLOAD_TOPIC} must be JSON {{\"token\": \"...\", \"type\": \"R\" | \"W\" | \"RW\"}}")
    })?;
    let kind = TokenType::from_label(&upload.kind)
        .ok_or_else(|| format!("token type {:?} is not R, W or RW", upload.kind))?;
    let grant = devices
        .token(&upload.token)
        .filter(|g| g.instance_id == rights.instance_id && g.account_id == rights.account_id)
        .ok_or_else(|| {
            format!(
                "the uploaded {} token was not issued for instance {} to this connection's account, or it was revoked",
                kind.label(),
                rights.instance_id
            )
        })?;
    if grant.kind != kind {
        return Err(format!(
            "the uploaded token is of type {}, not {}",
            grant.kind.label(),
            kind.label()
        ));
    }
    if !grant.valid_at(now_ms()) {
        return Err("the uploaded token has expired or was revoked".to_string());
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{Applied, DeviceStore, TokenRequest};

    async fn grant(
        store: &DeviceStore,
        kind: TokenType,
        resources: &[&str],
        expire_time: i64,
    ) -> (String, Arc<TokenGrant>) {
        let request = TokenRequest {
            account_id: "a".into(),
            instance_id: "i".into(),
            kind,
            resources: resources.iter().map(|r| r.to_string()).collect(),
            expire_time,
        };
        match store.apply_token(request, now_ms(), 10).await.unwrap() {
            Applied::New(token, grant) => (token, grant),
            Applied::LimitReached => panic!("limit"),
        }
    }

    #[tokio::test]
    async fn notices_fall_due_before_and_at_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(dir.path(), None).unwrap();
        let now = now_ms();
        let expire = now + 600_000;
        let (_, read) = grant(&store, TokenType::R, &["r/#"], expire).await;
        let rights = TokenRights::new("a", "i", vec![read]);
        assert!(rights.may_subscribe("r/x") && !rights.may_publish("r/x"));
        assert_eq!(rights.due(now), (vec![], Some(expire - EXPIRE_NOTICE_MS)));
        let soon = Notice::ExpiresSoon {
            kind: TokenType::R,
            expire_time: expire,
        };
        assert_eq!(
            rights.due(expire - EXPIRE_NOTICE_MS),
            (vec![soon], Some(expire))
        );
        // Told once.
        assert_eq!(rights.due(expire - 1), (vec![], Some(expire)));
        let expired = Notice::Invalid {
            kind: TokenType::R,
            code: CODE_EXPIRED,
        };
        assert_eq!(rights.due(expire), (vec![expired], None));
        assert!(!rights.may_subscribe("r/x"));
        let (_, payload) = Notice::Invalid {
            kind: TokenType::R,
            code: CODE_EXPIRED,
        }
        .message();
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["code"], 2);
        assert_eq!(payload["type"], "R");
    }

    #[tokio::test]
    async fn a_revocation_ends_the_rights_at_once_and_an_upload_replaces_its_type() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(dir.path(), None).unwrap();
        let later = now_ms() + 3_600_000;
        let (token, write) = grant(&store, TokenType::W, &["w/+"], later).await;
        let rights = TokenRights::new("a", "i", vec![write]);
        assert!(rights.may_publish("w/1") && !rights.may_publish("w/1/2"));
        store.revoke_token("i", &token).await.unwrap().unwrap();
        // Before the watcher runs: the shared grant already says revoked.
        assert!(!rights.may_publish("w/1"));
        let (notices, next) = rights.due(now_ms());
        assert_eq!(
            notices,
            vec![Notice::Invalid {
                kind: TokenType::W,
                code: CODE_REVOKED
            }]
        );
        assert_eq!(next, None);
        let (fresh, _) = grant(&store, TokenType::W, &["x/#"], later).await;
        let payload = serde_json::json!({"token": fresh, "type": "W"}).to_string();
        let uploaded = uploaded_grant(&rights, &store, payload.as_bytes()).unwrap();
        rights.upload(uploaded);
        assert!(rights.may_publish("x/1/2") && !rights.may_publish("w/1"));
        // Wrong type, revoked token, not JSON: refused, saying why.
        let wrong = serde_json::json!({"token": fresh, "type": "R"}).to_string();
        assert!(
            uploaded_grant(&rights, &store, wrong.as_bytes())
                .unwrap_err()
                .contains("type W")
        );
        let old = serde_json::json!({"Token": token, "Type": "W"}).to_string();
        assert!(uploaded_grant(&rights, &store, old.as_bytes()).is_err());
        assert!(
            uploaded_grant(&rights, &store, b"W|token")
                .unwrap_err()
                .contains("JSON")
        );
        // Another account's connection cannot take this instance's token.
        let foreign = TokenRights::new("b", "i", vec![]);
        let ok = serde_json::json!({"token": fresh, "type": "W"}).to_string();
        assert!(uploaded_grant(&foreign, &store, ok.as_bytes()).is_err());
    }
}
