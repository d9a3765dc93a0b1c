//! mqgate: Alibaba Cloud's ApsaraMQ for MQTT OpenAPI (RPC style, signed),
//! in front of MQTT brokers embedded in the same process.
//!
//! Devices connect over MQTT 3.1.1 or 5; operators manage them with
//! Alibaba's official SDKs, unchanged: every call's signature is verified,
//! its timestamp and nonce checked against replays, and its caller
//! authorized against the instance before the action runs.
//!
//! # Layout
//!
//! Imports point one way, down this list.
//!
//! - [`cli`] (`mqgate serve|call|report|policy`) and [`server`]: start
//!   everything from a [`config::Config`], reload it ([`server::reload`]),
//!   shut it down; [`state::AppState`] is what every HTTP handler shares.
//! - [`rpc`]: the endpoint at `/`. [`rpc::pipeline`](rpc) calls the stages
//!   in order, each in the module named for it: [`rpc::parse`] ->
//!   [`rpc::verify`] (with [`rpc::signature_v1`], [`rpc::signature_v3`]) ->
//!   [`replay`] -> [`principal`] -> [`throttle`] -> [`access`] (authorize)
//!   -> [`actions`] (the action) -> [`metering`] (quota, then the bill,
//!   durable before the answer) -> [`rpc::respond`] (JSON or XML, with the
//!   `RequestId`).
//! - [`emqx`]: EMQX's client-management REST API per instance; each
//!   endpoint states its RAM action in its signature ([`emqx::auth`]).
//! - [`actions`]: one file per action: its typed parameters, its resource,
//!   its typed answer, its handler ([`actions::Handler`]).
//! - [`broker`]: the embedded rumqttd brokers (on a runtime of their own)
//!   and the API the rest drives them with ([`broker::InstanceBroker`]:
//!   kick, subscribe and unsubscribe for a client, publish, online status);
//!   the MQTT front layer ([`broker::front`]) with the session registry,
//!   device authentication ([`broker::device_auth`]: Signature, Token,
//!   DeviceCredential and custom-auth logins, and which instance a login
//!   belongs to) and what a bound connection may publish and subscribe to
//!   ([`broker::rights`]: its tokens, [`broker::tokens`], or its custom-auth
//!   rules).
//! - [`metering`] (the bill: a journal block per batch, folded into SQLite;
//!   reports), [`devices`] (the
//!   durable device-side state: group ids, device credentials, tokens and
//!   their compiled topic tries, the connection blacklist, custom-auth
//!   identities and permission rules compiled per instance,
//!   [`devices::permissions`]; in a cluster its rows travel through
//!   [`devices::replica`]), [`metrics`].
//! - [`access`] (authorize, resources and their ARNs, RAM condition keys),
//!   [`principal`], [`replay`], [`throttle`]; [`cluster`] (with
//!   `[cluster]`: the Redis a node shares replay nonces, QPS buckets, the
//!   session directory, instance leases, bills, traces and the device-side
//!   state ([`cluster::devices`]) with; devices of an instance another
//!   node serves are relayed there by the front layer).
//! - [`directory`] (accounts, instances, keys), [`config`], [`params`].
//! - [`transport`]: TLS, WebSocket and secure WebSocket streams and their
//!   handshakes, and self-signed certificates; the front layer's and the
//!   HTTP server's accept loops use them.
//! - Leaves: [`api`] (the action table), [`error`] (the error table),
//!   [`ram`] (the policy language), [`secret`]; [`client`] (a signing
//!   client for tools and tests).
//!
//! # Adding an action
//!
//! One row in [`api`]'s table (name, module, RAM action, QPS limit,
//! billed), one file in `src/actions/` implementing [`actions::Handler`],
//! and its entries in `openapi/mqgate.yaml` and the README's action table
//! (a test checks that both agree with the table).

pub mod access;
pub mod actions;
pub mod api;
pub mod broker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod devices;
pub mod directory;
pub mod emqx;
pub mod error;
pub mod metering;
pub mod metrics;
pub mod params;
pub mod principal;
pub mod ram;
pub mod replay;
pub mod rpc;
pub mod secret;
pub mod server;
pub mod state;
pub mod throttle;
pub mod trace;
pub mod transport;
