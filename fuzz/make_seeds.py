#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/seeds/<target>/ from the
repository's own data. Deterministic: the same repository gives the same
files (each named by the SHA-1 of its content, as libFuzzer names corpus
entries). Usage: python3 fuzz/make_seeds.py   (from anywhere)

- rpc_params, signature_v1, signature_v3: the raw HTTP requests the official
  SDKs sent (tests/data/sdk-captures/*.http), as they are.
- policy: every policy of tests/data/ram-vectors.json followed by a NUL and
  its vector's request (action, resource, key=value context lines), and
  the shipped policies (policies/*.json).
- mqtt_front, mqtt_link: MQTT 3.1.1 and 5 client byte streams (CONNECT with
  every property, will and login; PUBLISH QoS 0/1/2 with properties and a
  topic alias; SUBSCRIBE with options; UNSUBSCRIBE; the PUBLISH acks;
  PINGREQ; DISCONNECT with and without a reason; AUTH), encoded below
  byte by byte after the MQTT 3.1.1 and 5.0 specifications.
- emqx_query: the query strings of tests/emqx_api.rs and src/emqx/query.rs.
- config_toml: mqgate.example.toml and the TOML configurations written in
  the tests (tests/*.rs, tests/common/*.rs, src/*.rs).
"""
import hashlib
import json
import os
import re
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def reset(target):
    shutil.rmtree(os.path.join(SEEDS, target), ignore_errors=True)


# ---------------------------------------------------------------- HTTP
def http_seeds():
    d = os.path.join(ROOT, "tests", "data", "sdk-captures")
    captures = sorted(f for f in os.listdir(d) if f.endswith(".http"))
    for t in ("rpc_params", "signature_v1", "signature_v3"):
        reset(t)
        for name in captures:
            with open(os.path.join(d, name), "rb") as f:
                write(t, f.read())


# ---------------------------------------------------------------- RAM
def policy_seeds():
    reset("policy")
    with open(os.path.join(ROOT, "tests", "data", "ram-vectors.json")) as f:
        vectors = json.load(f)
    for v in vectors:
        r = v["request"]
        request = "\n".join(
            [r["action"], r["resource"]]
            + ["%s=%s" % (k, val) for k, val in r.get("context", {}).items()]
        )
        for p in v["policies"]:
            doc = p if isinstance(p, str) else json.dumps(p, indent=1)
            write("policy", doc.encode() + b"\0" + request.encode())
    d = os.path.join(ROOT, "policies")
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            write("policy", f.read())


# ---------------------------------------------------------------- MQTT
def varint(n):
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(b)) + b


def packet(byte1, body):
    return bytes([byte1]) + varint(len(body)) + body


def props(*items):
    body = b"".join(items)
    return varint(len(body)) + body


def p_u8(pid, v):
    return bytes([pid, v])


def p_u16(pid, v):
    return bytes([pid]) + struct.pack(">H", v)


def p_u32(pid, v):
    return bytes([pid]) + struct.pack(">I", v)


def p_str(pid, v):
    return bytes([pid]) + s(v)


def p_pair(k, v):
    return b"\x26" + s(k) + s(v)


def connect(v5, client_id, clean=True, keepalive=60, will=None, user=None, password=None,
            properties=b"", will_properties=b""):
    flags = (0x02 if clean else 0)
    payload = s(client_id)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += (props(will_properties) if v5 else b"") + s(topic) + s(msg)
    if user is not None:
        flags |= 0x80
        payload += s(user)
    if password is not None:
        flags |= 0x40
        payload += s(password)
    body = s("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack(">H", keepalive)
    if v5:
        body += props(properties)
    return packet(0x10, body + payload)


def publish(v5, topic, payload, qos=0, pkid=1, retain=False, dup=False, properties=b""):
    byte1 = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = s(topic)
    if qos:
        body += struct.pack(">H", pkid)
    if v5:
        body += props(properties)
    return packet(byte1, body + payload)


def ack(kind, pkid, v5, reason=None, properties=b""):
    byte1 = {4: 0x40, 5: 0x50, 6: 0x62, 7: 0x70}[kind]
    body = struct.pack(">H", pkid)
    if v5 and (reason is not None or properties):
        body += bytes([reason or 0]) + props(properties)
    return packet(byte1, body)


def subscribe(v5, pkid, filters, properties=b""):
    body = struct.pack(">H", pkid) + (props(properties) if v5 else b"")
    for f, opts in filters:
        body += s(f) + bytes([opts])
    return packet(0x82, body)


def unsubscribe(v5, pkid, filters, properties=b""):
    body = struct.pack(">H", pkid) + (props(properties) if v5 else b"")
    for f in filters:
        body += s(f)
    return packet(0xA2, body)


PINGREQ = b"\xc0\x00"


def disconnect(v5, reason=None, properties=b""):
    if not v5 or reason is None:
        return b"\xe0\x00"
    body = bytes([reason])
    if properties:
        body += props(properties)
    return packet(0xE0, body)


def auth(reason, properties):
    return packet(0xF0, bytes([reason]) + props(properties))


ID = "GID_demo@@@dev-01"
USER = "Signature|LTAI5tTestAccessKey|mqtt-cn-test0001"
PASSWORD = "Pz8Kx4mQxq6sQyYzUQ1k4k2Xn8A="


def client_streams():
    """(name, protocol_v5, connect, later frames) of a few sessions."""
    out = []
    # 3.1.1: a plain device, then one with a will and clean session false.
    c4 = connect(False, ID, user=USER, password=PASSWORD)
    c4w = connect(False, "GID_demo@@@dev-02", clean=False, keepalive=30,
                  will=("parent/dev-02/will", b"gone", 1, True), user=USER, password=PASSWORD)
    later4 = [
        subscribe(False, 1, [("parent/#", 1), ("parent/+/status", 2), ("$SYS/x", 0)]),
        publish(False, "parent/dev-01/up", b"hello", 0),
        publish(False, "parent/dev-01/up", b"\x00\x01binary", 1, pkid=2, retain=True),
        publish(False, "parent/dev-01/up", b"q2", 2, pkid=3, dup=True),
        ack(4, 7, False), ack(5, 8, False), ack(6, 3, False), ack(7, 9, False),
        unsubscribe(False, 4, ["parent/#", "parent/+/status"]),
        PINGREQ,
        disconnect(False),
    ]
    out.append(("v311", False, c4, later4))
    out.append(("v311_will", False, c4w, later4[:3] + [PINGREQ]))
    # 5: every CONNECT property, a will with its properties.
    cprops = (p_u32(0x11, 3600) + p_u16(0x21, 20) + p_u32(0x27, 1 << 20) + p_u16(0x22, 10)
              + p_u8(0x19, 1) + p_u8(0x17, 1) + p_pair("k", "v") + p_pair("region", "cn-hangzhou")
              + p_str(0x15, "SCRAM-SHA-1") + bytes([0x16]) + s(b"\x01\x02\x03"))
    wprops = (p_u32(0x18, 5) + p_u8(0x01, 1) + p_u32(0x02, 60) + p_str(0x03, "text/plain")
              + p_str(0x08, "parent/reply") + bytes([0x09]) + s(b"corr") + p_pair("w", "1"))
    c5 = connect(True, ID, user=USER, password=PASSWORD, properties=cprops)
    c5w = connect(True, "GID_demo@@@dev-03", clean=False, keepalive=0,
                  will=("parent/dev-03/will", b"bye", 2, False), user=USER, password=PASSWORD,
                  properties=p_u32(0x11, 0xFFFFFFFF) + p_u16(0x22, 5), will_properties=wprops)
    c5anon = connect(True, "", user=None, password=None)
    pubprops = (p_u8(0x01, 1) + p_u32(0x02, 30) + p_u16(0x23, 1) + p_str(0x08, "parent/reply")
                + bytes([0x09]) + s(b"id-1") + p_pair("trace", "on") + p_str(0x03, "application/json"))
    later5 = [
        subscribe(True, 1, [("parent/#", 0x01), ("parent/+/status", 0x2E), ("$share/g/parent/x", 0x02)],
                  properties=bytes([0x0B]) + varint(7) + p_pair("s", "1")),
        publish(True, "parent/dev-01/up", b'{"t":1}', 1, pkid=2, properties=pubprops),
        publish(True, "", b"via alias", 0, properties=p_u16(0x23, 1)),
        publish(True, "parent/dev-01/up", b"q2", 2, pkid=3, properties=p_str(0x03, "x") + p_pair("a", "b")),
        ack(4, 7, True, 0x10, p_str(0x1F, "no subscribers")), ack(5, 8, True, 0x00),
        ack(6, 3, True, 0x92, p_str(0x1F, "unknown id")), ack(7, 9, True),
        unsubscribe(True, 4, ["parent/#"], properties=p_pair("u", "1")),
        PINGREQ,
        auth(0x18, p_str(0x15, "SCRAM-SHA-1") + bytes([0x16]) + s(b"data")),
        disconnect(True, 0x04, p_u32(0x11, 0) + p_str(0x1F, "bye") + p_pair("d", "1")),
    ]
    out.append(("v5", True, c5, later5))
    out.append(("v5_will", True, c5w, later5[:4] + [disconnect(True, 0x00)]))
    out.append(("v5_anon", True, c5anon, [PINGREQ, disconnect(True, 0x8E)]))
    return out


def mqtt_seeds():
    reset("mqtt_front")
    reset("mqtt_link")
    for name, v5, conn, later in client_streams():
        for mode in (0, 1):  # the default packet size limit, a small one
            m = mode | (2 if v5 else 0)
            write("mqtt_front", bytes([m]) + conn + b"".join(later))
        write("mqtt_front", bytes([2 if v5 else 0]) + conn)
        for frame in later:
            write("mqtt_front", bytes([2 if v5 else 0]) + conn + frame)
        # The link: the later frames (the decoded PUBLISH and acks).
        write("mqtt_link", b"\x00" + b"".join(later))
        for frame in later:
            write("mqtt_link", b"\x00" + frame)
    # Router packets built from bytes (the target's 0x80 mode).
    for i in range(16):
        write("mqtt_link", bytes([0x80]) + hashlib.sha256(b"router%d" % i).digest() * 4)


# ---------------------------------------------------------------- EMQX
def emqx_seeds():
    reset("emqx_query")
    queries = set()
    for rel in ("tests/emqx_api.rs", "src/emqx/query.rs", "src/emqx/mod.rs"):
        p = os.path.join(ROOT, rel)
        if not os.path.exists(p):
            continue
        text = open(p).read()
        for m in re.finditer(r'clients\?([^"\s]*)"', text):
            queries.add(m.group(1))
        for m in re.finditer(r'Some\("([^"]*=[^"]*)"\)', text):
            queries.add(m.group(1))
        for m in re.finditer(r'\("([a-z_]+=[^"]*)",', text):
            queries.add(m.group(1))
    queries |= {
        "", "page=1&limit=10", "_page=2&_limit=1&fields=all",
        "clientid=GID_demo%40%40%40dev-01&username=u",
        "ip_address=::ffff:127.0.0.1&clean_start=true&proto_name=MQTT&node=mqgate@127.0.0.1",
        "gte_created_at=2026-11-22T02:48:57Z&lte_created_at=1800000000000",
        "conn_state=idle&like_username=Sig",
    }
    for q in sorted(queries):
        write("emqx_query", q)


# ---------------------------------------------------------------- config
def config_seeds():
    reset("config_toml")
    with open(os.path.join(ROOT, "mqgate.example.toml")) as f:
        write("config_toml", f.read())
    files = []
    for d in ("tests", os.path.join("tests", "common"), "src"):
        p = os.path.join(ROOT, d)
        files += [os.path.join(p, f) for f in sorted(os.listdir(p)) if f.endswith(".rs")]
    seen = set()
    for path in files:
        text = open(path).read()
        for m in re.finditer(r'r#"(.*?)"#', text, re.S):
            body = m.group(1)
            if "[[accounts" in body or "[http]" in body or "[mqtt]" in body:
                # Raw strings given to format!: {{ }} are literal braces.
                body = body.replace("{{", "{").replace("}}", "}")
                if body not in seen:
                    seen.add(body)
                    write("config_toml", body)


if __name__ == "__main__":
    http_seeds()
    policy_seeds()
    mqtt_seeds()
    emqx_seeds()
    config_seeds()
    for t in sorted(os.listdir(SEEDS)):
        d = os.path.join(SEEDS, t)
        n = len(os.listdir(d))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print("%-14s %4d files %7d bytes" % (t, n, size))
