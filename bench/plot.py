"""Draws the scaling curves of bench/*.csv as PNG files beside them."""

import csv
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def rows(name):
    with open(HERE / name) as f:
        return list(csv.DictReader(f))


def plot_rpc():
    data = rows("rpc.csv")
    x = [int(r["connections"]) for r in data]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in [("floor", "(a) plain axum handler"), ("query", "(b) QuerySessionByClientId"), ("batch", "(c) BatchQuerySessionByClientIds, 10 ids")]:
        left.plot(x, [float(r[f"{key}_rps"]) for r in data], marker="o", label=label)
        right.plot(x, [float(r[f"{key}_p99_ms"]) for r in data], marker="o", label=label)
    for ax, title, unit in [(left, "Throughput", "requests/s"), (right, "p99 latency", "ms")]:
        ax.set_xscale("log")
        ax.set_xlabel("concurrent HTTP connections")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "rpc.png", dpi=110)


def plot_registry():
    data = rows("registry.csv")
    x = [int(r["registered"]) for r in data]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [float(r["query_rps"]) for r in data], marker="o", color="tab:orange")
    ax.set_xscale("log")
    ax.set_xlabel("registered clients")
    ax.set_ylabel("QuerySessionByClientId requests/s")
    ax2 = ax.twinx()
    ax2.plot(x, [float(r["query_p99_ms"]) for r in data], marker="s", color="tab:gray", linestyle="--")
    ax2.set_ylabel("p99 ms (dashed)")
    ax.set_title("Real-time query as the registry grows")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "registry.png", dpi=110)


def plot_idle():
    data = rows("idle.csv")
    fig, ax = plt.subplots(figsize=(6, 4))
    names = {"tcp": "TCP", "tls": "TLS", "ws": "WebSocket", "wss": "secure WebSocket"}
    for transport, label in names.items():
        points = [r for r in data if r.get("transport", "tcp") == transport]
        if points:
            x = [int(r["connections"]) for r in points]
            ax.plot(x, [int(r["rss_kib"]) / 1024 for r in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("idle MQTT devices")
    ax.set_ylabel("mqgate resident memory, MiB")
    ax.set_title("Memory as idle devices grow")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "idle.png", dpi=110)


def plot_mqtt_scaling():
    data = rows("mqtt_scaling.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in [("front", "through mqgate's front layer"), ("rumqttd", "straight to rumqttd")]:
        points = [(int(r["clients"]), r[f"{key}_msgs_per_s"], r[f"{key}_p99_ms"]) for r in data if r[f"{key}_msgs_per_s"]]
        x = [p[0] for p in points]
        left.plot(x, [float(p[1]) for p in points], marker="o", label=label)
        right.plot(x, [float(p[2]) for p in points], marker="o", label=label)
    for ax, title, unit in [(left, "Delivered messages, QoS 1", "messages/s"), (right, "p99 end-to-end latency", "ms")]:
        ax.set_xscale("log")
        ax.set_xlabel("MQTT clients (half publishing, half subscribing)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "mqtt_scaling.png", dpi=110)


if __name__ == "__main__":
    plot_rpc()
    plot_mqtt_scaling()
    plot_registry()
    plot_idle()
