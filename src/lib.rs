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
//! Read in this order:
//!
//! - [`config`]: the TOML file, its defaults, the demo set-up, and the checks
//!   that stop start-up with the file, the field and the reason.
//! - [`server`]: starts everything from a [`config::Config`] and shuts it down.
//! - [`rpc`]: the HTTP endpoint at `/`. A call flows one way through small
//!   stages, each a module testable alone:
//!   [`rpc::params`] (parse) -> [`rpc::verify`] with [`rpc::signature_v1`]
//!   and [`rpc::signature_v3`] (signature) -> [`rpc::replay`] (timestamp and
//!   nonce) -> [`throttle`] (calls per second) -> [`access`] (instance and
//!   permission) -> [`actions`] (the action) -> [`metering`] (the bill,
//!   durable before the answer) -> [`rpc::response`] (the answer, with its
//!   `RequestId`).
//! - [`actions`]: one file per API action, each declaring its parameters, its
//!   RAM action and resource, and its handler.
//! - [`error`]: the one table of error codes, HTTP statuses and messages.
//! - [`directory`]: accounts, instances and AccessKeys, looked up per call.
//! - [`ram`]: the RAM policy language, compiled at load and evaluated per
//!   call ([`access`] applies it).
//! - [`emqx`]: EMQX's client-management REST API per instance, over the same
//!   session registry, keys and RAM actions.
//! - [`broker`]: one embedded rumqttd per instance on loopback, behind the
//!   MQTT front layer ([`broker::front`]) that owns the public port, keeps the
//!   live session registry ([`broker::registry`]) and authenticates devices
//!   ([`broker::device_auth`]).
//! - [`metering`]: the SQLite bill (group commit) and its reports;
//!   [`metrics`]: live counters for `GET /metrics`.
//! - [`client`]: a signing client (`mqgate call`), built on the same pure
//!   signature functions the server verifies with.
//! - [`secret`]: a string that never prints itself.

pub mod access;
pub mod actions;
pub mod broker;
pub mod client;
pub mod config;
pub mod directory;
pub mod emqx;
pub mod error;
pub mod metering;
pub mod metrics;
pub mod ram;
pub mod rpc;
pub mod secret;
pub mod server;
pub mod throttle;
