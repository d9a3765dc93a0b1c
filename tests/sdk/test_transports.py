"""Devices over MQTT over TLS, WebSocket and secure WebSocket (paho-mqtt,
mosquitto_sub), managed over HTTPS by the official SDKs with their default
protocol, against a mqgate serving every transport with a certificate made
at run time (`mqgate cert`), whose CA the clients are told to trust."""

import json
import socket
import ssl
import subprocess

import paho.mqtt.client as mqtt
import pytest
import requests
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from aliyunsdkcore.client import AcsClient
from aliyunsdkonsmqtt.request.v20200420.QuerySessionByClientIdRequest import (
    QuerySessionByClientIdRequest,
)

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE, wait_until

TRANSPORTS = ["tls", "ws", "wss"]
PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]


def tea(gate, ca, host=None):
    """The Tea SDK as its users configure it: no protocol (its default is
    https), the endpoint, and the CA to trust (`Config.ca`)."""
    default_host, port = gate.https
    host = host or default_host
    config = open_api_models.Config(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        endpoint=f"{host}:{port}",
        region_id="cn-hangzhou",
        ca=ca,
    )
    assert config.protocol is None
    return Client(config)


def online(client, client_id):
    return client.query_session_by_client_id(
        models.QuerySessionByClientIdRequest(client_id=client_id, instance_id=INSTANCE)
    ).body.online_status


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_device_over_each_transport(secure_mqgate, secure_device_factory, transport, protocol):
    """Connect, subscribe, receive (SendMessage over HTTPS), seen online by
    QuerySessionByClientId, kicked by CloseConnection."""
    client = tea(secure_mqgate, secure_mqgate.ca)
    client_id = f"GID_transport@@@{transport}-{protocol}"
    topic = f"transports/{transport}/{protocol}"
    device = secure_device_factory(client_id, protocol, transport=transport)
    assert device.wait_connected() == 0
    device.client.subscribe(topic, qos=1)
    assert device.subscribed.wait(5), "no SUBACK within 5 s"

    answer = client.send_message(
        models.SendMessageRequest(instance_id=INSTANCE, mqtt_topic=topic, payload="over " + transport)
    ).body
    assert len(answer.msg_id) == 32
    assert wait_until(lambda: (topic, b"over " + transport.encode()) in device.messages)

    assert online(client, client_id) is True
    body = client.close_connection(
        models.CloseConnectionRequest(client_id=client_id, instance_id=INSTANCE)
    ).body
    assert body.code == 200 and body.success is True
    reason = device.wait_disconnected()
    if protocol == mqtt.MQTTv5:
        assert reason.value == 0x98
    assert online(client, client_id) is False


def test_the_tea_sdk_refuses_https_without_the_ca(secure_mqgate):
    """Its default verification is on: without the CA it trusts only the
    public roots, and the call fails before it is sent. (By the name
    localhost: the SDK keeps one connection pool per host and port, and the
    pool for 127.0.0.1 holds connections the other tests verified.)"""
    with pytest.raises(Exception) as raised:
        online(tea(secure_mqgate, None, host="localhost"), "GID_x@@@nobody")
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value), raised.value


def test_the_core_sdk_over_https(secure_mqgate, secure_device_factory):
    """aliyun-python-sdk-core over https, told the CA by `verify`."""
    client_id = "GID_transport@@@core-sdk"
    device = secure_device_factory(client_id, transport="tls")
    assert device.wait_connected() == 0
    host, port = secure_mqgate.https
    acs = AcsClient(
        ACCESS_KEY_ID, ACCESS_KEY_SECRET, "cn-hangzhou", port=port, auto_retry=False,
        verify=secure_mqgate.ca,
    )
    request = QuerySessionByClientIdRequest()
    request.set_endpoint(host)
    request.set_protocol_type("https")
    request.set_InstanceId(INSTANCE)
    request.set_ClientId(client_id)
    assert json.loads(acs.do_action_with_exception(request))["OnlineStatus"] is True


def test_mosquitto_over_tls_with_the_ca(secure_mqgate):
    """mosquitto_sub (OpenSSL) checks the certificate against --cafile for
    the name it connects to, and receives a message."""
    host, port = secure_mqgate.mqtts
    client_id = "GID_transport@@@mosquitto"
    sub = subprocess.Popen(
        ["mosquitto_sub", "--cafile", secure_mqgate.ca, "-h", "localhost", "-p", str(port),
         "-i", client_id, "-t", "transports/mosquitto", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = tea(secure_mqgate, secure_mqgate.ca)
        assert wait_until(lambda: online(client, client_id))
        client.send_message(
            models.SendMessageRequest(instance_id=INSTANCE, mqtt_topic="transports/mosquitto",
                                      payload="hello over TLS")
        )
        out, err = sub.communicate(timeout=10)
        assert sub.returncode == 0, err
        assert out.strip() == "hello over TLS"
    finally:
        sub.kill()


def test_plain_and_unverified_clients_are_turned_away(secure_mqgate):
    """Plain HTTP on the HTTPS port is closed; a TLS client that does not
    trust the CA fails its handshake; the WebSocket port answers 404 off
    /mqtt."""
    host, port = secure_mqgate.https
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{host}:{port}/", timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{host}:{port}/", timeout=5)
    assert requests.get(f"https://{host}:{port}/", timeout=5, verify=secure_mqgate.ca).status_code == 400

    ws_host, ws_port = secure_mqgate.ws
    answer = requests.get(
        f"http://{ws_host}:{ws_port}/not-mqtt",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "mqtt",
        },
        timeout=5,
    )
    assert answer.status_code == 404
    assert "/mqtt" in answer.text

    context = ssl.create_default_context()
    tls_host, tls_port = secure_mqgate.mqtts
    with socket.create_connection((tls_host, tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="localhost")
