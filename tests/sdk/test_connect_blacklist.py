"""The connection blacklist of custom authentication through the official
Tea SDK (V3 and V1; the old core SDK has no request classes for it) and
real MQTT clients (paho-mqtt, 3.1.1 and 5): a blacklisted client id is
disconnected at once and refused at CONNECT whatever its login, listed page
by page, and admitted again once deleted."""

import paho.mqtt.client as mqtt
import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import INSTANCE
from test_tea_sdk import MODE_IDS, MODES, tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]


def add(client, client_id):
    return client.add_custom_auth_connect_black(
        models.AddCustomAuthConnectBlackRequest(client_id=client_id, instance_id=INSTANCE)
    ).body


def delete(client, client_id):
    return client.delete_custom_auth_connect_black(
        models.DeleteCustomAuthConnectBlackRequest(client_id=client_id, instance_id=INSTANCE)
    ).body


def query(client, **kwargs):
    return client.query_custom_auth_connect_black(
        models.QueryCustomAuthConnectBlackRequest(instance_id=INSTANCE, **kwargs)
    ).body


def code_of(reason):
    return reason.value if hasattr(reason, "value") else reason


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_blacklisted_client_is_kicked_refused_and_readmitted(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    client_id = f"GID_black@@@{mode}-{protocol}"
    device = device_factory(client_id, protocol)
    assert device.wait_connected() == 0

    answer = add(client, client_id)
    assert (answer.code, answer.success, answer.message) == (200, True, "operation success.")
    reason = device.wait_disconnected()
    if protocol == mqtt.MQTTv5:
        assert code_of(reason) == 0x98  # administrative action
    again = device_factory(client_id, protocol)
    # 5: 0x8A banned; 3.1.1: 5 not authorized, which paho reports as 0x87.
    assert code_of(again.wait_connected()) == (0x8A if protocol == mqtt.MQTTv5 else 0x87)
    # Adding it twice is not an error.
    assert add(client, client_id).success
    found = query(client, client_id=client_id, size=10).data.results
    assert [(r.client_id, r.effect, r.permit_action) for r in found] == [(client_id, "DENY", "CONNECT")]

    assert delete(client, client_id).success
    assert query(client, client_id=client_id, size=10).data.results == []
    back = device_factory(client_id, protocol)
    assert back.wait_connected() == 0
    # Deleting what is not listed is not an error either.
    assert delete(client, client_id).success


def test_the_list_pages_to_its_end(mqgate):
    client = tea(mqgate, None)
    ids = [f"GID_page@@@d{i}" for i in range(5)]
    for client_id in reversed(ids):
        add(client, client_id)
    seen, token, pages = [], None, 0
    while True:
        data = query(client, size=2, next_token=token).data
        seen += [r.client_id for r in data.results]
        pages += 1
        token = data.next_token
        if not token:
            break
    assert [s for s in seen if s.startswith("GID_page@@@")] == ids
    assert pages == 3
    for client_id in ids:
        delete(client, client_id)


@pytest.mark.parametrize(
    "kwargs, parameter",
    [(dict(size=0), "Size"), (dict(size=101), "Size"), (dict(size=2, next_token="zz"), "NextToken")],
)
def test_bad_queries_name_the_parameter(mqgate, kwargs, parameter):
    with pytest.raises(ClientException) as raised:
        query(tea(mqgate, None), **kwargs)
    assert raised.value.code == f"InvalidParameter.{parameter}"
