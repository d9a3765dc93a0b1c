"""Device credentials through the official SDKs, unchanged (the Tea SDK in
V3 and V1, the old core SDK's request classes), and the DeviceCredential
login with real MQTT clients (paho-mqtt, 3.1.1 and 5): register, log in,
refresh (the old secret is refused), unregister, list with pages."""

import json

import paho.mqtt.client as mqtt
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkonsmqtt.request.v20200420.GetDeviceCredentialRequest import GetDeviceCredentialRequest
from aliyunsdkonsmqtt.request.v20200420.RefreshDeviceCredentialRequest import (
    RefreshDeviceCredentialRequest,
)
from aliyunsdkonsmqtt.request.v20200420.RegisterDeviceCredentialRequest import (
    RegisterDeviceCredentialRequest,
)
from aliyunsdkonsmqtt.request.v20200420.UnRegisterDeviceCredentialRequest import (
    UnRegisterDeviceCredentialRequest,
)
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE, SECRETS_SEEN, device_password, wait_until
from test_tea_sdk import MODE_IDS, MODES, tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]


def raises(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


def register(client, client_id):
    credential = client.register_device_credential(
        models.RegisterDeviceCredentialRequest(client_id=client_id, instance_id=INSTANCE)
    ).body.device_credential
    SECRETS_SEEN.append(credential.device_access_key_secret)
    return credential


def login_of(credential, client_id):
    return (
        f"DeviceCredential|{credential.device_access_key_id}|{INSTANCE}",
        device_password(credential.device_access_key_secret, client_id),
    )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_register_log_in_refresh_unregister(mqgate, device_factory, mode, protocol):
    client = tea(mqgate, mode)
    client_id = f"GID_cred@@@{mode}-{protocol}"
    credential = register(client, client_id)
    assert credential.client_id == client_id and credential.instance_id == INSTANCE
    assert credential.device_access_key_id.startswith("DC.")
    assert credential.create_time == credential.update_time > 1_700_000_000_000
    fetched = client.get_device_credential(
        models.GetDeviceCredentialRequest(client_id=client_id, instance_id=INSTANCE)
    ).body.device_credential
    assert fetched.device_access_key_secret == credential.device_access_key_secret

    # The device logs in with its credential, and messages flow.
    device = device_factory(client_id, protocol, login=login_of(credential, client_id))
    assert device.wait_connected() == 0
    device.client.subscribe("cred/#", qos=1)
    other = device_factory(f"GID_cred@@@peer-{mode}-{protocol}", protocol)
    assert other.wait_connected() == 0

    def delivered():
        # Published until the subscription is in place and a copy arrives.
        other.client.publish("cred/x", b"hello", qos=1)
        return b"hello" in [payload for _, payload in device.messages]

    assert wait_until(delivered)

    # A credential logs in only its own client id.
    thief = device_factory(f"GID_cred@@@thief-{mode}-{protocol}", protocol,
                           login=login_of(credential, client_id))
    assert thief.wait_connected().value == 0x86  # bad user name or password (3.1.1: 4)

    # Refresh: a new secret; the connected device is told and disconnected.
    refreshed = client.refresh_device_credential(
        models.RefreshDeviceCredentialRequest(client_id=client_id, instance_id=INSTANCE)
    ).body.device_credential
    assert refreshed.device_access_key_id == credential.device_access_key_id
    assert refreshed.device_access_key_secret != credential.device_access_key_secret
    assert refreshed.create_time == credential.create_time
    reason = device.wait_disconnected()
    if protocol == mqtt.MQTTv5:
        assert reason.value == 0x98
    old = device_factory(client_id, protocol, login=login_of(credential, client_id))
    assert old.wait_connected().value == 0x86
    new = device_factory(client_id, protocol, login=login_of(refreshed, client_id))
    assert new.wait_connected() == 0

    # Unregister: the connected device stays connected (as Alibaba
    # documents); a new login is refused; the credential is gone.
    client.un_register_device_credential(
        models.UnRegisterDeviceCredentialRequest(client_id=client_id, instance_id=INSTANCE)
    )
    assert not new.disconnected.wait(0.5)
    new.stop()
    again = device_factory(client_id, protocol, login=login_of(refreshed, client_id))
    assert again.wait_connected().value == 0x86
    e = raises(lambda: client.get_device_credential(
        models.GetDeviceCredentialRequest(client_id=client_id, instance_id=INSTANCE)))
    assert e.code == "DeviceCredentialNotFound"
    assert client_id in e.message


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_listing_pages_through_a_group(mqgate, mode):
    client = tea(mqgate, mode)
    group = f"GID_list_{mode}"
    ids = [f"{group}@@@d{i}" for i in range(5)]
    for client_id in reversed(ids):
        register(client, client_id)
    register(client, f"GID_other_{mode}@@@d0")

    def page(**kwargs):
        return client.list_device_credential_client_id(
            models.ListDeviceCredentialClientIdRequest(instance_id=INSTANCE, group_id=group, **kwargs)
        ).body.device_credential_client_id_list

    first = page(page_size="2")
    assert (first.total, first.page_no, first.page_size) == ("5", "1", "2")
    assert first.client_id_list == ids[:2] and first.next_token
    seen = list(first.client_id_list)
    token = first.next_token
    while token:
        following = page(page_size="2", next_token=token)
        seen += following.client_id_list
        token = following.next_token
    assert seen == ids
    third = page(page_size="2", page_no="3")
    assert third.client_id_list == ids[4:] and third.next_token is None
    for bad in [dict(page_size="0"), dict(page_size="101"), dict(page_size="x")]:
        e = raises(lambda: page(**bad))
        assert e.code == "InvalidParameter.PageSize", bad
    e = raises(lambda: page(page_size="2", next_token="not-ours"))
    assert e.code == "InvalidParameter.NextToken"


def test_bad_client_ids_name_the_parameter(mqgate):
    client = tea(mqgate, None)
    for bad, why in [("no-separator", "GroupId@@@DeviceId"), ("GID_x@@@dev", "7 to 64"),
                     ("GID_test@@@", "device id"), (f"GID_test@@@{'d' * 60}", "64 characters")]:
        e = raises(lambda: register(client, bad))
        assert e.code == "InvalidParameter.ClientId", bad
        assert why in e.message, e.message


def test_the_old_core_sdk_request_classes(mqgate):
    acs = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, "cn-hangzhou", port=mqgate.http_port,
                    auto_retry=False)

    def call(request, client_id="GID_core@@@dev"):
        request.set_endpoint(mqgate.http_host)
        request.set_protocol_type("http")
        request.set_InstanceId(INSTANCE)
        request.set_ClientId(client_id)
        return json.loads(acs.do_action_with_exception(request))

    registered = call(RegisterDeviceCredentialRequest())["DeviceCredential"]
    assert call(GetDeviceCredentialRequest())["DeviceCredential"] == registered
    refreshed = call(RefreshDeviceCredentialRequest())["DeviceCredential"]
    assert refreshed["DeviceAccessKeySecret"] != registered["DeviceAccessKeySecret"]
    assert "RequestId" in call(UnRegisterDeviceCredentialRequest())
    with pytest.raises(ServerException) as raised:
        call(GetDeviceCredentialRequest())
    assert raised.value.get_error_code() == "DeviceCredentialNotFound"


def test_ram_names_the_credential_actions(mqgate):
    reader = tea(mqgate, None, key="reader-key", secret="reader-secret")
    e = raises(lambda: register(reader, "GID_reader@@@dev"))
    assert e.code == "Forbidden.RAM"
    assert e.access_denied_detail["AuthAction"] == "mq:RegisterDeviceCredential"
