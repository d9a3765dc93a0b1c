"""Fixtures: a real mqgate process on loopback ports picked by the OS, and
real MQTT clients (paho-mqtt, mosquitto) connected to it."""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time

import paho.mqtt.client as mqtt
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MQGATE_BIN", str(ROOT / "target" / "debug" / "mqgate"))

ACCESS_KEY_ID = "testid"
ACCESS_KEY_SECRET = "testsecret"
INSTANCE = "mqtt-cn-test0001"
OTHER_INSTANCE = "mqtt-cn-other0001"
# An instance of the first account that admits only created group ids.
STRICT_INSTANCE = "mqtt-cn-strict0001"

# Secrets the suite holds or is handed (account secrets, tokens, device
# secrets): mqgate's log must hold none of them when it stops.
SECRETS_SEEN = [ACCESS_KEY_SECRET, "operator-secret", "reader-secret", "other-secret"]

CONFIG = """
[http]
listen = "127.0.0.1:0"
{http_extra}
[mqtt]
listen = "127.0.0.1:0"
anonymous_instance = "{instance}"
{mqtt_extra}
[storage]
dir = "{storage}"
{storage_extra}
[[accounts]]
id = "1234567890"
  # The suite calls these many times a second; their defaults (10/s) are
  # exercised by the Rust tests.
  [accounts.limits]
  CreateGroupId = 1000
  DeleteGroupId = 1000
  ListGroupId = 1000
  ListDeviceCredentialClientId = 1000
  RevokeToken = 1000
  AddCustomAuthIdentity = 1000
  UpdateCustomAuthIdentity = 1000
  DeleteCustomAuthIdentity = 1000
  QueryCustomAuthIdentity = 1000
  AddCustomAuthPermission = 1000
  UpdateCustomAuthPermission = 1000
  DeleteCustomAuthPermission = 1000
  QueryCustomAuthPermission = 1000
  AddCustomAuthConnectBlack = 1000
  DeleteCustomAuthConnectBlack = 1000
  QueryCustomAuthConnectBlack = 1000
  ListInstances = 1000
  TagResources = 1000
  UntagResources = 1000
  ListTagResources = 1000
  [[accounts.instances]]
  id = "{instance}"
  region = "cn-hangzhou"
  [[accounts.instances]]
  id = "{strict}"
  require_group_ids = true
  [[accounts.users]]
  name = "root"
  access_key_id = "{key}"
  access_key_secret = "{secret}"
  root = true
  [[accounts.users]]
  name = "reader"
  access_key_id = "reader-key"
  access_key_secret = "reader-secret"
  policies = ["AliyunMQReadOnlyAccess"]
  [[accounts.users]]
  name = "operator"
  access_key_id = "operator-key"
  access_key_secret = "operator-secret"
  policies = ["AliyunMQFullAccess", "ExampleAllButCloseConnection"]
  [[accounts.users]]
  name = "office"
  access_key_id = "office-key"
  access_key_secret = "office-secret"
  policies = ["{storage}/loopback-only.json"]
  [[accounts.users]]
  name = "lister"
  access_key_id = "lister-key"
  access_key_secret = "lister-secret"
  policies = ["{storage}/list-groups-only.json"]
  [[accounts.users]]
  name = "elsewhere"
  access_key_id = "elsewhere-key"
  access_key_secret = "elsewhere-secret"
  policies = ["{storage}/other-network-only.json"]
[[accounts]]
id = "2222222222"
  [[accounts.instances]]
  id = "{other}"
  [[accounts.users]]
  name = "root"
  access_key_id = "other-key"
  access_key_secret = "other-secret"
  root = true
"""


class Mqgate:
    def __init__(self, process, words, ca=None):
        self.process = process
        self.http_host, self.http_port = split_addr(words["http"])
        self.mqtt_host, self.mqtt_port = split_addr(words["mqtt"])
        # Where served (a configuration with TLS and WebSocket listeners):
        # (host, port) of HTTPS, MQTT over TLS, WebSocket, secure WebSocket,
        # and the CA file that signed the server's certificate.
        self.https, self.mqtts, self.ws, self.wss = (
            split_addr(words[w]) if w in words else None for w in ("https", "mqtts", "ws", "wss")
        )
        self.ca = ca


def split_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="session")
def mqgate():
    yield from run_mqgate("")


@pytest.fixture(scope="session")
def limited_mqgate():
    """A second mqgate whose QuerySessionByClientId limit is 1 call/s."""
    yield from run_mqgate("[limits]\nQuerySessionByClientId = 1\n")


@pytest.fixture(scope="session")
def secure_mqgate():
    """A mqgate that also serves HTTPS, MQTT over TLS, WebSocket and secure
    WebSocket, on ports picked by the OS, with a CA and server certificate
    made now by `mqgate cert`."""
    yield from run_mqgate("", secure=True)


def run_mqgate(extra_config, secure=False, storage_extra=""):
    assert os.path.exists(BIN), f"{BIN} is missing: run cargo build first"
    with tempfile.TemporaryDirectory() as storage:
        http_extra = mqtt_extra = ""
        ca = None
        if secure:
            tls = pathlib.Path(storage) / "tls"
            subprocess.run([BIN, "cert", "--out", str(tls)], check=True, stdout=subprocess.DEVNULL)
            ca = str(tls / "ca.crt")
            files = f'tls_cert = "{tls / "server.crt"}"\ntls_key = "{tls / "server.key"}"\n'
            http_extra = 'tls_listen = "127.0.0.1:0"\n' + files
            mqtt_extra = (
                'tls_listen = "127.0.0.1:0"\nws_listen = "127.0.0.1:0"\n'
                'wss_listen = "127.0.0.1:0"\n' + files
            )
        for name, network in [("loopback-only", "127.0.0.0/8"), ("other-network-only", "10.0.0.0/8")]:
            (pathlib.Path(storage) / f"{name}.json").write_text(
                json.dumps({
                    "Version": "1",
                    "Statement": [{
                        "Effect": "Allow",
                        "Action": "mq:*",
                        "Resource": "*",
                        "Condition": {"IpAddress": {"acs:SourceIp": [network]}},
                    }],
                })
            )
        (pathlib.Path(storage) / "list-groups-only.json").write_text(
            json.dumps({
                "Version": "1",
                "Statement": [{"Effect": "Allow", "Action": "mq:ListMqttGroupId", "Resource": "*"}],
            })
        )
        config = pathlib.Path(storage) / "mqgate.toml"
        config.write_text(
            extra_config
            + CONFIG.format(
                instance=INSTANCE,
                other=OTHER_INSTANCE,
                strict=STRICT_INSTANCE,
                storage=storage,
                storage_extra=storage_extra,
                key=ACCESS_KEY_ID,
                secret=ACCESS_KEY_SECRET,
                http_extra=http_extra,
                mqtt_extra=mqtt_extra,
            )
        )
        log = open(pathlib.Path(storage) / "mqgate.log", "w")
        process = subprocess.Popen(
            [BIN, "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        first = process.stdout.readline()
        words = dict(w.split("=", 1) for w in first.split() if "=" in w)
        assert "http" in words, f"mqgate did not start: {first!r}"
        yield Mqgate(process, words, ca)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        log.close()
        text = (pathlib.Path(storage) / "mqgate.log").read_text()
        leaked = [s for s in SECRETS_SEEN if s and s in text]
        assert not leaked, f"{len(leaked)} secret(s) the tests were handed appear in mqgate's log"


def device_password(secret, client_id):
    """Signature mode: Base64(HMAC-SHA1(AccessKeySecret, ClientId))."""
    digest = hmac.new(secret.encode(), client_id.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class Device:
    """A paho-mqtt client in its own network loop, recording how it ended.
    `transport`: "tcp", or (for a gate that serves them) "tls", "ws" or
    "wss" (TLS trusting the gate's CA; WebSocket at /mqtt)."""

    def __init__(self, gate, client_id, protocol, signed=True, instance=INSTANCE, login=None,
                 transport="tcp"):
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subscribed = threading.Event()
        self.connect_reason = None
        self.disconnect_reason = None
        self.messages = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
            transport="websockets" if transport in ("ws", "wss") else "tcp",
        )
        host, port = {
            "tcp": (gate.mqtt_host, gate.mqtt_port),
            "tls": gate.mqtts,
            "ws": gate.ws,
            "wss": gate.wss,
        }[transport]
        if transport in ("ws", "wss"):
            self.client.ws_set_options(path="/mqtt")
        if transport in ("tls", "wss"):
            self.client.tls_set(ca_certs=gate.ca)
        if login:
            self.client.username_pw_set(*login)
        elif signed:
            self.client.username_pw_set(
                f"Signature|{ACCESS_KEY_ID}|{instance}",
                device_password(ACCESS_KEY_SECRET, client_id),
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.reconnect_delay_set(60, 120)  # no reconnect during a test
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_reason = reason_code
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code
        self.disconnected.set()

    def wait_connected(self):
        assert self.connected.wait(5), "no CONNACK within 5 s"
        return self.connect_reason

    def wait_disconnected(self):
        assert self.disconnected.wait(5), "connection did not end within 5 s"
        return self.disconnect_reason

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def devices_of(gate):
    made = []

    def make(client_id, protocol=mqtt.MQTTv311, signed=True, instance=INSTANCE, login=None,
             transport="tcp"):
        d = Device(gate, client_id, protocol, signed, instance, login, transport)
        made.append(d)
        return d

    return made, make


@pytest.fixture
def device_factory(mqgate):
    made, make = devices_of(mqgate)
    yield make
    for d in made:
        d.stop()


@pytest.fixture
def secure_device_factory(secure_mqgate):
    """Devices of `secure_mqgate`, over any of its transports."""
    made, make = devices_of(secure_mqgate)
    yield make
    for d in made:
        d.stop()


def wait_until(predicate, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
