//! A client's subscriptions, and subscribing or unsubscribing on its
//! behalf: the broker gets a real SUBSCRIBE or UNSUBSCRIBE on the client's
//! connection ([`crate::broker::InstanceBroker::subscribe_for`]), which
//! lasts as long as that connection. [`super::calls`] serves them.

use super::EmqxError;
use crate::broker::registry::{ProtocolVersion, SubscriptionOptions};
use crate::broker::{BrokerError, InstanceBroker};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn subscription_object(clientid: &str, topic: &str, o: &SubscriptionOptions, node: &str) -> Value {
    json!({"topic": topic, "qos": o.qos, "nl": o.nl, "rap": o.rap, "rh": o.rh, "node": node, "clientid": clientid})
}

/// A client's subscriptions, from `broker`'s sessions.
pub fn subscriptions_body(
    broker: &InstanceBroker,
    clientid: &str,
    node: &str,
) -> Result<Value, EmqxError> {
    let view = broker
        .sessions
        .view(clientid)
        .ok_or_else(EmqxError::client_not_found)?;
    let list: Vec<Value> = view
        .subscriptions
        .iter()
        .map(|(topic, o)| subscription_object(clientid, topic, o, node))
        .collect();
    Ok(Value::Array(list))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    topic: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    nl: u8,
    #[serde(default)]
    rap: u8,
    #[serde(default)]
    rh: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeBody {
    pub(super) topic: String,
}

/// The options of one subscription, checked against what MQTT allows and
/// what the client's protocol can carry.
fn check_subscription(
    body: &SubscribeBody,
    protocol: ProtocolVersion,
) -> Result<SubscriptionOptions, EmqxError> {
    if !rumqttd::protocol::valid_filter(&body.topic) {
        return Err(EmqxError::invalid(format!(
            "topic {:?} is not a valid topic filter",
            body.topic
        )));
    }
    if body.qos > 2 {
        return Err(EmqxError::invalid(format!(
            "qos must be 0, 1 or 2, not {}",
            body.qos
        )));
    }
    if body.nl > 1 || body.rap > 1 {
        return Err(EmqxError::invalid("nl and rap must be 0 or 1"));
    }
    if body.rh > 2 {
        return Err(EmqxError::invalid("rh must be 0, 1 or 2"));
    }
    if body.nl == 1 && body.topic.starts_with("$share/") {
        return Err(EmqxError::invalid(
            "nl=1 is not allowed on a shared subscription ($share/...)",
        ));
    }
    if protocol == ProtocolVersion::V311 && (body.nl, body.rap, body.rh) != (0, 0, 0) {
        return Err(EmqxError::invalid(
            "nl, rap and rh are MQTT 5 subscription options; this client speaks MQTT 3.1.1",
        ));
    }
    Ok(SubscriptionOptions {
        qos: body.qos,
        nl: body.nl,
        rap: body.rap,
        rh: body.rh,
    })
}

/// What a broker refusal means to an EMQX caller.
fn broker_error(e: BrokerError) -> EmqxError {
    match e {
        BrokerError::NotConnected => EmqxError::client_not_found(),
        BrokerError::NoAcknowledgement => EmqxError::unavailable(format!("{e}; try again")),
        other => EmqxError::bad_request(format!("cannot send the request: {other}")),
    }
}

/// Subscribes `clientid` (connected to `broker`) to what `bodies` name: the
/// subscriptions granted.
pub(super) async fn subscribe_all(
    broker: &InstanceBroker,
    clientid: &str,
    bodies: Vec<SubscribeBody>,
    node: &str,
) -> Result<Vec<Value>, EmqxError> {
    let protocol = broker
        .client_protocol(clientid)
        .ok_or_else(EmqxError::client_not_found)?;
    if bodies.is_empty() {
        return Err(EmqxError::bad_request("no subscriptions given"));
    }
    let mut filters = Vec::new();
    for body in &bodies {
        let options = check_subscription(body, protocol)?;
        filters.push((body.topic.clone(), options));
    }
    let codes = broker
        .subscribe_for(clientid, filters.clone())
        .await
        .map_err(broker_error)?;
    let mut out = Vec::new();
    for (i, (topic, options)) in filters.iter().enumerate() {
        match codes.get(i) {
            Some(code) if *code < 0x80 => {
                let granted = SubscriptionOptions {
                    qos: *code,
                    ..*options
                };
                out.push(subscription_object(clientid, topic, &granted, node));
            }
            code => {
                return Err(EmqxError::bad_request(format!(
                    "the broker refused the subscription to {topic} (reason code {})",
                    code.map_or("none".to_string(), |c| format!("0x{c:02X}"))
                )));
            }
        }
    }
    Ok(out)
}

/// Unsubscribes `clientid` (connected to `broker`) from `topics`.
pub(super) async fn unsubscribe_all(
    broker: &InstanceBroker,
    clientid: &str,
    topics: Vec<String>,
) -> Result<(), EmqxError> {
    if broker.client_protocol(clientid).is_none() {
        return Err(EmqxError::client_not_found());
    }
    if topics.is_empty() {
        return Err(EmqxError::bad_request("no topics given"));
    }
    if let Some(bad) = topics.iter().find(|t| !rumqttd::protocol::valid_filter(t)) {
        return Err(EmqxError::invalid(format!(
            "topic {bad:?} is not a valid topic filter"
        )));
    }
    broker
        .unsubscribe_for(clientid, topics)
        .await
        .map_err(broker_error)
}
