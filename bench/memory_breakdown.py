#!/usr/bin/env python3
"""Where an idle device's memory goes: the analysis half of
bench/memory_breakdown.sh (which runs mqgate and the clients).

  memory_breakdown.py snapshot PID FILE
      Writes which pages of PID's writable anonymous mappings are resident
      (from /proc/PID/pagemap) to FILE (JSON).

  memory_breakdown.py report EXE BASE.raw.zst BASE.pages LOADED.raw.zst LOADED.pages N
      Reads two raw heaptrack traces of EXE (heaptrack -r) taken with 0 and
      with N idle devices connected, each with the snapshot of resident
      pages taken just before the process was killed. For every allocation
      still live at the end it knows the call stack (symbolized with
      addr2line from EXE's line tables), its size and which of its pages
      were resident. Prints, per group of allocation sites, the bytes per
      device (LOADED minus BASE, divided by N): allocated (what the program
      asked for) and resident (the part of those bytes on resident pages;
      a page shared by several allocations is split by their bytes in it).

Only Python 3, zstd and addr2line (binutils) are needed.
"""

import bisect
import collections
import json
import os
import re
import subprocess
import sys

PAGE = 4096

# ---------------------------------------------------------------- snapshot


def snapshot(pid, out):
    mappings = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            name = parts[5].strip() if len(parts) > 5 else ""
            mappings.append((start, end, perms, name))
    result = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for start, end, perms, name in mappings:
            entry = {"start": start, "end": end, "perms": perms, "name": name}
            if "r" not in perms or name == "[vsyscall]":
                entry["resident"] = []
                result.append(entry)
                continue
            first = start // PAGE
            count = (end - start) // PAGE
            resident = []
            # Read in chunks of 64k pages (512 KiB of pagemap).
            done = 0
            while done < count:
                chunk = min(65536, count - done)
                data = os.pread(fd, 8 * chunk, 8 * (first + done))
                for i in range(len(data) // 8):
                    word = int.from_bytes(data[8 * i : 8 * i + 8], "little")
                    if word >> 63 & 1:
                        resident.append(first + done + i)
                done += chunk
            entry["resident"] = resident
            result.append(entry)
    finally:
        os.close(fd)
    with open(out, "w") as f:
        json.dump(result, f)


# ---------------------------------------------------------------- raw trace


class Trace:
    """A raw heaptrack trace: modules, the trace tree, live allocations."""

    def __init__(self, path):
        self.modules = []  # (name, base)
        self.exe_base = None
        self.nodes = [(0, 0)]  # index -> (ip, parent)
        self.live = {}  # ptr -> (size, trace)
        self.calls = collections.Counter()  # trace -> allocation calls
        proc = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            kind = line[:1]
            if kind == "+":
                _, size, trace, ptr = line.split()
                ptr = int(ptr, 16)
                trace = int(trace, 16)
                self.live[ptr] = (int(size, 16), trace)
                self.calls[trace] += 1
            elif kind == "-":
                self.live.pop(int(line.split()[1], 16), None)
            elif kind == "t":
                _, ip, parent = line.split()
                self.nodes.append((int(ip, 16), int(parent, 16)))
            elif kind == "m":
                parts = line.split()
                if len(parts) >= 4:
                    name, base = parts[2], int(parts[3], 16)
                    if name == "x":
                        self.exe_base = base
                    self.modules.append((name, base))
        proc.wait()

    def ips(self, trace):
        out = []
        while trace:
            ip, trace = self.nodes[trace]
            out.append(ip)
        return out  # leaf first


def symbolize(exe, offsets):
    """offsets: exe-relative return addresses. Returns offset -> list of
    (function, file, line), innermost inlined frame first."""
    offsets = sorted(set(offsets))
    if not offsets:
        return {}
    text = "\n".join(hex(max(o - 1, 0)) for o in offsets) + "\n"
    out = subprocess.run(
        ["addr2line", "-e", exe, "-f", "-i", "-C", "-a"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    result = {}
    i = 0
    index = -1
    frames = None
    while i < len(out):
        line = out[i]
        if line.startswith("0x"):
            index += 1
            frames = []
            result[offsets[index]] = frames
            i += 1
            continue
        func = re.sub(r"\[[0-9a-f]{16}\]", "", line)
        loc = out[i + 1] if i + 1 < len(out) else "??:0"
        file, _, lineno = loc.rpartition(":")
        lineno = lineno.split()[0] if lineno else "0"
        frames.append((func, file, lineno))
        i += 2
    return result


# ---------------------------------------------------------------- grouping

# (group, where it lives, regular expression over the stack). The stack is
# matched as one string of "function @ file:line" frames, innermost first
# (the crates' paths as in ~/.cargo/registry). First match wins; more
# specific rules come first. The rules naming a line are for rumqttd 0.20.0
# as published (`rumqttd-0.20.0/`); a patched copy elsewhere (a vendored
# `.../rumqttd/src/`) falls to the rules by file, and the report's table of
# sites names every line anyway.
RUMQTTD = r"rumqttd(-[0-9.]+)?/src/"
PUBLISHED = r"rumqttd-0\.20\.0/src/"
RULES = [
    # Shared machinery first: a socket's registration with tokio's I/O
    # driver and a task's cell are allocated under whoever opened the
    # socket or spawned the task.
    ("tokio: I/O driver registrations (ScheduledIo, one per socket)", "tokio",
     r"tokio-[0-9.]+/src/runtime/io/registration_set\.rs"),
    ("front: tasks (tokio task cells: the connection's future)", "front layer",
     r"tokio-[0-9.]+/src/runtime/task/core\.rs:\d+ .*src/broker/front/"),
    ("rumqttd link: remote-link task (tokio task cell: remote()'s future)", "rumqttd (link)",
     r"tokio-[0-9.]+/src/runtime/task/core\.rs:\d+ .*" + RUMQTTD + r"server/broker\.rs"),
    # rumqttd: the router's per-connection state (router/iobufs.rs,
    # router/logs.rs, router/scheduler.rs, router/routing.rs), built by
    # LinkBuilder::build (link/local.rs) and the router thread.
    ("rumqttd router: Incoming buffer, VecDeque<Packet> x 200", "rumqttd (router)",
     PUBLISHED + r"router/iobufs\.rs:35\b"),
    ("rumqttd router: Outgoing buffer, VecDeque<Notification> x 200", "rumqttd (router)",
     PUBLISHED + r"router/iobufs\.rs:75\b"),
    ("rumqttd router: Outgoing inflight_buffer x 100 + unacked_pubrels x 100 (VecDeques)", "rumqttd (router)",
     PUBLISHED + r"router/iobufs\.rs:7[67]\b"),
    ("rumqttd router: Outgoing notify channel, flume::bounded(200)", "rumqttd (router)",
     PUBLISHED + r"router/iobufs\.rs:74\b"),
    ("rumqttd router: AckLog, VecDeque<Ack> x 100 + VecDeque<(Publish, Option<PublishProperties>)> x 100", "rumqttd (router)",
     PUBLISHED + r"router/logs\.rs:38[34]\b"),
    ("rumqttd router: slabs preallocated for max_connections (allocated at start; pages touched per slot)", "rumqttd (router)",
     PUBLISHED + r"router/(routing\.rs:11[3-6]|scheduler\.rs:2[01])\b"),
    ("rumqttd link: LinkRx cache, VecDeque<Notification> x 100", "rumqttd (link)",
     PUBLISHED + r"link/local\.rs:339\b"),
    ("rumqttd router: Connection, Tracker, client ids, events, maps, other router state", "rumqttd (router)",
     RUMQTTD + r"router/|" + RUMQTTD + r"link/local\.rs"),
    # rumqttd: the remote link (the task serving rumqttd's end of the
    # loopback connection).
    ("rumqttd link: RemoteLink notifications, VecDeque<Notification> x 100", "rumqttd (link)",
     PUBLISHED + r"link/remote\.rs:123\b"),
    ("rumqttd link: Network read + write BytesMut, 10 KiB each", "rumqttd (link)",
     PUBLISHED + r"link/network\.rs:5[45]\b"),
    ("rumqttd link: will-handler channel, flume::bounded(1), and its map entry", "rumqttd (link)",
     PUBLISHED + r"server/broker\.rs:5[3-5][0-9]\b"),
    ("rumqttd link: other (CONNECT, strings, boxed socket, buffers)", "rumqttd (link)",
     RUMQTTD),
    # The front layer (src/broker/front/) and the registry.
    ("front: read and write buffers (BytesMut)", "front layer",
     r"bytes-[0-9.]+/src/bytes_mut\.rs.*src/broker/front/"),
    ("registry: Session, its channels (2 tokio mpsc, watch), CancellationToken, map entry", "registry",
     r"src/broker/registry\.rs"),
    ("front: other (CONNECT decode, client id, trace names)", "front layer",
     r"src/broker/front/"),
    ("mqgate: trace store and metering (SQLite)", "mqgate", r"src/trace/|src/metering/|libsqlite3-sys"),
    ("tokio: other", "tokio", r"tokio-[0-9.]+/src/"),
    ("mqgate: other", "mqgate", r"/work/[^ ]*/src/"),
]


def classify(stack_text):
    for group, owner, pattern in RULES:
        if re.search(pattern, stack_text):
            return group, owner
    return "unattributed (no rule matched)", "other"


# ---------------------------------------------------------------- report


def load(exe, raw, pages_file):
    trace = Trace(raw)
    with open(pages_file) as f:
        mappings = json.load(f)
    resident = set()
    for m in mappings:
        resident.update(m["resident"])
    return trace, resident, mappings


def attribute(trace, resident):
    """Per live allocation: its bytes that lie on resident pages. A page
    shared by several allocations is so split among them by their bytes
    in it; what no live allocation holds of a resident heap page is the
    allocator's (metadata, free space): see heap_pages."""
    per_alloc = {}
    for ptr, (size, _) in trace.live.items():
        if size == 0:
            per_alloc[ptr] = 0
            continue
        first = ptr // PAGE
        last = (ptr + size - 1) // PAGE
        on = 0
        for page in range(first, last + 1):
            if page in resident:
                lo = max(ptr, page * PAGE)
                hi = min(ptr + size, (page + 1) * PAGE)
                on += hi - lo
        per_alloc[ptr] = on
    return per_alloc


def heap_pages(trace, mappings):
    """Resident pages of the writable anonymous mappings that hold live
    allocations (the heap), and of the others (stacks, runtime maps)."""
    starts = sorted(trace.live)
    heap = 0
    other_anon = 0
    files = 0
    for m in mappings:
        n = len(m["resident"])
        if m["name"] and not m["name"].startswith("["):
            files += n
            continue
        i = bisect.bisect_left(starts, m["start"])
        holds = i < len(starts) and starts[i] < m["end"]
        if holds or m["name"] == "[heap]":
            heap += n
        else:
            other_anon += n
    return heap * PAGE, other_anon * PAGE, files * PAGE


LIBRARY_FRAME = re.compile(
    r"/library/(alloc|core|std)/|/rust/deps/|/bytes-[0-9.]+/|/hashbrown-|/slab-[0-9.]+/"
    r"|/tokio-[0-9.]+/src/(runtime/task|loom|util)/|^[?][?]|libc|heaptrack")


def site_of(text):
    """The innermost frame that is not allocator or container plumbing."""
    for frame in text.split(" | "):
        if not LIBRARY_FRAME.search(frame):
            func, _, loc = frame.partition(" @ ")
            loc = re.sub(r"^.*/registry/src/[^/]+/", "", loc)
            loc = re.sub(r"^/work/[^/]+/", "", loc)
            return f"{loc} ({func[:60]})"
    return "?"


def report(exe, base_raw, base_pages, loaded_raw, loaded_pages, n):
    n = int(n)
    runs = []
    for raw, pages in ((base_raw, base_pages), (loaded_raw, loaded_pages)):
        runs.append(load(exe, raw, pages))
    # Symbolize every trace that holds a live allocation in either run.
    offsets = set()
    for trace, _, _ in runs:
        if trace.exe_base is None:
            sys.exit(f"{exe}: not found in the trace's modules")
        for _, t in set(trace.live.values()):
            for ip in trace.ips(t):
                offsets.add(ip - trace.exe_base)
    # Both runs load the same executable: offsets are comparable.
    symbols = symbolize(exe, [o for o in offsets if 0 <= o < 1 << 32])

    def stack_text(trace, t):
        frames = []
        for ip in trace.ips(t):
            for func, file, line in symbols.get(ip - trace.exe_base, [("??", "??", "0")]):
                frames.append(f"{func} @ {file}:{line}")
        return " | ".join(frames)

    # Per run: (group, owner, site) -> [allocated, resident, calls, Counter(size)]
    tables = []
    for trace, resident, mappings in runs:
        on = attribute(trace, resident)
        cache = {}
        table = collections.defaultdict(lambda: [0, 0, 0, collections.Counter()])
        for ptr, (size, t) in trace.live.items():
            if t not in cache:
                text = stack_text(trace, t)
                group, owner = classify(text)
                cache[t] = (group, owner, site_of(text))
            row = table[cache[t]]
            row[0] += size
            row[1] += on[ptr]
            row[2] += 1
            row[3][size] += 1
        heap, other_anon, files = heap_pages(trace, mappings)
        attributed = sum(v[1] for v in table.values())
        table[("allocator: metadata and free space on resident heap pages", "allocator", "-")] = [
            0, heap - attributed, 0, collections.Counter()]
        table[("not allocator-visible: other anonymous memory (thread stacks, runtime maps)",
               "not heap", "-")] = [0, other_anon, 0, collections.Counter()]
        table[("not allocator-visible: file pages (binary, libraries)", "not heap", "-")] = [
            0, files, 0, collections.Counter()]
        tables.append(table)

    def delta(key):
        a = tables[0].get(key, [0, 0, 0, collections.Counter()])
        b = tables[1].get(key, [0, 0, 0, collections.Counter()])
        return ((b[0] - a[0]) / n, (b[1] - a[1]) / n, (b[2] - a[2]) / n, b[3] - a[3])

    sites = {k: delta(k) for k in set(tables[0]) | set(tables[1])}
    groups = collections.defaultdict(lambda: [0.0, 0.0, 0.0, collections.Counter()])
    for (group, owner, _), (alloc, res, calls, sizes) in sites.items():
        g = groups[(group, owner)]
        g[0] += alloc
        g[1] += res
        g[2] += calls
        g[3].update(sizes)
    alloc_total = sum(g[0] for g in groups.values())
    res_total = sum(g[1] for g in groups.values())
    order = sorted(groups, key=lambda k: (-groups[k][0], -groups[k][1]))
    print(f"# Per idle device: {n} devices against none (heaptrack, glibc malloc)\n")
    print("Allocated: bytes the program asked for and holds (live at the end). Resident: the part of "
          "them on resident pages (/proc/PID/pagemap; a page shared by several allocations split by "
          "their bytes in it), as without transparent huge pages.\n")
    print("| group | owner | allocated B/device | share | resident B/device | share | allocations/device | sizes (bytes x per device) |")
    print("|---|---|---|---|---|---|---|---|")
    for key in order:
        alloc, res, calls, sizes = groups[key]
        if abs(alloc) < 8 and abs(res) < 8:
            continue
        common = ", ".join(f"{size} x {c / n:.2g}" for size, c in sizes.most_common(4) if c / n >= 0.05)
        print(f"| {key[0]} | {key[1]} | {alloc:,.0f} | {100 * alloc / alloc_total:.1f}% | "
              f"{res:,.0f} | {100 * res / res_total:.1f}% | {calls:.2f} | {common} |")
    print(f"| **total** | | **{alloc_total:,.0f}** | 100% | **{res_total:,.0f}** | 100% | | |")
    print()
    print("Sites (innermost frame outside allocator and container code), per group, "
          "at least 16 B per device:\n")
    print("| group | site | allocated B/device | resident B/device | allocations/device |")
    print("|---|---|---|---|---|")
    for key in order:
        rows = sorted(((site, v) for (g, o, site), v in sites.items() if (g, o) == key),
                      key=lambda r: -abs(r[1][0]))
        for site, (alloc, res, calls, _) in rows:
            if abs(alloc) < 16 and abs(res) < 16:
                continue
            print(f"| {key[0]} | {site} | {alloc:,.0f} | {res:,.0f} | {calls:.2f} |")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "snapshot":
        snapshot(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 8 and sys.argv[1] == "report":
        report(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
