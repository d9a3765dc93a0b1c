//! `BatchQuerySessionByClientIds`: whether each of up to 10 clients is
//! connected, answered from a cache of online status.
//!
//! ```text
//! Action=BatchQuerySessionByClientIds&InstanceId=post-cn-demo
//!   &ClientIdList.1=GID_test@@@a&ClientIdList.2=GID_test@@@b
//! -> {"RequestId": "...", "OnlineStatusList": [
//!      {"ClientId": "GID_test@@@a", "OnlineStatus": true},
//!      {"ClientId": "GID_test@@@b", "OnlineStatus": false}]}
//! ```
//!
//! As with ApsaraMQ, the answer may lag: a status is cached for
//! `http.batch_status_ttl_ms` (default 1 s), which is the staleness a caller
//! may see. `QuerySessionByClientId` is the real-time query.

use super::{ActionContext, ApiAction, check_client_id};
use crate::broker::InstanceBroker;
use crate::error::ApiError;
use crate::rpc::params::Params;
use moka::sync::Cache;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// At most this many ids per call (`ClientIdList.1` .. `ClientIdList.10`).
pub const MAX_CLIENT_IDS: usize = 10;
const LIST: &str = "ClientIdList";

pub struct BatchQuerySessionByClientIds;

pub struct Request {
    pub instance_id: String,
    /// In request order (by N of `ClientIdList.N`).
    pub client_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub request_id: String,
    pub online_status_list: Vec<ClientStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientStatus {
    pub client_id: String,
    pub online_status: bool,
}

impl ApiAction for BatchQuerySessionByClientIds {
    const NAME: &'static str = "BatchQuerySessionByClientIds";
    const RAM_ACTION: &'static str = "mq:BatchQuerySessionByClientIds";
    type Request = Request;
    type Response = Response;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = super::required_param(params, "InstanceId")?.to_string();
        let mut numbered: Vec<(usize, &str)> = Vec::new();
        for (key, value) in params.iter() {
            let Some(rest) = key.strip_prefix(LIST) else {
                continue;
            };
            let Some(n) = rest.strip_prefix('.') else {
                return Err(ApiError::invalid(
                    key,
                    "send the list as ClientIdList.1=...&ClientIdList.2=... (N from 1 to 10)",
                ));
            };
            let index = n
                .parse::<usize>()
                .ok()
                .filter(|i| (1..=MAX_CLIENT_IDS).contains(i) && i.to_string() == n);
            let Some(index) = index else {
                return Err(ApiError::invalid(
                    LIST,
                    format!(
                        "{key} is out of range: N of ClientIdList.N runs from 1 to {MAX_CLIENT_IDS}, so at most {MAX_CLIENT_IDS} client ids fit in one call"
                    ),
                ));
            };
            check_client_id(key, value)?;
            numbered.push((index, value));
        }
        if numbered.is_empty() {
            return Err(ApiError::invalid(
                LIST,
                "it is missing; send ClientIdList.1=... (up to ClientIdList.10)",
            ));
        }
        numbered.sort_by_key(|(index, _)| *index);
        Ok(Request {
            instance_id,
            client_ids: numbered.into_iter().map(|(_, id)| id.to_string()).collect(),
        })
    }

    fn instance_id(request: &Request) -> &str {
        &request.instance_id
    }

    async fn handle(
        ctx: &ActionContext<'_>,
        instance: &InstanceBroker,
        request: Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let online_status_list = request
            .client_ids
            .into_iter()
            .map(|client_id| {
                let online_status = ctx.status_cache.online(instance, &client_id);
                ClientStatus {
                    client_id,
                    online_status,
                }
            })
            .collect();
        Ok(Response {
            request_id: request_id.to_string(),
            online_status_list,
        })
    }
}

/// Online status by (instance, client id), each entry kept for the TTL.
pub struct StatusCache {
    cache: Option<Cache<(String, String), bool>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl StatusCache {
    /// A TTL of zero turns the cache off (every answer is live).
    pub fn new(ttl: Duration, capacity: u64) -> StatusCache {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build()
        });
        StatusCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached status, or the live one (then cached).
    pub fn online(&self, instance: &InstanceBroker, client_id: &str) -> bool {
        let Some(cache) = &self.cache else {
            return instance.sessions.is_online(client_id);
        };
        let key = (instance.instance_id.clone(), client_id.to_string());
        if let Some(status) = cache.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return status;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let status = instance.sessions.is_online(client_id);
        cache.insert(key, status);
        status
    }

    pub fn forget(&self, instance_id: &str, client_id: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&(instance_id.to_string(), client_id.to_string()));
        }
    }

    /// (hits, misses) since start.
    pub fn hit_counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Request, ApiError> {
        let mut params = Params::default();
        params.insert("InstanceId".into(), "i".into()).unwrap();
        for (k, v) in pairs {
            params.insert(k.to_string(), v.to_string()).unwrap();
        }
        BatchQuerySessionByClientIds::parse(&params)
    }

    #[test]
    fn ids_come_back_in_numeric_order() {
        let pairs: Vec<(String, String)> = (1..=10)
            .rev()
            .map(|i| (format!("ClientIdList.{i}"), format!("c{i}")))
            .collect();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = parse(&pairs).unwrap();
        let expected: Vec<String> = (1..=10).map(|i| format!("c{i}")).collect();
        assert_eq!(r.client_ids, expected);
    }

    #[test]
    fn bad_lists_name_the_parameter() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "InvalidParameter.ClientIdList"),
            (&[("ClientIdList.11", "a")], "InvalidParameter.ClientIdList"),
            (&[("ClientIdList.0", "a")], "InvalidParameter.ClientIdList"),
            (&[("ClientIdList.01", "a")], "InvalidParameter.ClientIdList"),
            (&[("ClientIdList.x", "a")], "InvalidParameter.ClientIdList"),
            (&[("ClientIdList", "a")], "InvalidParameter.ClientIdList"),
            (&[("ClientIdList.1", "")], "InvalidParameter.ClientIdList.1"),
        ];
        for (pairs, code) in cases {
            let e = parse(pairs)
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} accepted"));
            assert_eq!(e.code(), *code, "{pairs:?}");
            assert!(e.message.contains("ClientIdList"), "{}", e.message);
        }
    }
}
