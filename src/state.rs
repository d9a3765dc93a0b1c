//! What every HTTP handler shares: the directory in force, the brokers, the
//! replay memory, the limits, the bill and the live counters.

use crate::api::Limit;
use crate::broker::Brokers;
use crate::cluster::{Admission, Cluster, Nonce, StoreError};
use crate::devices::DeviceStore;
use crate::directory::DirectoryHandle;
use crate::metering::Meter;
use crate::metrics::Metrics;
use crate::replay::ReplayGuard;
use crate::throttle::{Throttle, Throttled};
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
    /// `[cluster]`: the Redis this node shares replay nonces and QPS
    /// limits with. `None`: the node stands alone.
    pub cluster: Option<Arc<Cluster>>,
}

impl AppState {
    pub fn throttle(&self) -> Arc<Throttle> {
        self.throttle
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Flow control for one call of `account_id` under `limit`: this
    /// node's bucket, or in a cluster the cluster's one (the same rate
    /// and burst), in the same round trip that claims a signed call's
    /// `nonce` for every node (a nonce another node claimed:
    /// [`Admitted::Replayed`]). `Err`: the cluster's store did not answer.
    pub async fn admit(
        &self,
        account_id: &str,
        limit: Limit,
        nonce: Option<Nonce<'_>>,
    ) -> Result<Admitted, StoreError> {
        let throttle = self.throttle();
        let Some(cluster) = &self.cluster else {
            return Ok(match throttle.check(account_id, limit) {
                Ok(()) => Admitted::Yes,
                Err(refused) => Admitted::Throttled(refused),
            });
        };
        let rate_and_burst = throttle.rate_of(account_id, limit);
        Ok(
            match cluster
                .admit(account_id, limit, rate_and_burst, nonce)
                .await?
            {
                Admission::Admitted => Admitted::Yes,
                Admission::Replayed => Admitted::Replayed,
                Admission::Throttled(wait) => {
                    let (rate, burst) = rate_and_burst.unwrap_or_default();
                    Admitted::Throttled(Throttled {
                        limit,
                        rate,
                        burst,
                        wait: wait.max(std::time::Duration::from_millis(1)),
                    })
                }
            },
        )
    }
}

/// What flow control (and, in a cluster, the shared nonce claim) says of a
/// call.
#[derive(Debug)]
pub enum Admitted {
    Yes,
    Throttled(Throttled),
    /// In a cluster: another node (or this one) accepted the same nonce.
    Replayed,
}
