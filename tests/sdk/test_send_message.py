"""SendMessage through the official SDKs, unchanged (the Tea SDK in V3 and
V1, which sends every parameter in the query string; the old core SDK's
request class, query string too, and its CommonRequest with a form body),
delivered to real MQTT clients (paho-mqtt, 3.1.1 and 5): the payload's
bytes arrive unchanged at every subscriber of a matching filter of the
instance, at its subscription's QoS, and nowhere else; the 64 KB limit is
in bytes, and the whole 64 KB fits in the query string too (percent-encoded,
longer than a URI may be); bad topics and payloads name themselves; each
call is billed."""

import base64
import datetime
import json
import os
import re
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from aliyunsdkonsmqtt.request.v20200420.SendMessageRequest import SendMessageRequest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    INSTANCE,
    OTHER_INSTANCE,
    STRICT_INSTANCE,
    device_password,
    wait_until,
)
from test_tea_sdk import MODE_IDS, MODES, tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]
MSG_ID = re.compile(r"^[0-9a-f]{32}$")
LIMIT = 65_536
# A message that is not delivered within this time is taken as not
# delivered at all (waited for only after one that was delivered).
QUIET_SECONDS = 1.0


def send(client, topic, payload, instance=INSTANCE):
    return client.send_message(
        models.SendMessageRequest(instance_id=instance, mqtt_topic=topic, payload=payload)
    ).body


def acs(gate):
    return AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, "cn-hangzhou", port=gate.http_port, auto_retry=False)


def common(gate, action, body=None, query=None):
    """The core SDK's CommonRequest by POST: `query` parameters go in the
    query string, `body` parameters in a form body (signed with them)."""
    request = CommonRequest(domain=gate.http_host, version="2020-04-20", action_name=action, product="OnsMqtt")
    request.set_protocol_type("http")
    request.set_method("POST")
    for name, value in (query or {}).items():
        request.add_query_param(name, value)
    for name, value in (body or {}).items():
        request.add_body_params(name, value)
    return request


class Listener:
    """A paho-mqtt device subscribed to some filters, recording each message
    with its QoS and retain flag."""

    def __init__(self, device, filters):
        self.device = device
        self.messages = []
        self.granted = []
        subscribed = threading.Event()

        def on_subscribe(client, userdata, mid, codes, properties):
            self.granted = [int(getattr(code, "value", code)) for code in codes]
            subscribed.set()

        device.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.qos, m.retain))
        device.client.on_subscribe = on_subscribe
        assert device.wait_connected() == 0
        device.client.subscribe(filters)
        assert subscribed.wait(5), f"no SUBACK for {filters}"

    def payloads(self):
        return [payload for _, payload, _, _ in self.messages]


def listen(device_factory, client_id, filters, protocol=mqtt.MQTTv311, **kwargs):
    return Listener(device_factory(client_id, protocol, **kwargs), filters)


def texts():
    """Payloads to send: non-ASCII UTF-8 text, Base64 of binary (Alibaba's
    advice), and characters that the query string must percent-encode."""
    return [
        "héllo wörld ✓ 温度 23°C 🚀",
        base64.b64encode(os.urandom(300)).decode(),
        'a+b c&d=e%20f?g#h/i\\j"k\'l\n\tm',
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_message_reaches_every_matching_subscriber_unchanged(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    tag = f"sm/{mode}-{protocol}"
    topic = f"{tag}/dev-1/cmd"
    name = f"GID_send@@@{mode}-{protocol}"
    # One filter of each kind, each at a QoS of its own.
    at_0 = listen(device_factory, f"{name}-q0", [(f"{tag}/#", 0)], protocol)
    at_1 = listen(device_factory, f"{name}-q1", [(f"{tag}/+/cmd", 1)], protocol)
    at_2 = listen(device_factory, f"{name}-q2", [(topic, 2)], protocol)

    payloads = texts()
    answers = [send(client, topic, p) for p in payloads]
    for answer in answers:
        assert MSG_ID.match(answer.msg_id), answer.msg_id
        assert len(answer.request_id) == 36
    assert len({a.msg_id for a in answers}) == len(answers), "a MsgId was given twice"

    expected = [p.encode() for p in payloads]
    for listener in (at_0, at_1, at_2):
        assert wait_until(lambda: len(listener.messages) >= len(expected)), listener.messages
        assert listener.payloads() == expected
        assert {t for t, _, _, _ in listener.messages} == {topic}
        assert not any(retain for _, _, _, retain in listener.messages)
    # Each at its subscription's QoS, as granted (the broker grants 2).
    assert [l.granted for l in (at_0, at_1, at_2)] == [[0], [1], [2]]
    assert [{q for _, _, q, _ in l.messages} for l in (at_0, at_1, at_2)] == [{0}, {1}, {2}]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_other_filters_and_other_instances_get_nothing(mqgate, device_factory, mode):
    client = tea(mqgate, mode)
    tag = f"sm/iso-{mode}"
    topic = f"{tag}/dev-1/cmd"
    name = f"GID_iso@@@{mode}"
    matching = listen(device_factory, f"{name}-match", [(f"{tag}/#", 1)])
    elsewhere = listen(
        device_factory,
        f"{name}-elsewhere",
        [(f"{tag}/dev-1/cmd/more", 1), (f"{tag}/+/other", 1), (f"{tag}/dev-1", 1), (f"{tag.upper()}/#", 1)],
        mqtt.MQTTv5,
    )
    # The same filter on another instance of the account (it admits only
    # created group ids) and on another account's instance.
    group = f"GID_smstrict{'v1' if mode else 'v3'}"
    client.create_group_id(models.CreateGroupIdRequest(group_id=group, instance_id=STRICT_INSTANCE))
    strict = listen(device_factory, f"{group}@@@dev", [(f"{tag}/#", 1)], instance=STRICT_INSTANCE)
    other_id = f"GID_iso@@@other-{mode}"
    other = listen(
        device_factory,
        other_id,
        [(f"{tag}/#", 1)],
        login=(f"Signature|other-key|{OTHER_INSTANCE}", device_password("other-secret", other_id)),
    )
    # This account cannot send to the other account's instance.
    with pytest.raises(ClientException) as raised:
        send(client, topic, "not yours", instance=OTHER_INSTANCE)
    assert raised.value.code == "InstancePermissionCheckFailed", raised.value.message

    send(client, topic, "only for matching filters")
    assert wait_until(lambda: matching.payloads() == [b"only for matching filters"]), matching.messages
    time.sleep(QUIET_SECONDS)
    assert (elsewhere.messages, strict.messages, other.messages) == ([], [], [])
    assert matching.payloads() == [b"only for matching filters"]


LARGEST = {
    "base64": base64.b64encode(os.urandom(LIMIT * 3 // 4)).decode(),  # 65,536 characters
    "2-byte-utf8": "é" * (LIMIT // 2),  # 32,768 characters, 65,536 bytes
    "3-byte-utf8": "€" * (LIMIT // 3) + "x",  # 21,846 characters, 65,536 bytes
}


@pytest.mark.parametrize("kind", list(LARGEST))
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_64_kb_payload_through_the_tea_sdk_arrives_whole(mqgate, device_factory, mode, kind):
    """The Tea SDK sends the payload in the query string, percent-encoded:
    up to three bytes per byte, a URI of about 200 KB, three times what the
    HTTP stack takes in one. mqgate reads it all the same."""
    payload = LARGEST[kind]
    assert len(payload.encode()) == LIMIT
    client = tea(mqgate, mode)
    topic = f"sm/big-{mode}/{kind}"
    listener = listen(device_factory, f"GID_big@@@{mode}-{kind}", [(topic, 1)], mqtt.MQTTv5)
    assert MSG_ID.match(send(client, topic, payload).msg_id)
    assert wait_until(lambda: listener.messages), "the message never arrived"
    assert len(listener.messages) == 1
    assert listener.payloads()[0] == payload.encode()


@pytest.mark.parametrize(
    "payload",
    ["x" * (LIMIT + 1), "é" * (LIMIT // 2) + "x"],
    ids=["ascii", "2-byte-utf8"],
)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_65537_bytes_through_the_tea_sdk_are_refused(mqgate, device_factory, mode, payload):
    """One byte over the limit, in the query string: the payload's own
    error, as in a form body (not the HTTP stack's 414)."""
    assert len(payload.encode()) == LIMIT + 1
    client = tea(mqgate, mode)
    topic = f"sm/toobig-{mode}"
    listener = listen(device_factory, f"GID_toobig@@@{mode}-{len(payload)}", [(topic, 1)])
    with pytest.raises(ClientException) as raised:
        send(client, topic, payload)
    e = raised.value
    assert (e.status_code, e.code) == (400, "InvalidParameter.Payload"), e.message
    assert "65537 bytes" in e.message, e.message
    # Nothing was sent (checked after a message that was).
    send(client, topic, "control")
    assert wait_until(lambda: listener.messages)
    time.sleep(QUIET_SECONDS)
    assert listener.payloads() == [b"control"]


def test_the_core_sdk_request_class_sends_the_payload_in_the_query(mqgate, device_factory):
    """onsmqtt 1.0.5's SendMessageRequest: POST, every parameter in the
    query string (a 64 KB payload fits there too: see the Tea SDK's)."""
    topic = "sm/core/query"
    listener = listen(device_factory, "GID_core@@@query", [(topic, 1)])
    request = SendMessageRequest()
    request.set_endpoint(mqgate.http_host)
    request.set_protocol_type("http")
    request.set_InstanceId(INSTANCE)
    request.set_MqttTopic(topic)
    request.set_Payload("from the core SDK: ünïcödé")
    assert request.get_method() == "POST"
    assert "Payload" in request.get_query_params() and not request.get_body_params()
    answer = json.loads(acs(mqgate).do_action_with_exception(request))
    assert MSG_ID.match(answer["MsgId"])
    assert wait_until(lambda: listener.messages)
    assert listener.payloads() == ["from the core SDK: ünïcödé".encode()]


@pytest.mark.parametrize(
    "payload",
    [
        base64.b64encode(os.urandom(LIMIT * 3 // 4)).decode(),  # 65,536 Base64 characters
        "a" * (LIMIT - 2) + "é",  # 65,535 characters, 65,536 bytes
        "€" * (LIMIT // 4) + "ab" * (LIMIT // 8),  # 3-byte characters percent-encoded: 9 bytes each
    ],
    ids=["base64", "ascii-then-2-byte", "3-byte-characters"],
)
def test_a_64_kb_payload_in_a_form_body_arrives_whole(mqgate, device_factory, payload):
    """The core SDK's CommonRequest with add_body_params: POST, the
    parameters in an application/x-www-form-urlencoded body."""
    assert len(payload.encode()) == LIMIT
    topic = "sm/core/body"
    listener = listen(device_factory, "GID_core@@@body", [(topic, 1)], mqtt.MQTTv5)
    answer = json.loads(acs(mqgate).do_action_with_exception(
        common(mqgate, "SendMessage", body={"InstanceId": INSTANCE, "MqttTopic": topic, "Payload": payload})
    ))
    assert MSG_ID.match(answer["MsgId"])
    assert wait_until(lambda: listener.messages), "the message never arrived"
    assert len(listener.messages) == 1
    assert listener.payloads()[0] == payload.encode()


@pytest.mark.parametrize(
    "payload",
    ["a" * (LIMIT - 1) + "é", "x" * (LIMIT + 1)],
    ids=["65536-characters-65537-bytes", "ascii"],
)
def test_65537_bytes_are_refused(mqgate, device_factory, payload):
    assert len(payload.encode()) == LIMIT + 1
    topic = "sm/core/toobig"
    listener = listen(device_factory, "GID_core@@@toobig", [(topic, 1)])
    request = common(mqgate, "SendMessage", body={"InstanceId": INSTANCE, "MqttTopic": topic, "Payload": payload})
    with pytest.raises(ServerException) as raised:
        acs(mqgate).do_action_with_exception(request)
    e = raised.value
    assert (e.get_http_status(), e.get_error_code()) == (400, "InvalidParameter.Payload"), e
    assert "65537 bytes" in e.get_error_msg(), e.get_error_msg()
    # Nothing was sent (checked after a message that was).
    send(tea(mqgate, None), topic, "control")
    assert wait_until(lambda: listener.messages)
    time.sleep(QUIET_SECONDS)
    assert listener.payloads() == [b"control"]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_past_the_query_string_limit_the_tea_sdk_is_told(mqgate, mode):
    """The Tea SDK puts the payload in the query string: over 256 KiB of
    query (here 90,000 bytes of payload, nine bytes a character
    percent-encoded), mqgate answers MalformedRequest before it reads the
    payload."""
    client = tea(mqgate, mode)
    with pytest.raises(ClientException) as raised:
        send(client, "sm/long", "€" * 30_000)
    assert (raised.value.status_code, raised.value.code) == (400, "MalformedRequest"), raised.value.message
    assert "262144 bytes" in raised.value.message


@pytest.mark.parametrize(
    "topic, payload, parameter",
    [
        ("a/+", "p", "MqttTopic"),
        ("a/#", "p", "MqttTopic"),
        ("#", "p", "MqttTopic"),
        ("$SYS/x", "p", "MqttTopic"),
        ("t/" + "x" * 1023, "p", "MqttTopic"),
        ("a/b", "", "Payload"),
        ("a/b", None, "Payload"),
    ],
    ids=["plus", "hash", "hash-alone", "system-topic", "1025-bytes", "empty-payload", "no-payload"],
)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_bad_input_names_the_parameter(mqgate, mode, topic, payload, parameter):
    with pytest.raises(ClientException) as raised:
        send(tea(mqgate, mode), topic, payload)
    e = raised.value
    assert (e.status_code, e.code) == (400, f"InvalidParameter.{parameter}"), e.message
    assert parameter in e.message


def sent_messages_billed(gate):
    """SendMessage transactions of the instance on the bill, from
    DescribeMeteringReport over the hour around now."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    request = common(gate, "DescribeMeteringReport", query={
        "InstanceId": INSTANCE,
        "StartTime": (now - datetime.timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "EndTime": (now + datetime.timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "GroupBy": "action",
    })
    rows = json.loads(acs(gate).do_action_with_exception(request))["Rows"]
    return sum(r["Transactions"] for r in rows if r["Action"] == "SendMessage")


def test_each_call_is_billed_and_refusals_are_not(mqgate, device_factory):
    client = tea(mqgate, None)
    topic = "sm/bill/t"
    listener = listen(device_factory, "GID_bill@@@dev", [(topic, 0)])
    before = sent_messages_billed(mqgate)
    for i in range(3):
        send(client, topic, f"billed {i}")
    for bad_topic, payload in [("sm/bill/+", "x"), (topic, "")]:
        with pytest.raises(ClientException):
            send(client, bad_topic, payload)
    assert sent_messages_billed(mqgate) == before + 3
    assert wait_until(lambda: len(listener.messages) == 3)
