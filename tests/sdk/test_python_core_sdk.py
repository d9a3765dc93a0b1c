"""aliyun-python-sdk-core + aliyun-python-sdk-onsmqtt (V1, POST with every
parameter in the query), unchanged, against a running mqgate with real MQTT
clients connected."""

import json
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from aliyunsdkonsmqtt.request.v20200420.BatchQuerySessionByClientIdsRequest import (
    BatchQuerySessionByClientIdsRequest,
)
from aliyunsdkonsmqtt.request.v20200420.QuerySessionByClientIdRequest import (
    QuerySessionByClientIdRequest,
)

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE, OTHER_INSTANCE, wait_until


def client(gate, key=ACCESS_KEY_ID, secret=ACCESS_KEY_SECRET):
    return AcsClient(key, secret, "cn-hangzhou", port=gate.http_port, auto_retry=False)


def prepare(gate, request):
    request.set_endpoint(gate.http_host)
    request.set_protocol_type("http")
    return request


def query(gate, client_id, instance=INSTANCE, acs=None):
    request = prepare(gate, QuerySessionByClientIdRequest())
    request.set_InstanceId(instance)
    if client_id is not None:
        request.set_ClientId(client_id)
    return json.loads((acs or client(gate)).do_action_with_exception(request))


def batch(gate, client_ids):
    request = prepare(gate, BatchQuerySessionByClientIdsRequest())
    request.set_InstanceId(INSTANCE)
    request.set_ClientIdLists(client_ids)
    return json.loads(client(gate).do_action_with_exception(request))


def close_connection(gate, client_id):
    # onsmqtt 1.0.5 has no CloseConnection request class: the SDK's own
    # CommonRequest is how its users call it.
    request = CommonRequest(
        domain=gate.http_host,
        version="2020-04-20",
        action_name="CloseConnection",
        product="OnsMqtt",
    )
    request.set_protocol_type("http")
    request.set_method("POST")
    request.add_query_param("InstanceId", INSTANCE)
    request.add_query_param("ClientId", client_id)
    return json.loads(client(gate).do_action_with_exception(request))


@pytest.mark.parametrize(
    "protocol, client_id",
    [(mqtt.MQTTv311, "GID_py@@@paho-311"), (mqtt.MQTTv5, "GID_py@@@paho-5 é+*~/")],
    ids=["mqtt-3.1.1", "mqtt-5"],
)
def test_query_batch_close_query_with_paho(mqgate, device_factory, protocol, client_id):
    device = device_factory(client_id, protocol)
    assert device.wait_connected() == 0

    answer = query(mqgate, client_id)
    assert answer["OnlineStatus"] is True
    assert len(answer["RequestId"]) == 36

    answer = batch(mqgate, ["GID_py@@@nobody", client_id])
    assert answer["OnlineStatusList"] == [
        {"ClientId": "GID_py@@@nobody", "OnlineStatus": False},
        {"ClientId": client_id, "OnlineStatus": True},
    ]

    answer = close_connection(mqgate, client_id)
    assert answer["Code"] == 200 and answer["Success"] is True
    assert answer["Message"] == "operation success."

    reason = device.wait_disconnected()
    if protocol == mqtt.MQTTv5:
        assert reason.value == 0x98, f"MQTT 5 client saw reason {reason}"
    assert query(mqgate, client_id)["OnlineStatus"] is False


def test_mosquitto_sub_is_kicked(mqgate):
    """mosquitto_sub, an anonymous client of the instance, ends when kicked."""
    client_id = "GID_py@@@mosquitto"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", mqgate.mqtt_host, "-p", str(mqgate.mqtt_port),
         "-i", client_id, "-t", "demo/#", "-V", "mqttv5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_until(lambda: query(mqgate, client_id)["OnlineStatus"]), "mosquitto_sub never showed up"
        assert close_connection(mqgate, client_id)["Success"] is True
        sub.wait(timeout=5)
        assert query(mqgate, client_id)["OnlineStatus"] is False
    finally:
        sub.kill()


def test_wrong_secret_raises_the_sdk_exception(mqgate):
    """On the wire the answer is SignatureDoesNotMatch with the server's
    string to sign; the SDK compares that string with its own and, since
    they are equal, tells the user their secret is wrong."""
    with pytest.raises(ServerException) as raised:
        query(mqgate, "c", acs=client(mqgate, secret="not-the-secret"))
    e = raised.value
    assert e.get_http_status() == 400
    assert e.get_error_code() == "InvalidAccessKeySecret", e
    assert len(e.get_request_id()) == 36


def test_unknown_access_key(mqgate):
    with pytest.raises(ServerException) as raised:
        query(mqgate, "c", acs=client(mqgate, key="LTAInobody"))
    assert raised.value.get_error_code() == "InvalidAccessKeyId.NotFound"
    assert raised.value.get_http_status() == 404


def test_missing_client_id_names_the_parameter(mqgate):
    with pytest.raises(ServerException) as raised:
        query(mqgate, None)
    assert raised.value.get_error_code() == "InvalidParameter.ClientId"
    assert "ClientId" in raised.value.get_error_msg()
    assert raised.value.get_http_status() == 400


def test_eleven_ids_are_refused(mqgate):
    with pytest.raises(ServerException) as raised:
        batch(mqgate, [f"c{i}" for i in range(11)])
    assert raised.value.get_error_code() == "InvalidParameter.ClientIdList"


def test_another_accounts_instance(mqgate):
    with pytest.raises(ServerException) as raised:
        query(mqgate, "c", instance=OTHER_INSTANCE)
    assert raised.value.get_error_code() == "InstancePermissionCheckFailed"
    assert raised.value.get_http_status() == 400
