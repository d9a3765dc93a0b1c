//! The RPC parse stage (src/rpc/parse.rs) on a raw HTTP request: the query
//! string as the URI gives it (or as the long-query header carries it),
//! the headers, and a form body. Must never panic.
#![no_main]

use fuzz_common::split_request;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use mqgate::rpc::parse::{fallback_format, parse_request, query_of, requested_format};
use mqgate::server::long_query::QUERY_HEADER;

fuzz_target!(|data: &[u8]| {
    let Some(raw) = split_request(data) else {
        return;
    };

    // What the HTTP layer hands over: a URI and a header map (only what
    // the `http` crate itself accepts reaches mqgate).
    let uri: Option<Uri> = raw.target.parse().ok();
    let mut map = HeaderMap::new();
    for (name, value) in &raw.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    let query = match &uri {
        Some(uri) => query_of(uri, &map).ok().flatten(),
        None => map.get(QUERY_HEADER).and_then(|v| v.to_str().ok()),
    };
    let _ = fallback_format(&map, query);

    // The parse stage, with the query as the URI gave it and as the raw
    // request-target has it.
    for query in [query, raw.query()] {
        let Ok(request) = parse_request(raw.method, query, raw.lower_headers(), raw.body) else {
            continue;
        };
        let _ = request.scheme();
        let _ = request.format();
        let _ = requested_format(&request.params);
        let _ = request.query_params().len();
        for (name, _) in &request.headers {
            let _ = request.header(name);
        }
        // Every parameter is kept once, in byte order of its key.
        let keys: Vec<&str> = request.params.iter().map(|(k, _)| k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "params not sorted");
        for (k, v) in request.params.iter() {
            assert_eq!(request.params.get(k), Some(v));
        }
    }
});
