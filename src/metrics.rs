//! Live counters for `GET /metrics` (Prometheus text format 0.0.4): calls by
//! action and outcome, their latency, throttled calls, connected clients and
//! messages per instance, and the batch view's cache hit rate.

use crate::api::Action;
use crate::broker::Brokers;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct Metrics {
    /// Successful calls by action ([`Action::index`]): the path every
    /// successful call takes, lock-free.
    ok_calls: [AtomicU64; Action::ALL.len()],
    /// action -> outcome code -> calls. A few dozen keys at most: a mutex
    /// held for one map update is cheaper than anything cleverer. Two
    /// levels so that a known pair is found by `&str`, without allocating.
    calls: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// Calls per latency bucket, not cumulative (one increment per call;
    /// `render` sums them into Prometheus' cumulative buckets).
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    throttled: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ok_calls: std::array::from_fn(|_| AtomicU64::new(0)),
            calls: Mutex::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records one call: its action ("-" if none was read), its outcome
    /// ("OK" or the error code) and how long it took.
    pub fn record(&self, action: &str, outcome: &str, elapsed: Duration, throttled: bool) {
        if outcome == "OK"
            && let Some(known) = Action::ALL.iter().find(|a| a.name() == action)
        {
            return self.record_ok(*known, elapsed);
        }
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let by_outcome = match calls.get_mut(action) {
                Some(by_outcome) => by_outcome,
                None => calls.entry(action.to_string()).or_default(),
            };
            match by_outcome.get_mut(outcome) {
                Some(n) => *n += 1,
                None => {
                    by_outcome.insert(outcome.to_string(), 1);
                }
            }
        }
        self.record_latency(elapsed);
        if throttled {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one successful call of `action` and how long it took.
    pub fn record_ok(&self, action: Action, elapsed: Duration) {
        self.ok_calls[action as usize].fetch_add(1, Ordering::Relaxed);
        self.record_latency(elapsed);
    }

    fn record_latency(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The latency histogram, cumulative as Prometheus wants it.
    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP mqgate_rpc_call_duration_seconds Time from request to answer."
        );
        let _ = writeln!(out, "# TYPE mqgate_rpc_call_duration_seconds histogram");
        let mut cumulative = 0;
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "mqgate_rpc_call_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "mqgate_rpc_call_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "mqgate_rpc_call_duration_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "mqgate_rpc_call_duration_seconds_count {count}");
    }

    /// The exposition text.
    pub fn render(&self, brokers: &Brokers, cache_hits: (u64, u64)) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP mqgate_rpc_calls_total RPC calls by action and outcome (OK or the error code)."
        );
        let _ = writeln!(out, "# TYPE mqgate_rpc_calls_total counter");
        let mut calls: Vec<((String, String), u64)> = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(action, by_outcome)| {
                by_outcome
                    .iter()
                    .map(|(outcome, n)| ((action.clone(), outcome.clone()), *n))
            })
            .collect();
        for (action, n) in Action::ALL.iter().zip(&self.ok_calls) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                calls.push(((action.name().to_string(), "OK".to_string()), n));
            }
        }
        calls.sort();
        for ((action, outcome), n) in calls {
            let _ = writeln!(
                out,
                "mqgate_rpc_calls_total{{action=\"{}\",outcome=\"{}\"}} {n}",
                escape(&action),
                escape(&outcome)
            );
        }
        self.render_latency(&mut out);
        let _ = writeln!(
            out,
            "# HELP mqgate_rpc_throttled_total Calls refused by flow control (SystemOverFlow)."
        );
        let _ = writeln!(out, "# TYPE mqgate_rpc_throttled_total counter");
        let _ = writeln!(
            out,
            "mqgate_rpc_throttled_total {}",
            self.throttled.load(Ordering::Relaxed)
        );

        let mut brokers = brokers.all();
        brokers.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let _ = writeln!(
            out,
            "# HELP mqgate_mqtt_connected_clients Clients connected now, per instance."
        );
        let _ = writeln!(out, "# TYPE mqgate_mqtt_connected_clients gauge");
        for b in &brokers {
            let _ = writeln!(
                out,
                "mqgate_mqtt_connected_clients{{instance=\"{}\"}} {}",
                escape(&b.instance_id),
                b.sessions.len()
            );
        }
        let _ = writeln!(
            out,
            "# HELP mqgate_mqtt_messages_total Messages published by clients and delivered to clients, per instance and QoS, since start."
        );
        let _ = writeln!(out, "# TYPE mqgate_mqtt_messages_total counter");
        for b in &brokers {
            let (published, delivered) = b.meter.totals();
            for (direction, by_qos) in [("published", published), ("delivered", delivered)] {
                for (qos, n) in by_qos.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "mqgate_mqtt_messages_total{{instance=\"{}\",direction=\"{direction}\",qos=\"{qos}\"}} {n}",
                        escape(&b.instance_id)
                    );
                }
            }
        }
        let (hits, misses) = cache_hits;
        let _ = writeln!(
            out,
            "# HELP mqgate_batch_cache_lookups_total Lookups of the BatchQuerySessionByClientIds status cache."
        );
        let _ = writeln!(out, "# TYPE mqgate_batch_cache_lookups_total counter");
        let _ = writeln!(
            out,
            "mqgate_batch_cache_lookups_total{{result=\"hit\"}} {hits}"
        );
        let _ = writeln!(
            out,
            "mqgate_batch_cache_lookups_total{{result=\"miss\"}} {misses}"
        );
        let _ = writeln!(
            out,
            "# HELP mqgate_batch_cache_hit_ratio Hits over lookups since start (0 before any)."
        );
        let _ = writeln!(out, "# TYPE mqgate_batch_cache_hit_ratio gauge");
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        let _ = writeln!(out, "mqgate_batch_cache_hit_ratio {ratio}");
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_and_calls_are_counted_per_action_and_outcome() {
        let metrics = Metrics::default();
        metrics.record("A", "OK", Duration::from_micros(300), false);
        metrics.record("A", "OK", Duration::from_millis(3), false);
        metrics.record("A", "SystemOverFlow", Duration::from_secs(10), true);
        let mut out = String::new();
        metrics.render_latency(&mut out);
        for line in [
            "mqgate_rpc_call_duration_seconds_bucket{le=\"0.0005\"} 1\n",
            "mqgate_rpc_call_duration_seconds_bucket{le=\"0.0025\"} 1\n",
            "mqgate_rpc_call_duration_seconds_bucket{le=\"0.005\"} 2\n",
            "mqgate_rpc_call_duration_seconds_bucket{le=\"2.5\"} 2\n",
            "mqgate_rpc_call_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "mqgate_rpc_call_duration_seconds_count 3\n",
        ] {
            assert!(out.contains(line), "{line} missing from {out}");
        }
        let calls = metrics.calls.lock().unwrap();
        assert_eq!(calls["A"]["OK"], 2);
        assert_eq!(calls["A"]["SystemOverFlow"], 1);
        assert_eq!(metrics.throttled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_known_actions_successes_are_counted_without_the_map() {
        let metrics = Metrics::default();
        metrics.record_ok(Action::QuerySessionByClientId, Duration::from_micros(10));
        metrics.record(
            "QuerySessionByClientId",
            "OK",
            Duration::from_micros(10),
            false,
        );
        let index = Action::QuerySessionByClientId as usize;
        assert_eq!(metrics.ok_calls[index].load(Ordering::Relaxed), 2);
        assert!(metrics.calls.lock().unwrap().is_empty());
        assert_eq!(metrics.latency_count.load(Ordering::Relaxed), 2);
    }
}
