//! Signature V1 (src/rpc/signature_v1.rs) and its verification
//! (src/rpc/verify.rs) on a raw HTTP request: parse, then verify against a
//! directory holding the SDK captures' key. Never panics, and:
//! - a request re-signed with its key's secret verifies, and yields the
//!   action and parameters it was signed with;
//! - any other signature does not verify;
//! - the canonical query percent-encodes to unreserved characters only.
#![no_main]

use fuzz_common::{directory, split_request};
use libfuzzer_sys::fuzz_target;
use mqgate::params::Params;
use mqgate::rpc::parse::{IncomingRequest, parse_request};
use mqgate::rpc::signature_v1::{canonical_query, percent_encode, sign, string_to_sign, verify};
use mqgate::rpc::verify;

fuzz_target!(|data: &[u8]| {
    let Some(raw) = split_request(data) else {
        return;
    };
    let Ok(request) = parse_request(raw.method, raw.query(), raw.lower_headers(), raw.body) else {
        // The pure functions still get the bytes.
        let text = String::from_utf8_lossy(data);
        let encoded = percent_encode(&text);
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
        );
        return;
    };
    let method = request.method.clone();
    let params = request.params.clone();

    // The verification the pipeline runs (V1 or V3, whichever it carries).
    let _ = verify::verify(request, directory());

    // The pure functions over the request's parameters.
    let unsigned: Vec<(&str, &str)> = params.iter().filter(|(k, _)| *k != "Signature").collect();
    let canonical = canonical_query(unsigned.iter().copied());
    assert!(
        canonical
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b)),
        "canonical query has a reserved character: {canonical:?}"
    );
    let sts = string_to_sign(&method, &canonical);
    let secret = params.get("AccessKeyId").unwrap_or("testsecret");
    let signature = sign(secret, &sts);
    assert!(verify(secret, &sts, &signature), "own signature refused");
    if let Some(provided) = params.get("Signature")
        && provided != signature
    {
        // A different base64 text may decode to the same bytes (padding
        // bits); only a different MAC must be refused.
        let same_bytes = mqgate_b64_eq(provided, &signature);
        assert_eq!(verify(secret, &sts, provided), same_bytes);
    }
    assert!(
        !verify(&format!("{secret}x"), &sts, &signature),
        "signature under another secret accepted"
    );

    // Re-signed with the directory's key, with the parameters V1 requires,
    // the request verifies and yields what was signed.
    let mut resigned = Params::default();
    for (k, v) in params.iter() {
        if ![
            "Signature",
            "SecurityToken",
            "AccessKeyId",
            "SignatureMethod",
            "SignatureVersion",
        ]
        .contains(&k)
        {
            let _ = resigned.insert(k.to_string(), v.to_string());
        }
    }
    for (k, v) in [
        ("AccessKeyId", "testid"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "n"),
        ("Timestamp", "t"),
        ("Action", "A"),
        ("Version", "V"),
    ] {
        if !resigned.contains(k) {
            let _ = resigned.insert(k.to_string(), v.to_string());
        }
    }
    if ["SignatureNonce", "Timestamp", "Action", "Version"]
        .iter()
        .any(|k| resigned.get(k).is_none_or(str::is_empty))
    {
        return;
    }
    let sts = string_to_sign(&method, &canonical_query(resigned.iter()));
    let action = resigned.get("Action").unwrap().to_string();
    if resigned
        .insert("Signature".into(), sign("testsecret", &sts))
        .is_err()
    {
        return;
    }
    let own: Vec<(String, String)> = resigned
        .iter()
        .filter(|(k, _)| !verify::COMMON_PARAMETERS.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let request = IncomingRequest {
        method,
        params: resigned,
        query: None,
        headers: Vec::new().into(),
        body: bytes::Bytes::new(),
    };
    match verify::verify(request, directory()) {
        Ok(verified) => {
            assert_eq!(verified.action(), action);
            let got: Vec<(String, String)> = verified
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, own);
        }
        Err(e) => panic!("a request signed with the right secret was refused: {e:?}"),
    }
});

/// Whether two base64 texts decode to the same bytes (the engine
/// mqgate uses: standard alphabet, padded, canonical).
fn mqgate_b64_eq(a: &str, b: &str) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    matches!((STANDARD.decode(a), STANDARD.decode(b)), (Ok(x), Ok(y)) if x == y)
}
