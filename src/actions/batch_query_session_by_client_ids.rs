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
//! may see (see [`crate::broker::status_cache`]). `QuerySessionByClientId`
//! is the real-time query.

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::{Params, check_client_id};
use serde::Serialize;

/// At most this many ids per call (`ClientIdList.1` .. `ClientIdList.10`).
pub const MAX_CLIENT_IDS: usize = 10;

pub struct BatchQuerySessionByClientIds;

pub struct Request {
    pub instance_id: String,
    /// In request order (by N of `ClientIdList.N`).
    pub client_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub online_status_list: Vec<ClientStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientStatus {
    pub client_id: String,
    pub online_status: bool,
}

impl<'a> Handler<'a> for BatchQuerySessionByClientIds {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let mut client_ids = Vec::new();
        for (key, client_id) in params.list("ClientIdList", MAX_CLIENT_IDS)? {
            check_client_id(key, client_id)?;
            client_ids.push(client_id.to_string());
        }
        Ok(Request {
            instance_id,
            client_ids,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let broker = ctx.broker()?;
        let mut online_status_list: Vec<ClientStatus> = request
            .client_ids
            .into_iter()
            .map(|client_id| ClientStatus {
                online_status: broker.is_online_cached(&client_id),
                client_id,
            })
            .collect();
        // In a cluster, the devices not here are looked for on the other
        // nodes, all in one round trip (not cached: the cache is of this
        // node's registry).
        if let Some(cluster) = ctx.cluster {
            let elsewhere: Vec<usize> = (0..online_status_list.len())
                .filter(|&i| !online_status_list[i].online_status)
                .collect();
            let ids: Vec<&str> = elsewhere
                .iter()
                .map(|&i| online_status_list[i].client_id.as_str())
                .collect();
            let found = cluster.online_elsewhere(&request.instance_id, &ids).await?;
            for (i, online) in elsewhere.into_iter().zip(found) {
                online_status_list[i].online_status = online;
            }
        }
        Ok(Answer { online_status_list })
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
