//! The EMQX REST list query (src/emqx/query.rs, `parse_list_query`):
//! filters, time filters, pagination and field selection; a parsed query
//! is matched against a few sessions and selects fields of an object.
//! Never panics.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use mqgate::broker::registry::{ClientView, ProtocolVersion, SessionInfo, StatsSnapshot};
use mqgate::emqx::query::parse_list_query;
use serde_json::{Map, Value};
use std::sync::OnceLock;

fn views() -> &'static [ClientView] {
    static VIEWS: OnceLock<Vec<ClientView>> = OnceLock::new();
    VIEWS.get_or_init(|| {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 2, 48, 57).unwrap();
        let view = |id: &str, user: Option<&str>, ip: &str, v5: bool, connected: bool| ClientView {
            info: SessionInfo {
                client_id: id.into(),
                username: user.map(String::from),
                ip: ip.parse().unwrap(),
                port: 50000,
                protocol: if v5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                },
                keepalive: 60,
                clean_start: !v5,
                session_expiry_interval: v5.then_some(3600),
                connected_at: at,
                created_at: at - chrono::Duration::seconds(30),
            },
            connected,
            disconnected_at: (!connected).then_some(at),
            stats: StatsSnapshot::default(),
            subscriptions: Default::default(),
        };
        vec![
            view(
                "GID_demo@@@dev-01",
                Some("Signature|ak|mqtt-cn-test0001"),
                "127.0.0.1",
                false,
                true,
            ),
            view("GID_demo@@@dev-02", None, "::ffff:10.0.0.2", true, false),
            view("c", Some("u"), "2001:db8::1", true, true),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = parse_list_query(Some(raw)) else {
        return;
    };
    assert!(query.page >= 1 && (1..=10_000).contains(&query.limit));
    let _ = query.fuzzy();
    for view in views() {
        let _ = query.matches(view);
    }
    let mut object = Map::new();
    for field in [
        "clientid",
        "username",
        "connected",
        "ip_address",
        "proto_ver",
    ] {
        object.insert(field.into(), Value::Bool(true));
    }
    let _ = query.select(object);
});
