"""alibabacloud-onsmqtt20200420 + alibabacloud-tea-openapi, unchanged, in its
default signature V3 (ACS3-HMAC-SHA256) mode and with
signature_algorithm='v2' (V1), against a running mqgate with real MQTT
clients connected."""

import paho.mqtt.client as mqtt
import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_util import models as util_models

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE

SPECIAL = "GID_x@@@dev 1+*~/é"
MODES = [None, "v2"]
MODE_IDS = ["v3-default", "v1-signature_algorithm-v2"]


def tea(gate, mode, key=ACCESS_KEY_ID, secret=ACCESS_KEY_SECRET):
    config = open_api_models.Config(
        access_key_id=key,
        access_key_secret=secret,
        endpoint=f"{gate.http_host}:{gate.http_port}",
        protocol="http",
        region_id="cn-hangzhou",
    )
    if mode:
        config.signature_algorithm = mode
    return Client(config)


def query(client, client_id, instance=INSTANCE):
    return client.query_session_by_client_id(
        models.QuerySessionByClientIdRequest(client_id=client_id, instance_id=instance)
    ).body


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize(
    "protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt-3.1.1", "mqtt-5"]
)
def test_three_actions(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    client_id = f"{SPECIAL}-{mode}-{protocol}"
    device = device_factory(client_id, protocol)
    assert device.wait_connected() == 0

    body = query(client, client_id)
    assert body.online_status is True
    assert len(body.request_id) == 36

    body = client.batch_query_session_by_client_ids(
        models.BatchQuerySessionByClientIdsRequest(
            client_id_list=[client_id, "GID_x@@@nobody"], instance_id=INSTANCE
        )
    ).body
    assert [(s.client_id, s.online_status) for s in body.online_status_list] == [
        (client_id, True),
        ("GID_x@@@nobody", False),
    ]

    body = client.close_connection(
        models.CloseConnectionRequest(client_id=client_id, instance_id=INSTANCE)
    ).body
    assert body.code == 200 and body.success is True
    assert body.message == "operation success."
    reason = device.wait_disconnected()
    if protocol == mqtt.MQTTv5:
        assert reason.value == 0x98
    assert query(client, client_id).online_status is False


def expect_client_exception(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_wrong_secret(mqgate, mode):
    e = expect_client_exception(lambda: query(tea(mqgate, mode, secret="nope"), "c"))
    assert (e.status_code, e.code) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:" in e.message


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_unknown_key(mqgate, mode):
    e = expect_client_exception(lambda: query(tea(mqgate, mode, key="LTAInobody"), "c"))
    assert (e.status_code, e.code) == (404, "InvalidAccessKeyId.NotFound")


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_missing_parameter(mqgate, mode):
    client = tea(mqgate, mode)
    e = expect_client_exception(
        lambda: client.query_session_by_client_id(
            models.QuerySessionByClientIdRequest(instance_id=INSTANCE)
        )
    )
    assert (e.status_code, e.code) == (400, "InvalidParameter.ClientId")
    assert "ClientId" in e.message


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_unknown_action(mqgate, mode):
    client = tea(mqgate, mode)
    params = open_api_models.Params(
        action="DescribeEverything",
        version="2020-04-20",
        protocol="HTTP",
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )
    request = open_api_models.OpenApiRequest(query={"InstanceId": INSTANCE})
    e = expect_client_exception(
        lambda: client.call_api(params, request, util_models.RuntimeOptions())
    )
    assert (e.status_code, e.code) == (404, "InvalidAction.NotFound")


def test_throttling_reaches_the_tea_sdk_as_throttling_exception(limited_mqgate):
    from alibabacloud_tea_openapi.exceptions import ThrottlingException

    client = tea(limited_mqgate, None)
    with pytest.raises(ThrottlingException) as raised:
        for _ in range(5):
            query(client, "c")
    e = raised.value
    assert (e.status_code, e.code) == (403, "SystemOverFlow")
    assert 0 < e.retry_after <= 1000
