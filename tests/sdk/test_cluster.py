"""Three mqgate nodes sharing one redis-server on loopback ([cluster]),
driven by the official Tea SDK and real paho-mqtt devices: SDK calls
spread over the nodes, devices connected to different nodes of one
instance exchange messages (the instance is served by one node; the
others relay its devices there), and a device connected to node 3 is seen
online and kicked through node 1.

redis-server must be on PATH (tests/run_all.sh installs Debian's)."""

import shutil
import socket
import subprocess
import tempfile
import time

import paho.mqtt.client as mqtt
import pytest
from alibabacloud_onsmqtt20200420 import models

from conftest import (
    ACCESS_KEY_ID,
    INSTANCE,
    SECRETS_SEEN,
    Device,
    device_password,
    run_mqgate,
    wait_until,
)
from test_tea_sdk import tea

PROTOCOLS = [mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["mqtt-3.1.1", "mqtt-5"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16) == b"+PONG\r\n"
    except OSError:
        return False


def redis_get(port, key):
    """GET `key` in RESP: the value, or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
        answer = b""
        while True:
            chunk = s.recv(256)
            assert chunk, "Redis closed before answering GET"
            answer += chunk
            header, _, rest = answer.partition(b"\r\n")
            if header == b"$-1":
                return None
            if header.startswith(b"$") and len(rest) >= int(header[1:]) + 2:
                return rest[: int(header[1:])].decode()


@pytest.fixture(scope="module")
def cluster():
    """redis-server, then nodes n2, n1, n3 in that order: n2 starts alone
    and takes the instance's lease, so n1 and n3 relay its devices to n2."""
    assert shutil.which("redis-server"), (
        "redis-server is missing: tests/run_all.sh installs Debian's redis-server"
    )
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_until(lambda: redis_answers(port), 10), "redis-server did not answer"
            runs, nodes = [], {}
            for name in ["n2", "n1", "n3"]:
                config = f'[cluster]\nredis_url = "redis://127.0.0.1:{port}"\nnode_id = "{name}"\n'
                # Every node derives device secrets from one key file.
                run = run_mqgate(config, storage_extra=f'device_key_file = "{data}/devices.key"')
                nodes[name] = next(run)
                runs.append(run)
            holder = redis_get(port, f"mqgate:lease:{INSTANCE}")
            assert holder and holder.startswith("n2|"), holder
            yield nodes
            # Each node stops cleanly (SIGTERM, exit 0) with no secret in
            # its log (run_mqgate's own checks).
            for run in runs:
                next(run, None)
        finally:
            redis.kill()
            redis.wait()


@pytest.fixture
def devices():
    made = []

    def make(gate, client_id, protocol=mqtt.MQTTv311, login=None):
        device = Device(gate, client_id, protocol, login=login)
        made.append(device)
        assert device.wait_connected() == 0, f"{client_id} was refused"
        return device

    yield make
    for device in made:
        device.stop()


def subscribe(device, topic):
    device.subscribed.clear()
    device.client.subscribe(topic, qos=1)
    assert device.subscribed.wait(5), "no SUBACK within 5 s"


def received(device, topic, payload, timeout=5.0):
    return wait_until(lambda: (topic, payload) in device.messages, timeout)


def online(client, client_id):
    body = client.query_session_by_client_id(
        models.QuerySessionByClientIdRequest(instance_id=INSTANCE, client_id=client_id)
    ).body
    return body.online_status


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
def test_devices_on_different_nodes_exchange_messages(cluster, devices, protocol):
    tag = "v5" if protocol == mqtt.MQTTv5 else "v4"
    on_n1 = devices(cluster["n1"], f"GID_c@@@{tag}-on-n1", protocol)
    on_n3 = devices(cluster["n3"], f"GID_c@@@{tag}-on-n3", protocol)
    subscribe(on_n1, f"chat/{tag}/to-n1")
    subscribe(on_n3, f"chat/{tag}/to-n3")
    on_n3.client.publish(f"chat/{tag}/to-n1", b"hello from n3", qos=1)
    on_n1.client.publish(f"chat/{tag}/to-n3", b"hello from n1", qos=1)
    assert received(on_n1, f"chat/{tag}/to-n1", b"hello from n3")
    assert received(on_n3, f"chat/{tag}/to-n3", b"hello from n1")


def test_send_message_through_every_node_reaches_a_device_on_another(cluster, devices):
    listener = devices(cluster["n3"], "GID_c@@@listens-on-n3")
    subscribe(listener, "api/+")
    for name, gate in cluster.items():
        body = tea(gate, None).send_message(
            models.SendMessageRequest(
                instance_id=INSTANCE, mqtt_topic=f"api/{name}", payload=f"through {name}"
            )
        ).body
        assert len(body.msg_id) == 32, body
        assert received(listener, f"api/{name}", f"through {name}".encode()), name


def test_a_device_on_node_3_is_seen_online_and_kicked_through_node_1(cluster, devices):
    client_id = "GID_c@@@kicked-through-n1"
    device = devices(cluster["n3"], client_id, mqtt.MQTTv5)
    n1 = tea(cluster["n1"], None)
    assert wait_until(lambda: online(n1, client_id)), "not seen online through n1"
    for gate in cluster.values():
        assert online(tea(gate, "v2"), client_id)
    batch = n1.batch_query_session_by_client_ids(
        models.BatchQuerySessionByClientIdsRequest(
            instance_id=INSTANCE, client_id_list=[client_id, "GID_c@@@nowhere"]
        )
    ).body
    assert [(s.client_id, s.online_status) for s in batch.online_status_list] == [
        (client_id, True),
        ("GID_c@@@nowhere", False),
    ]

    asked = time.time()
    n1.close_connection(models.CloseConnectionRequest(instance_id=INSTANCE, client_id=client_id))
    # MQTT 5: the device hears why (0x98, administrative action), through
    # the node it connected to.
    assert device.wait_disconnected() == 152
    assert time.time() - asked < 5
    assert wait_until(lambda: not online(n1, client_id)), "still online through n1"


def test_device_state_made_through_one_node_logs_devices_in_through_another(cluster, devices):
    """Tokens, device credentials and custom-auth identities are shared:
    made through one node with the official SDK, they log a paho device in
    through another (the instance is served by n2). A change reaches the
    other nodes about a millisecond after its answer (README), so each
    login waits until the serving node's API shows the change."""
    n1, n2, n3 = (tea(cluster[name], None) for name in ["n1", "n2", "n3"])

    token = n1.apply_token(
        models.ApplyTokenRequest(
            instance_id=INSTANCE, actions="R,W", resources="state/#",
            expire_time=int(time.time() * 1000) + 3_600_000,
        )
    ).body.token
    SECRETS_SEEN.append(token)
    for name, node in [("n2", n2), ("n3", n3)]:
        assert wait_until(lambda: node.query_token(
            models.QueryTokenRequest(instance_id=INSTANCE, token=token)
        ).body.token_status), f"a token applied through n1 is not valid through {name}"
    with_token = devices(
        cluster["n3"], "GID_c@@@token-via-n3",
        login=(f"Token|{ACCESS_KEY_ID}|{INSTANCE}", f"RW|{token}"),
    )
    subscribe(with_token, "state/echo")
    with_token.client.publish("state/echo", b"token", qos=1)
    assert received(with_token, "state/echo", b"token")

    client_id = "GID_cluster@@@credential-via-n1"
    credential = n3.register_device_credential(
        models.RegisterDeviceCredentialRequest(instance_id=INSTANCE, client_id=client_id)
    ).body.device_credential
    SECRETS_SEEN.append(credential.device_access_key_secret)

    def known_on_n2():
        try:
            return n2.get_device_credential(
                models.GetDeviceCredentialRequest(instance_id=INSTANCE, client_id=client_id)
            ).body.device_credential.device_access_key_id == credential.device_access_key_id
        except Exception:  # noqa: BLE001 (not there yet: the SDK raises)
            return False

    assert wait_until(known_on_n2), "a credential registered through n3 is not on n2"
    devices(
        cluster["n1"], client_id,
        login=(
            f"DeviceCredential|{credential.device_access_key_id}|{INSTANCE}",
            device_password(credential.device_access_key_secret, client_id),
        ),
    )

    secret = f"cluster-{int(time.time() * 1000)}"
    SECRETS_SEEN.append(secret)
    n3.add_custom_auth_identity(
        models.AddCustomAuthIdentityRequest(
            instance_id=INSTANCE, identity_type="USER", username="cluster-user",
            secret=secret, sign_mode="ORIGIN",
        )
    )
    n3.add_custom_auth_permission(
        models.AddCustomAuthPermissionRequest(
            instance_id=INSTANCE, identity_type="USER", identity="cluster-user",
            topic="custom/#", effect="ALLOW", permit_action="PUB_SUB",
        )
    )
    assert wait_until(lambda: any(
        r.topic == "custom/#" for r in n2.query_custom_auth_permission(
            models.QueryCustomAuthPermissionRequest(
                instance_id=INSTANCE, identity_type="USER", identity="cluster-user", size=10)
        ).body.data.results
    )), "a permission added through n3 is not listed by n2"
    assert wait_until(lambda: any(
        r.username == "cluster-user" for r in n2.query_custom_auth_identity(
            models.QueryCustomAuthIdentityRequest(
                instance_id=INSTANCE, identity_type="USER", username="cluster-user", size=10)
        ).body.data.results
    )), "an identity added through n3 is not listed by n2"
    custom = devices(cluster["n1"], "GID_c@@@custom-via-n1", login=("cluster-user", secret))
    subscribe(custom, "custom/echo")
    custom.client.publish("custom/echo", b"custom", qos=1)
    assert received(custom, "custom/echo", b"custom")
