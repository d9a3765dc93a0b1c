//! The query of `GET /clients` (and the `fields` of `GET /clients/{id}`):
//! exact and fuzzy filters, time filters, pagination and field selection,
//! as EMQX reads them (EMQX 4's `_`-prefixed spellings too).

use super::{EmqxError, FIELDS};
use crate::broker::registry::ClientView;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The list query: exact and fuzzy filters, time filters, pagination,
/// field selection. EMQX 4's `_`-prefixed spellings are read too.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub page: usize,
    pub limit: usize,
    clientids: Vec<String>,
    usernames: Vec<String>,
    ip_address: Option<IpAddr>,
    conn_state: Option<String>,
    clean_start: Option<bool>,
    proto_ver: Option<u8>,
    proto_name: Option<String>,
    node: Option<String>,
    like_clientid: Option<String>,
    like_username: Option<String>,
    gte_created_at: Option<DateTime<Utc>>,
    lte_created_at: Option<DateTime<Utc>>,
    gte_connected_at: Option<DateTime<Utc>>,
    lte_connected_at: Option<DateTime<Utc>>,
    fields: Option<Vec<String>>,
}

fn parse_time_filter(name: &str, value: &str) -> Result<DateTime<Utc>, EmqxError> {
    if let Ok(millis) = value.parse::<i64>()
        && let Some(t) = DateTime::from_timestamp_millis(millis)
    {
        return Ok(t);
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            EmqxError::invalid(format!(
                "the {name} parameter expected type is timestamp (RFC 3339 or epoch milliseconds), but the value is {value}"
            ))
        })
}

pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, EmqxError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| EmqxError::bad_request(format!("malformed query string: {e}")))?;
    let mut q = ListQuery {
        page: 1,
        limit: 100,
        ..ListQuery::default()
    };
    for (key, value) in pairs {
        let name = key.strip_prefix('_').unwrap_or(&key);
        let number = |value: &str| {
            value.parse::<usize>().map_err(|_| {
                EmqxError::invalid(format!(
                    "the {name} parameter expected type is integer, but the value is {value}"
                ))
            })
        };
        match name {
            "page" => {
                q.page = number(&value)?;
                if q.page < 1 {
                    return Err(EmqxError::invalid("page must be at least 1"));
                }
            }
            "limit" => {
                q.limit = number(&value)?;
                if !(1..=10_000).contains(&q.limit) {
                    return Err(EmqxError::invalid("limit must be between 1 and 10000"));
                }
            }
            "clientid" => q.clientids.push(value),
            "username" => q.usernames.push(value),
            "ip_address" => {
                q.ip_address = Some(value.parse().map_err(|_| {
                    EmqxError::invalid(format!(
                        "the ip_address parameter expected type is ip, but the value is {value}"
                    ))
                })?);
            }
            "conn_state" => match value.as_str() {
                "connected" | "idle" | "disconnected" => q.conn_state = Some(value),
                _ => {
                    return Err(EmqxError::invalid(format!(
                        "conn_state must be connected, idle or disconnected, not {value}"
                    )));
                }
            },
            "clean_start" => {
                q.clean_start = Some(value.parse().map_err(|_| {
                    EmqxError::invalid(format!(
                        "the clean_start parameter expected type is boolean, but the value is {value}"
                    ))
                })?);
            }
            "proto_ver" => {
                q.proto_ver = Some(value.parse().map_err(|_| {
                    EmqxError::invalid(format!(
                        "the proto_ver parameter expected type is integer, but the value is {value}"
                    ))
                })?);
            }
            "proto_name" => q.proto_name = Some(value),
            "node" => q.node = Some(value),
            "like_clientid" => q.like_clientid = Some(value),
            "like_username" => q.like_username = Some(value),
            "gte_created_at" => q.gte_created_at = Some(parse_time_filter(name, &value)?),
            "lte_created_at" => q.lte_created_at = Some(parse_time_filter(name, &value)?),
            "gte_connected_at" => q.gte_connected_at = Some(parse_time_filter(name, &value)?),
            "lte_connected_at" => q.lte_connected_at = Some(parse_time_filter(name, &value)?),
            "fields" if value == "all" => q.fields = None,
            "fields" => {
                let fields: Vec<String> = value.split(',').map(|f| f.trim().to_string()).collect();
                if let Some(bad) = fields.iter().find(|f| !FIELDS.contains(&f.as_str())) {
                    return Err(EmqxError::invalid(format!(
                        "fields: unknown field {bad}; known fields are {}",
                        FIELDS.join(", ")
                    )));
                }
                q.fields = Some(fields);
            }
            // Other parameters are not EMQX's: ignored, as EMQX does.
            _ => {}
        }
    }
    Ok(q)
}

impl ListQuery {
    pub fn fuzzy(&self) -> bool {
        (self.like_clientid.is_some() && self.clientids.is_empty())
            || (self.like_username.is_some() && self.usernames.is_empty())
    }

    /// Whether client `v`, on node `node` (its name in client objects),
    /// passes the filters.
    pub fn matches(&self, v: &ClientView, node: &str) -> bool {
        let info = &v.info;
        let username = info.username.as_deref().unwrap_or("");
        if !self.clientids.is_empty() && !self.clientids.contains(&info.client_id) {
            return false;
        }
        if !self.usernames.is_empty() && !self.usernames.iter().any(|u| u == username) {
            return false;
        }
        // A fuzzy filter yields to the exact one for the same key.
        if self.clientids.is_empty()
            && let Some(like) = &self.like_clientid
            && !info.client_id.contains(like.as_str())
        {
            return false;
        }
        if self.usernames.is_empty()
            && let Some(like) = &self.like_username
            && !username.contains(like.as_str())
        {
            return false;
        }
        if self
            .ip_address
            .is_some_and(|ip| ip.to_canonical() != info.ip.to_canonical())
        {
            return false;
        }
        match self.conn_state.as_deref() {
            Some("connected") if !v.connected => return false,
            Some("disconnected") if v.connected => return false,
            // mqgate has no idle (connecting) state: nothing is idle.
            Some("idle") => return false,
            _ => {}
        }
        if self.clean_start.is_some_and(|c| c != info.clean_start)
            || self.proto_ver.is_some_and(|p| p != info.protocol.level())
            || self.proto_name.as_ref().is_some_and(|p| p != "MQTT")
            || self.node.as_ref().is_some_and(|n| n != node)
        {
            return false;
        }
        let within = |t: DateTime<Utc>, gte: Option<DateTime<Utc>>, lte: Option<DateTime<Utc>>| {
            gte.is_none_or(|g| t >= g) && lte.is_none_or(|l| t <= l)
        };
        within(info.created_at, self.gte_created_at, self.lte_created_at)
            && within(
                info.connected_at,
                self.gte_connected_at,
                self.lte_connected_at,
            )
    }

    pub fn select(&self, object: Map<String, Value>) -> Value {
        match &self.fields {
            None => Value::Object(object),
            Some(fields) => Value::Object(
                object
                    .into_iter()
                    .filter(|(k, _)| fields.iter().any(|f| f == k))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_parse_and_refuse_bad_values() {
        let q = parse_list_query(Some("clientid=a&clientid=b&_page=2&_limit=5&like_username=x&fields=clientid,connected&_gte_created_at=1700000000000")).unwrap();
        assert_eq!((q.page, q.limit, q.clientids.len()), (2, 5, 2));
        assert!(q.fuzzy());
        assert_eq!(q.fields.unwrap(), ["clientid", "connected"]);
        assert!(q.gte_created_at.is_some());
        for (raw, needle) in [
            ("limit=0", "limit"),
            ("page=0", "page"),
            ("page=x", "integer"),
            (
                "ip_address=127.0.0.1:8080",
                "the ip_address parameter expected type is ip, but the value is 127.0.0.1:8080",
            ),
            ("fields=clientid,nope", "unknown field nope"),
            ("conn_state=maybe", "conn_state"),
            ("clean_start=yes", "boolean"),
            ("gte_connected_at=yesterday", "timestamp"),
        ] {
            let e = parse_list_query(Some(raw)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{raw}");
            assert!(e.message.contains(needle), "{raw}: {}", e.message);
        }
    }
}
