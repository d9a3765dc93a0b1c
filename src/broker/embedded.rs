//! The embedded rumqttd brokers: one router per instance, with an
//! in-process link mqgate publishes through, on a runtime of their own.
//! Clients reach a router through the front layer only, each on a link of
//! its own ([`super::front`]); rumqttd's network listeners are not used.
//!
//! Why a runtime of their own: the front layer's connections and rumqttd's
//! routers' work run there, so that a storm of MQTT connections can slow
//! other MQTT connections down but cannot hold the workers that serve the
//! HTTP API. rumqttd cannot stop a router (its thread runs until the
//! process ends), so at shutdown this runtime is let go without waiting
//! ([`BrokerRuntime::shutdown`]).

use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::{Router, RouterConfig};
use std::sync::Mutex;

/// Why an instance's embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("the router refused mqgate's publisher link: {0}")]
    Publisher(String),
}

/// The runtime the front layer's connections run on, beside rumqttd's
/// router threads. As many workers as cores: linking a connection to a
/// router no longer blocks a worker (`build_async`).
pub struct BrokerRuntime {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for BrokerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerRuntime")
    }
}

impl BrokerRuntime {
    pub fn start() -> std::io::Result<BrokerRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("mqgate-rumqttd")
            .enable_all()
            .build()?;
        Ok(BrokerRuntime {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Stops the runtime without waiting for its tasks (safe from async
    /// code). Idempotent.
    pub fn shutdown(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl Drop for BrokerRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One instance's running rumqttd router and its publisher link.
pub struct EmbeddedBroker {
    /// An in-process client of the router, for messages mqgate publishes.
    pub publisher: LinkTx,
    /// The publisher's receiving half: kept so that the router keeps the
    /// link (it receives nothing, having no subscriptions).
    pub publisher_rx: LinkRx,
    /// The router's input: the front layer links each client through it.
    pub router: rumqttd::RouterTx,
}

/// Starts a router for one instance and its publisher link.
pub async fn start(
    router_id: usize,
    mqtt: &crate::config::MqttConfig,
) -> Result<EmbeddedBroker, EmbeddedError> {
    let router = Router::new(
        router_id,
        RouterConfig {
            // mqgate's own publisher link is one of the router's
            // connections.
            max_connections: mqtt.max_connections_per_instance.saturating_add(1),
            max_outgoing_packet_count: 200,
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
    );
    let router_tx = router.spawn();
    let publisher_id = format!("mqgate-publisher-{}", uuid::Uuid::new_v4().simple());
    let (publisher, publisher_rx, _) = LinkBuilder::new(&publisher_id, router_tx.clone())
        .build_async()
        .await
        .map_err(|e| EmbeddedError::Publisher(e.to_string()))?;
    Ok(EmbeddedBroker {
        publisher,
        publisher_rx,
        router: router_tx,
    })
}
