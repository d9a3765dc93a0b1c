//! Signature V3 (src/rpc/signature_v3.rs): the `Authorization` header
//! parser and the canonical request, and the V3 verification
//! (src/rpc/verify.rs) on a raw HTTP request. Never panics, and:
//! - a parsed Authorization header, written back, parses to the same;
//! - a request re-signed with its key's secret verifies;
//! - a signature verifies under its own secret only.
#![no_main]

use fuzz_common::{directory, split_request};
use libfuzzer_sys::fuzz_target;
use mqgate::rpc::parse::{IncomingRequest, parse_request};
use mqgate::rpc::signature_v3::{
    ALGORITHM, canonical_request, hashed_payload, parse_authorization, sign, string_to_sign, verify,
};
use mqgate::rpc::verify as pipeline;

fuzz_target!(|data: &[u8]| {
    // The header parser on the whole input too: it is the one V3 part a
    // client writes freely.
    if let Ok(text) = std::str::from_utf8(data) {
        roundtrip(text);
    }
    let Some(raw) = split_request(data) else {
        return;
    };
    let headers = raw.lower_headers();
    for (name, value) in &headers {
        if name == "authorization" {
            roundtrip(value);
        }
    }
    let Ok(request) = parse_request(raw.method, raw.query(), headers, raw.body) else {
        return;
    };
    let method = request.method.clone();
    let query = request.query_params().clone();
    let all_headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.into_owned()))
        .collect();
    let body = request.body.clone();
    let auth = request
        .header("authorization")
        .ok()
        .flatten()
        .and_then(|a| parse_authorization(&a).ok());

    let _ = pipeline::verify(request, directory());

    // The canonical request over what the client said it signed.
    let Some(auth) = auth else {
        return;
    };
    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in &auth.signed_headers {
        let value = all_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        signed.push((name.as_str(), value));
    }
    let payload = hashed_payload(&body);
    let canonical = canonical_request(&method, query.iter(), &signed, &payload);
    let sts = string_to_sign(&canonical);
    assert!(sts.starts_with(ALGORITHM));
    let signature = sign(&auth.access_key_id, &sts);
    assert!(verify(&auth.access_key_id, &sts, &signature));
    assert!(verify(
        &auth.access_key_id,
        &sts,
        &signature.to_ascii_uppercase()
    ));
    assert!(!verify(
        &format!("{}x", auth.access_key_id),
        &sts,
        &signature
    ));
    if auth.signature.to_ascii_lowercase() != signature {
        assert!(!verify(&auth.access_key_id, &sts, &auth.signature));
    }

    // Re-signed with the directory's key: every header the client has is
    // signed (host and the x-acs-* ones among them), the body hash is
    // right, so the request verifies. Headers sent twice, and a security
    // token, are refused by design: not re-signed.
    let mut headers: Vec<(String, String)> = all_headers
        .into_iter()
        .filter(|(n, _)| {
            n != "authorization" && n != "x-acs-content-sha256" && n != "x-acs-security-token"
        })
        .filter(|(n, _)| !n.is_empty() && !n.contains([',', ';', ' ']) && n.trim() == n)
        .collect();
    for (name, value) in [
        ("host", "h"),
        ("x-acs-action", "A"),
        ("x-acs-version", "V"),
        ("x-acs-date", "d"),
        ("x-acs-signature-nonce", "n"),
    ] {
        if !headers.iter().any(|(n, _)| n == name) {
            headers.push((name.into(), value.into()));
        }
    }
    headers.push(("x-acs-content-sha256".into(), payload.clone()));
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return;
    }
    let signed: Vec<(&str, &str)> = names
        .iter()
        .map(|n| {
            let v = headers.iter().find(|(h, _)| h == n).unwrap();
            (*n, v.1.as_str())
        })
        .collect();
    let canonical = canonical_request(&method, query.iter(), &signed, &payload);
    let signature = sign("testsecret", &string_to_sign(&canonical));
    let authorization = format!(
        "{ALGORITHM} Credential=testid,SignedHeaders={},Signature={signature}",
        names.join(";")
    );
    let mut headers = headers.clone();
    headers.push(("authorization".into(), authorization));
    let params = {
        // The query's and the body's parameters, as parsing made them.
        let mut p = query.clone();
        if body.is_empty() {
            p
        } else {
            match p.add_form(&body, "body") {
                Ok(()) => p,
                Err(_) => return,
            }
        }
    };
    let request = IncomingRequest {
        method,
        query: (!body.is_empty()).then_some(query),
        params,
        headers: headers.into(),
        body,
    };
    if let Err(e) = pipeline::verify(request, directory()) {
        panic!("a request signed with the right secret was refused: {e:?}");
    }
});

/// A parsed header, written back in the canonical form, parses the same.
fn roundtrip(value: &str) {
    let Ok(auth) = parse_authorization(value) else {
        return;
    };
    let again = format!(
        "{} Credential={},SignedHeaders={},Signature={}",
        auth.algorithm,
        auth.access_key_id,
        auth.signed_headers.join(";"),
        auth.signature
    );
    assert_eq!(parse_authorization(&again).as_ref(), Ok(&auth), "{again:?}");
}
