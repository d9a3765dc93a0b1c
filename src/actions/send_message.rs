//! `SendMessage`: an application server publishes one message to the
//! instance's devices.
//!
//! ```text
//! Action=SendMessage&InstanceId=post-cn-demo&MqttTopic=devices/dev-1/cmd&Payload=reboot
//! -> {"RequestId": "...", "MsgId": "4f3c0a9e1b7d4c2a8e6f5d4c3b2a1908"}
//! ```
//!
//! The message goes through the instance's embedded broker to every client
//! subscribed to a matching filter, each at its subscription's QoS (0, 1
//! or 2: rumqttd delivers at the subscription's QoS). The
//! payload's bytes are delivered as the call sent them: Alibaba recommends
//! Base64 for binary content, and neither side decodes it. The answer comes
//! once the broker holds the message; a device that is not subscribed gets
//! nothing (no retained message, as Alibaba's page describes none).
//!
//! Limits: `Payload` up to 64 KB (65,536 bytes, Alibaba's message size
//! limit; one byte more is `InvalidParameter.Payload`), wherever it is
//! sent: in a form body (pop-core's POST, the core SDK's body parameters)
//! or in the query string, as the Tea SDK and the core SDK's request
//! classes send it. Percent-encoded, the largest payload makes a query of
//! up to about 192 KiB, over the 65,534 bytes the HTTP stack takes in a
//! URI: such a query is moved into a header before the HTTP stack reads
//! the request ([`crate::server::long_query`]) and read from there (a query
//! string over 256 KiB is `MalformedRequest`, a request head over about
//! 400 KiB is answered 431 by the HTTP stack without a body).
//! `MqttTopic` a topic name of at most
//! 1,024 bytes without wildcards (`+`, `#`) and not a `$` system topic.
//! QPS 1,000 (Alibaba's); each successful call is billed.
//!
//! In a cluster, the message goes to the node that serves the instance
//! (`cluster::placement`), over that node's command channel; the answer
//! comes once that node has it. While no node serves the instance (its
//! node died, another is taking it over), `ServiceUnavailable`.

use super::{Context, Handler};
use crate::access::Resource;
use crate::broker::{Place, Placement};
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct SendMessage;

/// Alibaba's largest message: 64 KB.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The longest topic mqgate accepts here.
pub const MAX_TOPIC_BYTES: usize = 1024;

pub struct Request {
    pub instance_id: String,
    pub topic: String,
    pub payload: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub msg_id: String,
}

impl<'a> Handler<'a> for SendMessage {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let topic = params.required("MqttTopic")?;
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(ApiError::invalid(
                "MqttTopic",
                format!("it is longer than {MAX_TOPIC_BYTES} bytes"),
            ));
        }
        if topic.contains(['+', '#']) {
            return Err(ApiError::invalid(
                "MqttTopic",
                format!("\"{topic}\" holds a wildcard (+ or #); a message goes to one topic name"),
            ));
        }
        if topic.starts_with('$') {
            return Err(ApiError::invalid(
                "MqttTopic",
                format!("\"{topic}\" is a system topic ($...); they are the broker's own"),
            ));
        }
        if topic.contains('\0') {
            return Err(ApiError::invalid("MqttTopic", "it contains a NUL character"));
        }
        let payload = params.get("Payload").ok_or_else(|| {
            ApiError::invalid("Payload", "it is missing; this action requires it")
        })?;
        if payload.is_empty() {
            return Err(ApiError::invalid("Payload", "it is empty"));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ApiError::invalid(
                "Payload",
                format!(
                    "it is {} bytes; a message holds at most {MAX_PAYLOAD_BYTES} bytes (64 KB)",
                    payload.len()
                ),
            ));
        }
        Ok(Request {
            instance_id,
            topic: topic.to_string(),
            payload: payload.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        // The MsgId is the trace's: named (and remembered for matching
        // the deliveries) before the broker has the message, recorded as
        // published once it has.
        let entering = ctx.tracer.entering(
            &request.instance_id,
            request.topic.as_bytes(),
            request.payload.as_bytes(),
        );
        let size = request.payload.len();
        // In a cluster, the node that serves the instance has its devices.
        let served_by = ctx
            .cluster
            .map(|cluster| (cluster, cluster.place(&request.instance_id)));
        match served_by {
            None | Some((_, Place::Here)) => ctx
                .broker()?
                .publish(&request.topic, bytes::Bytes::from(request.payload.into_bytes()))
                .await
                .map_err(|e| match e {
                    crate::broker::BrokerError::InvalidTopic(_) => {
                        ApiError::invalid("MqttTopic", e.to_string())
                    }
                    other => ApiError::internal(other.to_string()),
                })?,
            Some((cluster, Place::There { node, .. })) => cluster
                .publish_on(
                    &node,
                    &request.instance_id,
                    &request.topic,
                    request.payload,
                    crate::trace::events::msg_id_text(entering.msg_id),
                )
                .await
                .map_err(ApiError::from)?,
            Some((_, Place::Unplaced)) => return Err(unplaced(&request.instance_id)),
        }
        let names =
            crate::trace::EventNames::new(&request.instance_id, ctx.principal.access_key_id, "");
        ctx.tracer.record_publish(
            &entering,
            &names,
            crate::trace::MessageAction::PubApi,
            size,
            1,
        );
        let msg_id = crate::trace::events::msg_id_text(entering.msg_id);
        tracing::debug!(instance = %request.instance_id, topic = %request.topic, %msg_id, "message sent");
        Ok(Answer { msg_id })
    }
}

/// No node serves the instance just now (its node died; another takes it
/// over within seconds).
fn unplaced(instance_id: &str) -> ApiError {
    ApiError::new(
        crate::error::ErrorCode::ServiceUnavailable,
        format!(
            "The request has failed due to a temporary failure of the server: instance {instance_id} is being taken over by another node of the cluster. Try again in a few seconds."
        ),
    )
}
