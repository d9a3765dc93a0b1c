//! Sizes of the types behind an idle connection's memory (issue 15's
//! breakdown, bench/results.md): rumqttd preallocates its per-connection
//! queues by element count, so what a slot costs is what they cost.
//! `cargo test --test rumqttd_sizes -- --nocapture` prints them;
//! bench/memory_breakdown.sh runs it. rumqttd's own per-connection structs
//! (Incoming, Outgoing, AckLog, Ack, Event) are private to it; their sizes
//! come from the allocations heaptrack records (the script's output).

use std::mem::size_of;

#[test]
fn print_rumqttd_and_front_sizes() {
    let rows: &[(&str, usize)] = &[
        (
            "rumqttd::protocol::Packet",
            size_of::<rumqttd::protocol::Packet>(),
        ),
        ("rumqttd::Notification", size_of::<rumqttd::Notification>()),
        ("rumqttd::Forward", size_of::<rumqttd::Forward>()),
        (
            "rumqttd::protocol::Publish",
            size_of::<rumqttd::protocol::Publish>(),
        ),
        (
            "rumqttd::protocol::PublishProperties",
            size_of::<rumqttd::protocol::PublishProperties>(),
        ),
        (
            "rumqttd::local::LinkTx",
            size_of::<rumqttd::local::LinkTx>(),
        ),
        (
            "rumqttd::local::LinkRx",
            size_of::<rumqttd::local::LinkRx>(),
        ),
        ("bytes::BytesMut", size_of::<bytes::BytesMut>()),
        ("tokio::net::TcpStream", size_of::<tokio::net::TcpStream>()),
        (
            "mqgate::broker::registry::Session",
            size_of::<mqgate::broker::registry::Session>(),
        ),
        (
            "mqgate::broker::registry::SessionInfo",
            size_of::<mqgate::broker::registry::SessionInfo>(),
        ),
    ];
    for (name, size) in rows {
        println!("size_of {name} = {size} bytes");
    }
    let packet = size_of::<rumqttd::protocol::Packet>();
    let notification = size_of::<rumqttd::Notification>();
    // rumqttd 0.20's per-connection queues, by capacity (router/iobufs.rs,
    // link/local.rs, link/remote.rs).
    println!(
        "VecDeque<Packet> x 200 (router Incoming) = {} bytes",
        200 * packet
    );
    println!(
        "VecDeque<Notification> x 200 (router Outgoing) = {} bytes",
        200 * notification
    );
    println!(
        "VecDeque<Notification> x 100 (LinkRx cache; RemoteLink notifications) = {} bytes each",
        100 * notification
    );
    assert!(packet > 0 && notification > 0);
}
