//! Requests the official SDKs really sent (tests/data/sdk-captures),
//! verified by mqgate's parse, signature and replay stages with the clock
//! fixed at the time each was captured.

mod common;

use chrono::{DateTime, Utc};
use mqgate::config::Config;
use mqgate::directory::Directory;
use mqgate::error::ErrorCode;
use mqgate::replay::ReplayGuard;
use mqgate::rpc::parse::{IncomingRequest, parse_request};
use mqgate::rpc::{signature_v1, signature_v3, verify};
use serde_json::Value;

struct Capture {
    name: String,
    json: Value,
}

fn captures() -> Vec<Capture> {
    let dir = common::data_dir().join("sdk-captures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            out.push(Capture {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        out.len(),
        42,
        "expected the 42 captures of tests/data/sdk-captures"
    );
    out
}

fn is_v1(c: &Capture) -> bool {
    c.json["signature_verification"]["scheme"]
        .as_str()
        .unwrap()
        .starts_with("V1")
}

fn headers(c: &Capture) -> Vec<(String, String)> {
    c.json["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn incoming(c: &Capture) -> IncomingRequest {
    let request = &c.json["request"];
    let query = request["raw_query"].as_str().filter(|q| !q.is_empty());
    let body = request["body_raw"].as_str().unwrap();
    parse_request(
        request["method"].as_str().unwrap(),
        query,
        headers(c),
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

fn directory() -> Directory {
    let text = r#"
        [[accounts]]
        id = "1234567890"
          [[accounts.instances]]
          id = "mqtt-cn-test0001"
          [[accounts.users]]
          name = "root"
          access_key_id = "testid"
          access_key_secret = "testsecret"
          root = true
    "#;
    Directory::from_config(&Config::parse(text, "test.toml").unwrap())
}

/// The string to sign mqgate computes (and for V3 the canonical request) is
/// the capture server's, byte for byte, and the SDK's signature matches it.
#[test]
fn every_capture_has_our_string_to_sign_and_a_valid_signature() {
    let (mut v1, mut v3) = (0, 0);
    for c in captures() {
        let request = incoming(&c);
        let expected = &c.json["signature_verification"];
        if is_v1(&c) {
            let unsigned = request.params.iter().filter(|(k, _)| *k != "Signature");
            let canonical = signature_v1::canonical_query(unsigned);
            let sts = signature_v1::string_to_sign(&request.method, &canonical);
            assert_eq!(
                sts,
                expected["string_to_sign"].as_str().unwrap(),
                "{}",
                c.name
            );
            let provided = request.params.get("Signature").unwrap();
            assert!(
                signature_v1::verify("testsecret", &sts, provided),
                "{}",
                c.name
            );
            assert!(
                !signature_v1::verify("testsecret2", &sts, provided),
                "{}",
                c.name
            );
            v1 += 1;
        } else {
            let auth = signature_v3::parse_authorization(
                &request.header("authorization").unwrap().unwrap(),
            )
            .unwrap();
            let values: Vec<(&str, std::borrow::Cow<'_, str>)> = auth
                .signed_headers
                .iter()
                .map(|h| (h.as_str(), request.header(h).unwrap().unwrap()))
                .collect();
            let signed: Vec<(&str, &str)> = values.iter().map(|(h, v)| (*h, v.as_ref())).collect();
            let canonical = signature_v3::canonical_request(
                &request.method,
                request.query_params().iter(),
                &signed,
                &request.body_sha256(),
            );
            assert_eq!(
                canonical,
                expected["canonical_request"].as_str().unwrap(),
                "{}",
                c.name
            );
            let sts = signature_v3::string_to_sign(&canonical);
            assert_eq!(
                sts,
                expected["string_to_sign"].as_str().unwrap(),
                "{}",
                c.name
            );
            assert!(
                signature_v3::verify("testsecret", &sts, &auth.signature),
                "{}",
                c.name
            );
            assert!(
                !signature_v3::verify("testsecret2", &sts, &auth.signature),
                "{}",
                c.name
            );
            v3 += 1;
        }
    }
    assert_eq!(
        (v1, v3),
        (32, 10),
        "V1: pycore 10, tea v1 10, pop-core 12; V3: tea 10"
    );
}

/// The whole verification pipeline accepts each capture at its own time,
/// refuses it as a replay the second time, and refuses the STS ones with a
/// clear code (mqgate issues no STS tokens).
#[test]
fn every_capture_passes_verification_and_replay_at_its_time() {
    let directory = directory();
    let mut accepted = 0;
    let mut sts = 0;
    for c in captures().iter() {
        let at: DateTime<Utc> = c.json["received_at_utc"].as_str().unwrap().parse().unwrap();
        let guard = ReplayGuard::new(900, at - chrono::Duration::minutes(1), 1000);
        let request = incoming(c);
        if request.params.contains("SecurityToken")
            || request.header("x-acs-security-token").unwrap().is_some()
        {
            let e = verify::verify(request, &directory).unwrap_err();
            assert_eq!(e.kind, ErrorCode::InvalidSecurityToken, "{}", c.name);
            sts += 1;
            continue;
        }
        let verified =
            verify::verify(request, &directory).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(verified.version(), "2020-04-20");
        guard
            .check("testid", verified.timestamp(), verified.nonce(), at)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let again = guard
            .check("testid", verified.timestamp(), verified.nonce(), at)
            .unwrap_err();
        assert_eq!(again.kind, ErrorCode::SignatureNonceUsed, "{}", c.name);
        // Twenty minutes later the same request is too old.
        let late = ReplayGuard::new(900, at - chrono::Duration::minutes(1), 1000)
            .check(
                "testid",
                verified.timestamp(),
                "fresh",
                at + chrono::Duration::minutes(20),
            )
            .unwrap_err();
        assert_eq!(late.kind, ErrorCode::InvalidTimeStampExpired, "{}", c.name);
        accepted += 1;
    }
    assert_eq!((accepted, sts), (38, 4));
}
