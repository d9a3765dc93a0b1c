//! How many heap allocations one successful call costs, from the parse
//! stage to the answer, counted by a counting global allocator around the
//! RPC endpoint's own polls (hyper's work, and the metering writer's thread,
//! are outside it).
//!
//! `MQGATE_ALLOCATIONS_TRACE=1 cargo test --test allocations -- --nocapture`
//! prints the stack of every allocation counted.

// A counting global allocator cannot be written without `unsafe`: this
// test file is the one place outside the library that needs it.
#![allow(unsafe_code)]

mod common;

use axum::extract::{ConnectInfo, State};
use common::TestServer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

fn count_one() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if !counting {
        return;
    }
    COUNT.with(|c| c.set(c.get() + 1));
    if TRACING.with(Cell::get) {
        // The trace allocates: not counted.
        COUNTING.with(|c| c.set(false));
        eprintln!(
            "--- allocation {}\n{}",
            COUNT.with(Cell::get),
            std::backtrace::Backtrace::force_capture()
        );
        COUNTING.with(|c| c.set(true));
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is a thread-local `Cell` with a constant initializer (no
// allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A future whose polls, and only they, are counted.
struct Counted<F>(Pin<Box<F>>);

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        COUNTING.with(|c| c.set(true));
        let polled = self.0.as_mut().poll(cx);
        COUNTING.with(|c| c.set(false));
        polled
    }
}

/// Allocations made while `future` is polled.
async fn allocations_of<F: Future>(future: F) -> (F::Output, u64) {
    COUNT.with(|c| c.set(0));
    let output = Counted(Box::pin(future)).await;
    (output, COUNT.with(Cell::get))
}

fn signed_request(endpoint_host: &str, params: &[(String, String)]) -> axum::extract::Request {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let form = mqgate::client::encode_form(&mqgate::client::sign_v1(
        "GET",
        "QuerySessionByClientId",
        params,
        "testid",
        "testsecret",
        chrono::Utc::now(),
        &nonce,
    ));
    let mut request = axum::http::Request::builder()
        .method("GET")
        .uri(format!("/?{form}"))
        .header("host", endpoint_host)
        .body(axum::body::Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))));
    request
}

/// Calls before the counted ones: 10,000 nonces, about 40 in each of the
/// replay set's 256 shards.
const WARM_UP_CALLS: usize = 10_000;

const CONFIG: &str = r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-alloc"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
# The warm-up's calls, at test speed, far above the default 500 a second.
[limits]
QuerySessionByClientId = 1000000000
"#;

/// A successful QuerySessionByClientId allocates nothing from the parse
/// stage to the answer but the answer itself (its body, its headers).
/// Before issue 17 it made 50 allocations; the answer's are 8.
#[tokio::test(flavor = "current_thread")]
async fn a_successful_query_allocates_only_its_answer() {
    TRACING.with(|t| t.set(std::env::var_os("MQGATE_ALLOCATIONS_TRACE").is_some()));
    let t = TestServer::start(CONFIG).await;
    let state = t.server.state();
    let params = vec![
        ("InstanceId".to_string(), "post-cn-alloc".to_string()),
        ("ClientId".to_string(), "GID_alloc@@@dev-1".to_string()),
    ];
    // The first calls fill what is made once (caches, the replay set's
    // generation, the metering queue's first block), and enough nonces
    // that each of the replay set's 256 shards holds some (about 40: a
    // shard allocates at its first key, then grows by doubling, so that
    // in the 20 calls below a growth comes about once, not on every call).
    for _ in 0..WARM_UP_CALLS {
        let request = signed_request("mqgate", &params);
        let response = mqgate::rpc::endpoint(State(state.clone()), request).await;
        assert_eq!(response.status(), 200);
    }
    let mut counts = Vec::new();
    for _ in 0..20 {
        let request = signed_request("mqgate", &params);
        let (response, allocations) =
            allocations_of(mqgate::rpc::endpoint(State(state.clone()), request)).await;
        assert_eq!(response.status(), 200);
        counts.push(allocations);
    }
    // What the answer itself allocates (its body, its headers): the
    // respond stage alone, on the same answer.
    let reply = mqgate::actions::Reply::QuerySessionByClientId(
        mqgate::actions::query_session_by_client_id::Answer {
            online_status: false,
        },
    );
    let request_id = mqgate::rpc::respond::RequestId::new();
    let mut answer_allocations = u64::MAX;
    let mut answer = None;
    // The first answers fill what is made once (the serializer's tables).
    for _ in 0..5 {
        COUNT.with(|c| c.set(0));
        COUNTING.with(|c| c.set(true));
        answer = Some(mqgate::rpc::respond::success(
            mqgate::api::Action::QuerySessionByClientId,
            &reply,
            // The format the calls above ask for (mqgate's client signs
            // Format=JSON, as the SDKs do).
            mqgate::rpc::parse::Format::Json,
            &request_id,
        ));
        COUNTING.with(|c| c.set(false));
        answer_allocations = answer_allocations.min(COUNT.with(Cell::get));
    }
    let answer = answer.unwrap();
    assert!(answer.is_ok());
    eprintln!("allocations per call, 20 calls: {counts:?}; the answer alone: {answer_allocations}");
    // Every call: the answer's, and nothing else, but for what grows by
    // doubling (a shard of the replay guard's set of nonces, and the
    // metering queue's storage): at most one more allocation, on a few
    // calls.
    let fewest = *counts.iter().min().unwrap();
    assert_eq!(fewest, answer_allocations, "{counts:?}");
    assert!(
        counts.iter().all(|n| *n <= answer_allocations + 1),
        "{counts:?}"
    );
    assert!(
        counts.iter().filter(|n| **n > answer_allocations).count() <= 4,
        "{counts:?}"
    );
}
