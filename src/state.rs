//! What every HTTP handler shares: the directory in force, the brokers, the
//! replay memory, the limits, the bill and the live counters.

use crate::broker::Brokers;
use crate::devices::DeviceStore;
use crate::directory::DirectoryHandle;
use crate::metering::Meter;
use crate::metrics::Metrics;
use crate::replay::ReplayGuard;
use crate::throttle::Throttle;
use std::sync::{Arc, RwLock};

pub struct AppState {
    pub directory: Arc<DirectoryHandle>,
    pub brokers: Arc<Brokers>,
    pub replay: ReplayGuard,
    /// Rebuilt when a reload changes the limits.
    pub throttle: RwLock<Arc<Throttle>>,
    pub meter: Arc<Meter>,
    /// The device-side state (group ids, credentials, tokens, blacklist),
    /// durable.
    pub devices: Arc<DeviceStore>,
    /// The trace store (queries), and where events are recorded.
    pub traces: Arc<crate::trace::TraceStore>,
    pub tracer: Arc<crate::trace::Tracer>,
    pub metrics: Metrics,
    /// `mqtt.session_expiry_secs`, shown as a 3.1.1 session's expiry.
    pub session_expiry_secs: u64,
    /// `metrics.bearer_token`: what `GET /metrics` must carry, if set.
    pub metrics_token: Option<crate::secret::Secret>,
}

impl AppState {
    pub fn throttle(&self) -> Arc<Throttle> {
        self.throttle
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
