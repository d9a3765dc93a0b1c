"""The message traces through the official Tea SDK (V3 and V1) with real MQTT
clients (paho-mqtt, 3.1.1 and 5): a SendMessage's MsgId is found by
QueryMqttTraceMessagePublish (pub_api) and QueryMqttTraceMessageSubscribe
lists its push to each subscriber (sub) and each QoS 1/2 acknowledgement
(ack); a device's message is found through its publisher's
QueryMqttTraceMessageOfClient (pub_mqtt); a subscriber that never
acknowledges (paho's manual_ack) is traced as drop when it leaves; pages
walk every event exactly once in either order; bad MsgIds, ranges and pages
name their parameter."""

import calendar
import re
import secrets
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import ACCESS_KEY_ID, INSTANCE, wait_until
from test_tea_sdk import MODE_IDS, MODES, tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]
# A second subscriber speaks the other protocol.
OTHER_PROTOCOL = {mqtt.MQTTv311: mqtt.MQTTv5, mqtt.MQTTv5: mqtt.MQTTv311}
REGION = "cn-hangzhou"
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
MSG_ID = re.compile(r"^[0-9a-f]{32}$")
INFO = {
    "pub_mqtt": "Pub From Mqtt Client",
    "pub_api": "Pub From OpenAPI",
    "sub": "Push To Mqtt Client",
    "ack": "Acked By Mqtt Client",
    "drop": "Dropped: the client left before acknowledging",
}
# Events are committed within ~100 ms; this is the most a test waits.
SETTLE_SECONDS = 10.0


def now_ms():
    return int(time.time() * 1000)


def window(begin, end):
    """The range of a query: the last 10 minutes to now unless given."""
    end = now_ms() if end is None else end
    return (end - 600_000 if begin is None else begin), end


def publishes(client, msg_id, begin=None, end=None):
    begin, end = window(begin, end)
    return client.query_mqtt_trace_message_publish(
        models.QueryMqttTraceMessagePublishRequest(
            instance_id=INSTANCE,
            mqtt_region_id=REGION,
            msg_id=msg_id,
            begin_time=begin,
            end_time=end,
        )
    ).body


def deliveries(client, msg_id, client_id=None, begin=None, end=None, page=1, size=100, reverse=None):
    begin, end = window(begin, end)
    return client.query_mqtt_trace_message_subscribe(
        models.QueryMqttTraceMessageSubscribeRequest(
            instance_id=INSTANCE,
            mqtt_region_id=REGION,
            msg_id=msg_id,
            client_id=client_id,
            begin_time=begin,
            end_time=end,
            current_page=page,
            page_size=size,
            reverse=reverse,
        )
    ).body


def of_client(client, client_id, begin=None, end=None, page=1, size=100, reverse=None):
    begin, end = window(begin, end)
    return client.query_mqtt_trace_message_of_client(
        models.QueryMqttTraceMessageOfClientRequest(
            instance_id=INSTANCE,
            mqtt_region_id=REGION,
            client_id=client_id,
            begin_time=begin,
            end_time=end,
            current_page=page,
            page_size=size,
            reverse=reverse,
        )
    ).body


def parse_time(text):
    """Epoch ms of an answer's `Time`, read as UTC."""
    assert TIME.match(text), text
    seconds, millis = text.split(".")
    return calendar.timegm(time.strptime(seconds, "%Y-%m-%d %H:%M:%S")) * 1000 + int(millis)


def check_entry(entry, since):
    """What every entry must hold: a known Action, its ActionCode and
    ActionInfo, a MsgId as SendMessage gives them, and a UTC Time between
    `since` (before the test caused it) and now."""
    assert entry.action in INFO, entry.to_map()
    assert entry.action_code == "mqtt.trace.action.msg." + entry.action.replace("_", "."), entry.to_map()
    assert entry.action_info == INFO[entry.action], entry.to_map()
    assert MSG_ID.match(entry.msg_id), entry.to_map()
    assert since <= parse_time(entry.time) <= now_ms(), (entry.time, since)


def settled(fetch, done, what):
    """fetch() again and again until done(its answer) (events are committed
    within ~100 ms); the last answer."""
    last = {}

    def check():
        last["body"] = fetch()
        return done(last["body"])

    assert wait_until(check, SETTLE_SECONDS), f"{what}: {last['body'].to_map()}"
    return last["body"]


def who_did_what(entries):
    return sorted((e.client_id, e.action) for e in entries)


def actions_of(entries, client_id):
    """The actions of one client among entries, in their order."""
    return [e.action for e in entries if e.client_id == client_id]


def send(client, topic, payload):
    body = client.send_message(
        models.SendMessageRequest(instance_id=INSTANCE, mqtt_topic=topic, payload=payload)
    ).body
    assert MSG_ID.match(body.msg_id), body.msg_id
    return body.msg_id


class Subscriber:
    """A paho-mqtt device subscribed to some filters, recording each message
    it receives (paho's MQTTMessage: topic, payload, qos, mid). With
    manual_ack, paho acknowledges nothing unless told to (`ack`)."""

    def __init__(self, device_factory, client_id, protocol, filters, manual_ack=False):
        self.client_id = client_id
        self.device = device_factory(client_id, protocol)
        self.messages = []
        subscribed = threading.Event()
        granted = []

        def on_subscribe(client, userdata, mid, codes, properties):
            granted.extend(int(getattr(code, "value", code)) for code in codes)
            subscribed.set()

        client = self.device.client
        client.manual_ack_set(manual_ack)
        client.on_message = lambda c, u, m: self.messages.append(m)
        client.on_subscribe = on_subscribe
        assert self.device.wait_connected() == 0
        client.subscribe(filters)
        assert subscribed.wait(5), f"no SUBACK for {filters}"
        assert granted == [qos for _, qos in filters], granted

    def wait_for(self, count):
        assert wait_until(lambda: len(self.messages) >= count), f"{self.client_id}: {len(self.messages)} message(s)"

    def ack(self, message):
        assert self.device.client.ack(message.mid, message.qos) == mqtt.MQTT_ERR_SUCCESS

    def leave(self):
        """DISCONNECT, and wait until paho has seen the connection end."""
        self.device.client.disconnect()
        self.device.wait_disconnected()


def publisher(device_factory, client_id, protocol):
    device = device_factory(client_id, protocol)
    assert device.wait_connected() == 0
    return device


def publish(device, topic, payload, qos=1):
    info = device.client.publish(topic, payload, qos=qos)
    info.wait_for_publish(5)
    assert info.is_published(), f"{topic}: not published"


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_sent_message_is_traced_from_the_api_to_each_subscriber(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    other = OTHER_PROTOCOL[protocol]
    tag = f"tm/api-{mode}-{protocol}"
    topic = f"{tag}/dev-1/cmd"
    name = f"GID_tmapi@@@{mode}-{protocol}"
    # paho acknowledges QoS 1 (PUBACK) and QoS 2 (PUBREC ... PUBCOMP) by itself.
    at_1 = Subscriber(device_factory, f"{name}-q1", protocol, [(f"{tag}/+/cmd", 1)])
    at_0 = Subscriber(device_factory, f"{name}-q0", other, [(f"{tag}/#", 0)])
    at_2 = Subscriber(device_factory, f"{name}-q2", other, [(topic, 2)])
    subscribers = (at_1, at_0, at_2)

    since = now_ms()
    payload = f"traced: {tag} ✓"
    msg_id = send(client, topic, payload)
    for s in subscribers:
        s.wait_for(1)
        assert [(m.topic, m.payload) for m in s.messages] == [(topic, payload.encode())]
    assert [s.messages[0].qos for s in subscribers] == [1, 0, 2]

    # Who published it: the caller, through the API.
    body = settled(lambda: publishes(client, msg_id), lambda b: b.message_trace_lists, f"publish of {msg_id}")
    assert len(body.request_id) == 36
    assert [(e.msg_id, e.client_id, e.action) for e in body.message_trace_lists] == [(msg_id, ACCESS_KEY_ID, "pub_api")]
    check_entry(body.message_trace_lists[0], since)

    # To whom it was pushed, and who acknowledged it (QoS 1 and 2, not 0).
    want = sorted([
        (at_1.client_id, "sub"), (at_1.client_id, "ack"),
        (at_0.client_id, "sub"),
        (at_2.client_id, "sub"), (at_2.client_id, "ack"),
    ])
    body = settled(
        lambda: deliveries(client, msg_id),
        lambda b: who_did_what(b.message_trace_lists) == want,
        f"deliveries of {msg_id}",
    )
    entries = body.message_trace_lists
    assert (body.total, body.current_page, body.page_size) == (5, 1, 100)
    assert len(body.request_id) == 36
    for e in entries:
        check_entry(e, since)
        assert e.msg_id == msg_id
    # Oldest first; each acknowledgement after its push.
    times = [parse_time(e.time) for e in entries]
    assert times == sorted(times)
    assert [actions_of(entries, s.client_id) for s in subscribers] == [["sub", "ack"], ["sub"], ["sub", "ack"]]

    # Reverse=true: newest first.
    body = deliveries(client, msg_id, reverse=True)
    assert [e.to_map() for e in body.message_trace_lists] == [e.to_map() for e in entries[::-1]]

    # ClientId narrows to one subscriber; one it was not pushed to has none.
    for s in subscribers:
        body = deliveries(client, msg_id, client_id=s.client_id)
        assert [e.to_map() for e in body.message_trace_lists] == [
            e.to_map() for e in entries if e.client_id == s.client_id
        ]
        assert body.total == len(body.message_trace_lists)
    body = deliveries(client, msg_id, client_id=f"{name}-nobody")
    assert (body.total, body.message_trace_lists) == (0, [])

    # The MsgId in capitals is the same message.
    body = deliveries(client, msg_id.upper())
    assert [e.to_map() for e in body.message_trace_lists] == [e.to_map() for e in entries]

    # The subscriber's own trace holds the push and its acknowledgement.
    body = of_client(client, at_1.client_id)
    assert [(e.msg_id, e.action) for e in body.message_of_client_list] == [(msg_id, "sub"), (msg_id, "ack")]

    # A well-formed MsgId nothing is known of: empty lists.
    unknown = secrets.token_hex(16)
    assert publishes(client, unknown).message_trace_lists == []
    body = deliveries(client, unknown)
    assert (body.total, body.message_trace_lists) == (0, [])
    # The range bounds the events: one that ends before the message was sent.
    assert publishes(client, msg_id, end=since - 1).message_trace_lists == []
    assert deliveries(client, msg_id, end=since - 1).total == 0


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_device_message_is_found_through_its_publisher(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    tag = f"tm/dev-{mode}-{protocol}"
    topic = f"{tag}/up"
    name = f"GID_tmdev@@@{mode}-{protocol}"
    listener = Subscriber(device_factory, f"{name}-sub", OTHER_PROTOCOL[protocol], [(f"{tag}/#", 1)])
    device = publisher(device_factory, f"{name}-pub", protocol)

    since = now_ms()
    publish(device, topic, f"from {name}".encode())
    listener.wait_for(1)

    # The publisher's trace holds what it published, with its MsgId.
    body = settled(
        lambda: of_client(client, f"{name}-pub"),
        lambda b: b.message_of_client_list,
        "the publisher's trace",
    )
    assert (body.total, body.current_page, body.page_size) == (1, 1, 100)
    entry = body.message_of_client_list[0]
    check_entry(entry, since)
    assert (entry.client_id, entry.action) == (f"{name}-pub", "pub_mqtt")
    msg_id = entry.msg_id

    body = publishes(client, msg_id)
    assert [e.to_map() for e in body.message_trace_lists] == [entry.to_map()]

    body = settled(
        lambda: deliveries(client, msg_id),
        lambda b: len(b.message_trace_lists) >= 2,
        f"deliveries of {msg_id}",
    )
    assert [(e.msg_id, e.client_id, e.action) for e in body.message_trace_lists] == [
        (msg_id, listener.client_id, "sub"),
        (msg_id, listener.client_id, "ack"),
    ]
    for e in body.message_trace_lists:
        check_entry(e, since)
    # The publisher was pushed nothing.
    assert deliveries(client, msg_id, client_id=f"{name}-pub").total == 0


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
def test_a_delivery_never_acknowledged_is_traced_as_dropped(mqgate, device_factory, protocol):
    """paho's manual_ack: it receives the message and sends no PUBACK (QoS 1)
    or PUBCOMP (QoS 2) until told to."""
    tag = f"tm/drop-{protocol}"
    topic = f"{tag}/cmd"
    name = f"GID_tmdrop@@@{protocol}"
    silent_1 = Subscriber(device_factory, f"{name}-silent-q1", protocol, [(topic, 1)], manual_ack=True)
    silent_2 = Subscriber(device_factory, f"{name}-silent-q2", protocol, [(topic, 2)], manual_ack=True)
    late = Subscriber(device_factory, f"{name}-late", protocol, [(topic, 1)], manual_ack=True)
    subscribers = (silent_1, silent_2, late)

    since = now_ms()
    msg_id = send(tea(mqgate, None), topic, f"unacknowledged {tag}")
    for s in subscribers:
        s.wait_for(1)
    pushed = sorted((s.client_id, "sub") for s in subscribers)
    settled(
        lambda: deliveries(tea(mqgate, None), msg_id),
        lambda b: who_did_what(b.message_trace_lists) == pushed,
        "the pushes",
    )

    # One acknowledges late: its ack is traced; the others still have none.
    late.ack(late.messages[0])
    settled(
        lambda: deliveries(tea(mqgate, None), msg_id),
        lambda b: who_did_what(b.message_trace_lists) == sorted(pushed + [(late.client_id, "ack")]),
        "the late ack",
    )
    # It leaves first: nothing of it was left unacknowledged. (Its drop, were
    # there one, would be queued before the others leave, and so committed
    # no later than theirs.)
    late.leave()
    for s in (silent_1, silent_2):
        s.leave()

    for mode in MODES:
        client = tea(mqgate, mode)
        body = settled(
            lambda: deliveries(client, msg_id),
            lambda b: len(b.message_trace_lists) >= 6,
            "the drops",
        )
        entries = body.message_trace_lists
        assert body.total == 6
        for e in entries:
            check_entry(e, since)
            assert e.msg_id == msg_id
        assert [actions_of(entries, s.client_id) for s in subscribers] == [
            ["sub", "drop"],
            ["sub", "drop"],
            ["sub", "ack"],
        ]
        body = deliveries(client, msg_id, client_id=silent_2.client_id, reverse=True)
        assert [e.action for e in body.message_trace_lists] == ["drop", "sub"]
        body = of_client(client, silent_1.client_id)
        assert [(e.msg_id, e.action) for e in body.message_of_client_list] == [(msg_id, "sub"), (msg_id, "drop")]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
def test_pages_of_a_client_walk_every_message_once_in_either_order(mqgate, device_factory, protocol):
    client_id = f"GID_tmpages@@@{protocol}"
    device = publisher(device_factory, client_id, protocol)
    since = now_ms()
    for i in range(12):
        publish(device, f"tm/pages-{protocol}/{i}", f"message {i}".encode())
    v3 = tea(mqgate, None)
    settled(lambda: of_client(v3, client_id), lambda b: b.total == 12, "12 publishes")
    end = now_ms()
    begin = end - 600_000

    for mode in MODES:
        client = tea(mqgate, mode)
        walks = {}
        for reverse in (False, True):
            walked, page = [], 1
            while True:
                body = of_client(client, client_id, begin, end, page=page, size=5, reverse=reverse)
                assert (body.total, body.current_page, body.page_size) == (12, page, 5)
                if not body.message_of_client_list:
                    break
                assert len(body.message_of_client_list) == (5 if page < 3 else 2)
                for e in body.message_of_client_list:
                    check_entry(e, since)
                    assert (e.client_id, e.action) == (client_id, "pub_mqtt")
                walked += [(e.time, e.msg_id) for e in body.message_of_client_list]
                page += 1
            assert page == 4, f"{page - 1} pages"
            walks[reverse] = walked
        forward = walks[False]
        assert len({m for _, m in forward}) == 12
        assert walks[True] == forward[::-1], f"mode {mode}: Reverse=true is not the other order"
        times = [parse_time(t) for t, _ in forward]
        assert times == sorted(times)
        # MsgIds are given in the order messages arrive: the publishing order.
        assert [m for _, m in forward] == sorted(m for _, m in forward)
        # Reverse left out means oldest first.
        body = of_client(client, client_id, begin, end, page=2, size=5)
        assert [(e.time, e.msg_id) for e in body.message_of_client_list] == forward[5:10]
        # Past the end: empty, Total unchanged.
        for page in (4, 1000):
            body = of_client(client, client_id, begin, end, page=page, size=5, reverse=True)
            assert (body.total, body.current_page, body.message_of_client_list) == (12, page, [])
        # Each message's publish is found by its MsgId.
        for _, msg_id in forward[:: 5]:
            body = publishes(client, msg_id, begin, end)
            assert [(e.client_id, e.action) for e in body.message_trace_lists] == [(client_id, "pub_mqtt")]


def expect_client_exception(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_bad_msg_ids_ranges_and_pages_name_their_parameter(mqgate, mode):
    client = tea(mqgate, mode)
    client_id = f"GID_tmbad@@@{mode}"
    good = secrets.token_hex(16)
    end = now_ms()
    calls = []
    for bad in ["xyz", good[:31], good + "0", "g" * 32, good[:8] + "-" + good[9:], None]:
        calls += [
            (lambda m=bad: publishes(client, m), "MsgId"),
            (lambda m=bad: deliveries(client, m), "MsgId"),
        ]
    calls += [
        (lambda: publishes(client, good, begin=end + 1, end=end), "BeginTime"),
        (lambda: deliveries(client, good, begin=end + 1, end=end), "BeginTime"),
        (lambda: of_client(client, client_id, begin=end + 1, end=end), "BeginTime"),
        (lambda: deliveries(client, good, size=101), "PageSize"),
        (lambda: of_client(client, client_id, size=101), "PageSize"),
        (lambda: deliveries(client, good, size=0), "PageSize"),
        (lambda: of_client(client, client_id, page=0), "CurrentPage"),
    ]
    for call, parameter in calls:
        e = expect_client_exception(call)
        assert (e.status_code, e.code) == (400, f"InvalidParameter.{parameter}"), e.message
        assert parameter in e.message, e.message
    # The edges are accepted: an empty range, a page of 100.
    assert publishes(client, good, begin=end, end=end).message_trace_lists == []
    assert deliveries(client, good, begin=end, end=end, size=100).total == 0
    assert of_client(client, client_id, size=100).total == 0


def test_a_msg_id_with_a_sign_is_malformed(mqgate):
    client = tea(mqgate, None)
    e = expect_client_exception(lambda: publishes(client, "+" + secrets.token_hex(16)[:31]))
    assert (e.status_code, e.code) == (400, "InvalidParameter.MsgId"), e.message
