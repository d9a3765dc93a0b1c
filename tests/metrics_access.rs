//! Who may read `GET /metrics`: anyone on the API port by default; with
//! `[metrics] bearer_token`, only a request that carries it; with
//! `[metrics] listen`, only on that listener.

mod common;

use common::TestServer;
use std::net::SocketAddr;

const TOKEN: &str = "0123456789abcdef-metrics";

async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> common::RawAnswer {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    common::raw_http(addr, &[request]).await.remove(0)
}

fn with_metrics(section: &str) -> String {
    format!("{}\n[metrics]\n{section}\n", common::TWO_ACCOUNTS)
}

#[tokio::test]
async fn a_bearer_token_is_required_once_configured() {
    let t = TestServer::start(&with_metrics(&format!("bearer_token = \"{TOKEN}\""))).await;
    let addr = t.server.http_addr;
    let none = get(addr, "/metrics", None).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.body.contains("Authorization: Bearer"), "{}", none.body);
    assert_eq!(
        get(addr, "/metrics", Some("wrong-token-of-some-length"))
            .await
            .status,
        401
    );
    let prefix = &TOKEN[..TOKEN.len() - 1];
    assert_eq!(get(addr, "/metrics", Some(prefix)).await.status, 401);
    let ok = get(addr, "/metrics", Some(TOKEN)).await;
    assert_eq!(ok.status, 200);
    assert!(
        ok.body.contains("mqgate_trace_events_recorded_total"),
        "{}",
        ok.body
    );
    // The API itself is unchanged.
    let (status, body) = t
        .call(
            "QuerySessionByClientId",
            &[("InstanceId", "inst-a1"), ("ClientId", "c")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_listener_of_its_own_takes_metrics_off_the_api_port() {
    let t = TestServer::start(&with_metrics(&format!(
        "listen = \"127.0.0.1:0\"\nbearer_token = \"{TOKEN}\""
    )))
    .await;
    let metrics = t.server.metrics_addr.expect("metrics.listen is bound");
    assert_ne!(metrics, t.server.http_addr);
    let on_api = get(t.server.http_addr, "/metrics", Some(TOKEN)).await;
    assert_eq!(on_api.status, 404, "{}", on_api.body);
    assert_eq!(get(metrics, "/metrics", None).await.status, 401);
    assert_eq!(get(metrics, "/metrics", Some(TOKEN)).await.status, 200);
    // Nothing but /metrics there: no API behind the metrics port.
    assert_eq!(
        get(metrics, "/?Action=ListInstances", Some(TOKEN))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn without_a_metrics_section_metrics_stay_on_the_api_port() {
    let t = TestServer::start(common::TWO_ACCOUNTS).await;
    assert!(t.server.metrics_addr.is_none());
    assert_eq!(get(t.server.http_addr, "/metrics", None).await.status, 200);
}

#[test]
fn a_short_token_is_refused_naming_the_field() {
    let text = with_metrics("bearer_token = \"short\"");
    let e = mqgate::config::Config::parse(&text, "m.toml").unwrap_err();
    let message = e.to_string();
    assert!(message.contains("metrics.bearer_token"), "{message}");
    assert!(
        !message.contains("short\""),
        "the token is echoed: {message}"
    );
}
