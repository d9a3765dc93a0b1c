"""Group ids through the official SDKs, unchanged: the Tea SDK
(alibabacloud-onsmqtt20200420, V3 and V1) and the old core SDK's request
classes (aliyun-python-sdk-onsmqtt); RAM; and an instance with
require_group_ids, with real MQTT clients (paho-mqtt, 3.1.1 and 5)."""

import json

import paho.mqtt.client as mqtt
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkonsmqtt.request.v20200420.CreateGroupIdRequest import CreateGroupIdRequest
from aliyunsdkonsmqtt.request.v20200420.DeleteGroupIdRequest import DeleteGroupIdRequest
from aliyunsdkonsmqtt.request.v20200420.ListGroupIdRequest import ListGroupIdRequest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE, STRICT_INSTANCE
from test_tea_sdk import MODE_IDS, MODES, tea


def groups(client, instance=INSTANCE):
    body = client.list_group_id(models.ListGroupIdRequest(instance_id=instance)).body
    return [g.group_id for g in body.data], body


def raises(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_create_list_delete_with_the_tea_sdk(mqgate, mode):
    client = tea(mqgate, mode)
    group = f"GID_tea_{mode}"
    body = client.create_group_id(
        models.CreateGroupIdRequest(group_id=group, instance_id=INSTANCE)
    ).body
    assert len(body.request_id) == 36
    names, listed = groups(client)
    assert group in names
    item = next(g for g in listed.data if g.group_id == group)
    assert item.instance_id == INSTANCE
    assert item.independent_naming is True
    assert item.create_time == item.update_time and item.create_time > 1_700_000_000_000

    again = raises(lambda: client.create_group_id(
        models.CreateGroupIdRequest(group_id=group, instance_id=INSTANCE)))
    assert again.code == "GroupIdAlreadyExsited"
    assert group in again.message

    for bad, why in [("gid_lower", "GID_"), ("GID_ab", "7 to 64"), ("GID_a.b.c", "'.'")]:
        e = raises(lambda: client.create_group_id(
            models.CreateGroupIdRequest(group_id=bad, instance_id=INSTANCE)))
        assert e.code == "InvalidParameter.GroupId", bad
        assert why in e.message, e.message

    client.delete_group_id(models.DeleteGroupIdRequest(group_id=group, instance_id=INSTANCE))
    assert group not in groups(client)[0]
    # Deleting it again: the goal (no such group) holds.
    client.delete_group_id(models.DeleteGroupIdRequest(group_id=group, instance_id=INSTANCE))


def test_the_old_core_sdk_request_classes(mqgate):
    acs = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, "cn-hangzhou", port=mqgate.http_port,
                    auto_retry=False)

    def call(request, **params):
        request.set_endpoint(mqgate.http_host)
        request.set_protocol_type("http")
        request.set_InstanceId(INSTANCE)
        for name, value in params.items():
            getattr(request, f"set_{name}")(value)
        return json.loads(acs.do_action_with_exception(request))

    assert "RequestId" in call(CreateGroupIdRequest(), GroupId="GID_core")
    listed = call(ListGroupIdRequest())
    assert "GID_core" in [g["GroupId"] for g in listed["Data"]]
    with pytest.raises(ServerException) as raised:
        call(CreateGroupIdRequest(), GroupId="GID_core")
    assert raised.value.get_error_code() == "GroupIdAlreadyExsited"
    call(DeleteGroupIdRequest(), GroupId="GID_core")
    assert "GID_core" not in [g["GroupId"] for g in call(ListGroupIdRequest())["Data"]]


def test_a_read_only_user_lists_but_cannot_create(mqgate):
    reader = tea(mqgate, None, key="reader-key", secret="reader-secret")
    groups(reader)
    e = raises(lambda: reader.create_group_id(
        models.CreateGroupIdRequest(group_id="GID_reader", instance_id=INSTANCE)))
    assert e.code == "Forbidden.RAM"
    assert e.access_denied_detail["AuthAction"] == "mq:CreateMqttGroupId"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt-3.1.1", "mqtt-5"])
def test_an_instance_that_requires_group_ids(mqgate, device_factory, protocol):
    client = tea(mqgate, None)
    group = f"GID_strict_{protocol}"
    client_id = f"{group}@@@dev-1"
    refused = device_factory(client_id, protocol, instance=STRICT_INSTANCE)
    # Not authorized (3.1.1: return code 5, which paho reports as 0x87; 5: 0x87).
    assert refused.wait_connected().value == 0x87

    client.create_group_id(models.CreateGroupIdRequest(group_id=group, instance_id=STRICT_INSTANCE))
    device = device_factory(client_id, protocol, instance=STRICT_INSTANCE)
    assert device.wait_connected() == 0

    # As Alibaba documents: deleting the group leaves connected clients
    # connected, and refuses them when they come back.
    client.delete_group_id(models.DeleteGroupIdRequest(group_id=group, instance_id=STRICT_INSTANCE))
    assert client.query_session_by_client_id(
        models.QuerySessionByClientIdRequest(client_id=client_id, instance_id=STRICT_INSTANCE)
    ).body.online_status is True
    device.stop()
    again = device_factory(client_id, protocol, instance=STRICT_INSTANCE)
    assert again.wait_connected().value == 0x87
