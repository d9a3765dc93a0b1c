"""Tokens through the official SDKs, unchanged (the Tea SDK in V3 and V1, the
old core SDK's request classes), and the Token login with a real MQTT client
(paho-mqtt, 3.1.1 and 5): apply, log in, use the allowed topics, be refused
the others, query, revoke; bad parameters name themselves; RAM names
mq:ApplyToken."""

import json
import time

import paho.mqtt.client as mqtt
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkonsmqtt.request.v20200420.ApplyTokenRequest import ApplyTokenRequest
from aliyunsdkonsmqtt.request.v20200420.QueryTokenRequest import QueryTokenRequest
from aliyunsdkonsmqtt.request.v20200420.RevokeTokenRequest import RevokeTokenRequest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE, SECRETS_SEEN, wait_until
from test_tea_sdk import MODE_IDS, MODES, tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]
HOUR_MS = 3_600_000


def now_ms():
    return int(time.time() * 1000)


def raises(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


def apply(client, actions, resources, expire_time=None, instance=INSTANCE):
    token = client.apply_token(
        models.ApplyTokenRequest(
            actions=actions,
            resources=resources,
            expire_time=expire_time if expire_time is not None else now_ms() + HOUR_MS,
            instance_id=instance,
        )
    ).body.token
    SECRETS_SEEN.append(token)
    return token


def status(client, token):
    return client.query_token(
        models.QueryTokenRequest(instance_id=INSTANCE, token=token)
    ).body.token_status


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_apply_query_revoke(mqgate, mode):
    client = tea(mqgate, mode)
    token = apply(client, "R,W", "tok/+,tok/b/#")
    assert isinstance(token, str) and len(token) >= 32
    assert status(client, token) is True
    assert status(client, token + "x") is False
    # A call with a wrong signature is refused; its answer quotes the string
    # to sign (token included) back to the caller, and the log does not.
    forger = tea(mqgate, mode, secret="not-the-secret")
    e = raises(lambda: forger.revoke_token(models.RevokeTokenRequest(instance_id=INSTANCE, token=token)))
    assert e.code == "SignatureDoesNotMatch"
    assert status(client, token) is True
    client.revoke_token(models.RevokeTokenRequest(instance_id=INSTANCE, token=token))
    assert status(client, token) is False
    # Revoking again is not an error: the token is revoked, as asked.
    client.revoke_token(models.RevokeTokenRequest(instance_id=INSTANCE, token=token))


@pytest.mark.parametrize(
    "name, value, why",
    [
        ("Resources", "", "empty"),
        ("Resources", ",".join(f"t/{i}" for i in range(101)), "at most 100"),
        ("Resources", "a/#/b", "'#' must be the last level"),
        ("Resources", "a/b+", "'+' must fill a whole level"),
        ("Actions", "X", "not one of R, W, R,W"),
        ("Actions", "RW", "not one of R, W, R,W"),
        ("ExpireTime", "soon", "not a whole number"),
        ("ExpireTime", "-5", "not a whole number"),
        ("ExpireTime", "past", "at least 60 s"),
        ("ExpireTime", "in 30 s", "at least 60 s"),
    ],
)
def test_bad_parameters_name_themselves(mqgate, name, value, why):
    # The old core SDK sends what it is given (the Tea model would refuse a
    # text ExpireTime before sending it).
    acs = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, "cn-hangzhou", port=mqgate.http_port,
                    auto_retry=False)
    params = dict(Actions="R", Resources="t/1", ExpireTime=str(now_ms() + HOUR_MS))
    params[name] = {"past": str(now_ms() - 1000), "in 30 s": str(now_ms() + 30_000)}.get(value, value)
    request = ApplyTokenRequest()
    request.set_endpoint(mqgate.http_host)
    request.set_protocol_type("http")
    request.set_InstanceId(INSTANCE)
    request.set_Actions(params["Actions"])
    request.set_Resources(params["Resources"])
    request.set_ExpireTime(params["ExpireTime"])
    with pytest.raises(ServerException) as raised:
        acs.do_action_with_exception(request)
    e = raised.value
    if value == "":
        # An empty parameter is not sent by the SDK at all.
        assert e.get_error_code() in (f"InvalidParameter.{name}", "MissingParameter"), e.get_error_msg()
    else:
        assert e.get_error_code() == f"InvalidParameter.{name}", e.get_error_msg()
    assert name in e.get_error_msg() and why in e.get_error_msg(), e.get_error_msg()


def test_expire_time_beyond_30_days_is_accepted(mqgate):
    # Alibaba: no error; the token lives 30 days (tests/tokens.rs checks the cut).
    client = tea(mqgate, None)
    token = apply(client, "R", "t/1", now_ms() + 90 * 24 * HOUR_MS)
    assert status(client, token) is True


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
def test_a_paho_client_logs_in_with_a_token(mqgate, device_factory, protocol):
    client = tea(mqgate, None)
    token = apply(client, "R,W", "tok/#")
    name = "v5" if protocol == mqtt.MQTTv5 else "v311"
    device = device_factory(f"GID_tok@@@{name}", protocol,
                            login=(f"Token|{ACCESS_KEY_ID}|{INSTANCE}", f"RW|{token}"))
    assert device.wait_connected() == 0
    granted = []
    device.client.on_subscribe = lambda c, u, mid, codes, props: granted.append(
        [int(getattr(code, "value", code)) for code in codes])
    device.client.subscribe([("tok/in", 1), ("elsewhere/in", 1)])
    assert wait_until(lambda: granted)
    refused = 0x87 if protocol == mqtt.MQTTv5 else 0x80
    assert granted[0] == [1, refused]

    watcher = device_factory(f"GID_tok@@@watcher-{name}", protocol)
    assert watcher.wait_connected() == 0
    watcher.client.subscribe("#", qos=1)

    def delivered():
        watcher.client.publish("tok/in", b"to device", qos=1)
        device.client.publish("tok/out", b"from device", qos=1)
        return (b"to device" in [p for _, p in device.messages]
                and ("tok/out", b"from device") in watcher.messages)

    assert wait_until(delivered)

    # Outside the token: 3.1.1 loses the connection, 5 gets PUBACK 0x87.
    device.client.publish("elsewhere/out", b"refused", qos=1)
    if protocol == mqtt.MQTTv311:
        device.wait_disconnected()
    else:
        assert not device.disconnected.wait(0.5)
    assert ("elsewhere/out", b"refused") not in watcher.messages

    # Revoked: new logins with it are refused.
    client.revoke_token(models.RevokeTokenRequest(instance_id=INSTANCE, token=token))
    late = device_factory(f"GID_tok@@@late-{name}", protocol,
                          login=(f"Token|{ACCESS_KEY_ID}|{INSTANCE}", f"RW|{token}"))
    code = late.wait_connected()
    assert (code.value if hasattr(code, "value") else code) in (4, 0x86)


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

    token = call(ApplyTokenRequest(), Actions="W", Resources="core/#",
                 ExpireTime=now_ms() + HOUR_MS)["Token"]
    assert call(QueryTokenRequest(), Token=token)["TokenStatus"] is True
    assert "RequestId" in call(RevokeTokenRequest(), Token=token)
    assert call(QueryTokenRequest(), Token=token)["TokenStatus"] is False


def test_ram_a_user_who_may_only_list_groups_cannot_apply_for_a_token(mqgate):
    lister = tea(mqgate, None, key="lister-key", secret="lister-secret")
    lister.list_group_id(models.ListGroupIdRequest(instance_id=INSTANCE))
    e = raises(lambda: apply(lister, "R", "t/1"))
    assert e.code == "Forbidden.RAM"
    assert e.access_denied_detail["AuthAction"] == "mq:ApplyToken"
    # Another account's key cannot apply for this instance's tokens either.
    other = tea(mqgate, None, key="other-key", secret="other-secret")
    e = raises(lambda: apply(other, "R", "t/1"))
    assert e.code in ("InstancePermissionCheckFailed", "Forbidden.RAM"), e.code
