#!/usr/bin/env python3
"""Opens N idle MQTT 3.1.1 connections and holds them until killed.

The same login as `cargo bench --bench system` (idle section): anonymous
(the config's anonymous_instance), client id idle-{i}, clean session,
keepalive 600 s, one CONNECT per socket, its CONNACK read, then nothing.
Prints "connected N" once all are up, then sleeps.

Usage: idle_clients.py HOST:PORT N [PREFIX]
Used by bench/memory_breakdown.sh; needs nothing but Python 3.
"""

import socket
import sys
import time


def varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def connect_packet(client_id):
    cid = client_id.encode()
    # Variable header: "MQTT", level 4, flags clean session, keepalive 600.
    body = b"\x00\x04MQTT\x04\x02\x02\x58" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + varint(len(body)) + body


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed before CONNACK")
        data += chunk
    return data


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else "idle"
    sockets = []
    for i in range(count):
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(connect_packet(f"{prefix}-{i}"))
        ack = read_exact(s, 4)
        if ack != b"\x20\x02\x00\x00":
            raise SystemExit(f"connection {i}: CONNACK {ack.hex()}")
        sockets.append(s)
    print(f"connected {len(sockets)}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
