"""QueryMqttTraceDevice through the official Tea SDK (V3 and V1) with real
MQTT clients (paho-mqtt, 3.1.1 and 5): each way a connection ends reads as
its (Action, ActionInfo) — kicked by CloseConnection, silent past its
keepalive, taken over, closed, disconnected politely — a refused login is
traced as connect / not authorized, pages walk every event exactly once in
either order, and bad ranges and pages name their parameter."""

import calendar
import re
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE, device_password, wait_until
from test_tea_sdk import MODE_IDS, MODES, tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]
REGION = "cn-hangzhou"
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")


def now_ms():
    return int(time.time() * 1000)


def query(client, client_id, begin=None, end=None, page=1, size=100, reverse=None):
    """One page of a client id's trace; the range is the last 10 minutes
    (to now) unless given."""
    end = now_ms() if end is None else end
    begin = end - 600_000 if begin is None else begin
    return client.query_mqtt_trace_device(
        models.QueryMqttTraceDeviceRequest(
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


def check_entry(entry, begin, end):
    """What every entry must hold: ActionCode follows Action, Time is UTC
    and in the range asked for, ChannelId is a number."""
    assert entry.action in ("connect", "close", "disconnect"), entry.to_map()
    assert entry.action_code == f"mqtt.trace.action.{entry.action}", entry.to_map()
    assert begin <= parse_time(entry.time) <= end, (entry.time, begin, end)
    assert entry.channel_id.isdigit(), entry.to_map()


def events(client, client_id, count, timeout=10.0):
    """A client id's entries, oldest first, once there are at least `count`
    (polled: events are committed within ~100 ms)."""
    last = {}

    def enough():
        end = now_ms()
        last["begin"], last["end"] = end - 600_000, end
        last["body"] = query(client, client_id, end=end)
        return len(last["body"].device_info_list) >= count

    wait_until(enough, timeout)
    body = last["body"]
    entries = body.device_info_list
    assert len(entries) >= count, f"{client_id}: {[e.to_map() for e in entries]}, not {count} events"
    assert (body.total, body.current_page, body.page_size) == (len(entries), 1, 100)
    assert len(body.request_id) == 36
    for e in entries:
        check_entry(e, last["begin"], last["end"])
    return entries


def pairs(entries):
    return [(e.action, e.action_info) for e in entries]


class Silent:
    """A paho client with keepalive 1 s whose network loop stops once it is
    connected: it sends nothing more, not even PINGREQ."""

    def __init__(self, gate, client_id, protocol, login):
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.username_pw_set(*login)
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.reconnect_delay_set(60, 120)
        self.client.connect(gate.mqtt_host, gate.mqtt_port, keepalive=1)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK within 5 s"
        self.client.loop_stop()

    def close(self):
        sock = self.client.socket()
        if sock:
            sock.close()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_each_way_a_connection_ends_is_traced_with_its_reason(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    tag = f"{mode}-{protocol}"
    ids = {
        "kicked": f"GID_trace@@@kicked-{tag}",
        "silent": f"GID_trace@@@silent-{tag}",
        "taken": f"GID_trace@@@taken-{tag}",
        # Characters the signatures must escape, and ones rumqttd refuses.
        "polite": f"GID_trace@@@polite 1+*~/é-{tag}",
        "closed": f"GID_trace@@@closed-{tag}",
    }

    kicked = device_factory(ids["kicked"], protocol)
    first = device_factory(ids["taken"], protocol)
    polite = device_factory(ids["polite"], protocol)
    closed = device_factory(ids["closed"], protocol)
    for d in (kicked, first, polite, closed):
        assert d.wait_connected() == 0
    silent = Silent(
        mqgate,
        ids["silent"],
        protocol,
        (f"Signature|{ACCESS_KEY_ID}|{INSTANCE}", device_password(ACCESS_KEY_SECRET, ids["silent"])),
    )
    try:
        body = client.close_connection(
            models.CloseConnectionRequest(client_id=ids["kicked"], instance_id=INSTANCE)
        ).body
        assert body.success is True
        kicked.wait_disconnected()

        second = device_factory(ids["taken"], protocol)
        assert second.wait_connected() == 0
        first.wait_disconnected()

        polite.client.disconnect()
        polite.wait_disconnected()

        closed.client.loop_stop()
        closed.client.socket().close()

        traced = {name: None for name in ids}
        traced["kicked"] = events(client, ids["kicked"], 2)
        traced["taken"] = events(client, ids["taken"], 3)
        traced["polite"] = events(client, ids["polite"], 2)
        traced["closed"] = events(client, ids["closed"], 2)
        # rumqttd ends it after 1.5 keepalives without a packet.
        traced["silent"] = events(client, ids["silent"], 2)
    finally:
        silent.close()

    assert pairs(traced["polite"]) == [("connect", "accepted"), ("disconnect", "disconnected by client")]
    assert pairs(traced["closed"]) == [("connect", "accepted"), ("close", "closed by client")]
    assert pairs(traced["silent"]) == [("connect", "accepted"), ("close", "no heart")]
    assert pairs(traced["taken"]) == [
        ("connect", "accepted"),
        ("close", "clientId conflict"),
        ("connect", "accepted"),
    ]
    k = traced["kicked"]
    assert [e.action for e in k] == ["connect", "close"]
    assert k[0].action_info == "accepted"
    assert k[1].action_info.startswith("kicked: ") and "CloseConnection" in k[1].action_info, k[1].action_info

    # A connection's events share its ChannelId; a new connection has its own.
    for name in ("polite", "closed", "silent", "kicked"):
        assert traced[name][0].channel_id == traced[name][1].channel_id, name
    t = traced["taken"]
    assert t[0].channel_id == t[1].channel_id != t[2].channel_id
    # Oldest first.
    for entries in traced.values():
        times = [parse_time(e.time) for e in entries]
        assert times == sorted(times)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_refused_login_is_traced_as_not_authorized(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    client_id = f"GID_trace@@@refused-{mode}-{protocol}"
    # A wrong password, with a username naming the instance.
    device = device_factory(client_id, protocol, login=(f"Signature|{ACCESS_KEY_ID}|{INSTANCE}", "bad"))
    assert device.wait_connected() != 0
    assert pairs(events(client, client_id, 1)) == [("connect", "not authorized")]
    # A client id nothing happened to has an empty trace.
    body = query(client, f"GID_trace@@@never-{mode}-{protocol}")
    assert (body.total, body.device_info_list) == (0, [])


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
def test_pages_walk_every_event_once_in_either_order(mqgate, device_factory, protocol):
    client_id = f"GID_trace@@@pages-{protocol}"
    v3 = tea(mqgate, None)
    for cycle in range(12):
        device = device_factory(client_id, protocol)
        assert device.wait_connected() == 0
        device.client.disconnect()
        device.wait_disconnected()
        # The next connection waits for this one's end in the trace, so
        # that events alternate connect / disconnect.
        assert wait_until(lambda: query(v3, client_id).total == 2 * (cycle + 1)), f"cycle {cycle}"
    end = now_ms()
    begin = end - 600_000

    for mode in MODES:
        client = tea(mqgate, mode)
        walks = {}
        for reverse in (False, True):
            walked, page = [], 1
            while True:
                body = query(client, client_id, begin, end, page=page, size=5, reverse=reverse)
                assert (body.total, body.current_page, body.page_size) == (24, page, 5)
                if not body.device_info_list:
                    break
                assert len(body.device_info_list) == (5 if page < 5 else 4)
                for e in body.device_info_list:
                    check_entry(e, begin, end)
                walked += [(e.time, e.channel_id, e.action, e.action_info) for e in body.device_info_list]
                page += 1
            assert page == 6, f"{page - 1} pages"
            walks[reverse] = walked
        forward = walks[False]
        assert len(forward) == 24 and len(set(forward)) == 24
        assert walks[True] == forward[::-1], f"mode {mode}: Reverse=true is not the other order"
        assert [parse_time(t) for t, *_ in forward] == sorted(parse_time(t) for t, *_ in forward)
        assert [(a, i) for _, _, a, i in forward] == [
            ("connect", "accepted"),
            ("disconnect", "disconnected by client"),
        ] * 12
        # Each connection's two events share a ChannelId; twelve connections, twelve ids.
        channels = [c for _, c, _, _ in forward]
        assert channels[0::2] == channels[1::2]
        assert len(set(channels)) == 12
        # Reverse left out means oldest first.
        body = query(client, client_id, begin, end, page=2, size=5)
        assert [(e.time, e.channel_id, e.action, e.action_info) for e in body.device_info_list] == forward[5:10]
        # Past the end: empty, Total unchanged.
        for page in (6, 1000):
            body = query(client, client_id, begin, end, page=page, size=5, reverse=True)
            assert (body.total, body.current_page, body.page_size, body.device_info_list) == (24, page, 5, [])
        # The range bounds the events: up to the sixth event's time only.
        sixth = parse_time(forward[5][0])
        body = query(client, client_id, begin, sixth, size=100)
        assert body.total == len(body.device_info_list) >= 6
        assert all(parse_time(e.time) <= sixth for e in body.device_info_list)


def expect_client_exception(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_bad_ranges_and_pages_name_their_parameter(mqgate, mode):
    client = tea(mqgate, mode)
    client_id = f"GID_trace@@@bad-{mode}"
    end = now_ms()
    hour = 3_600_000
    for kwargs, parameter in [
        (dict(begin=end + 1, end=end), "BeginTime"),
        # Further back than the 72 hours kept.
        (dict(begin=end - 73 * hour, end=end), "BeginTime"),
        (dict(begin=0, end=end), "BeginTime"),
        (dict(size=0), "PageSize"),
        (dict(size=101), "PageSize"),
        (dict(page=0), "CurrentPage"),
    ]:
        e = expect_client_exception(lambda: query(client, client_id, **kwargs))
        assert (e.status_code, e.code) == (400, f"InvalidParameter.{parameter}"), (kwargs, e.message)
        assert parameter in e.message, e.message
    # The edges are accepted: an empty range, 71 hours back, pages of 1 and 100.
    for kwargs in [
        dict(begin=end, end=end),
        dict(begin=now_ms() - 71 * hour),
        dict(size=1),
        dict(size=100),
    ]:
        body = query(client, client_id, **kwargs)
        assert (body.total, body.device_info_list) == (0, []), kwargs
