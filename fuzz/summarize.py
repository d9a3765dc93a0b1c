#!/usr/bin/env python3
"""Prints the results table of fuzz/README.md from fuzz/logs/<target>.log
(the final libFuzzer stats of each run) and fuzz/artifacts/<target>/."""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ["rpc_params", "signature_v1", "signature_v3", "policy",
           "mqtt_front", "mqtt_link", "emqx_query", "config_toml"]

print("| target | run (UTC) | duration | executions | exec/s | cov | ft | corpus | crashes |")
print("|---|---|---|---|---|---|---|---|---|")
for t in TARGETS:
    path = os.path.join(HERE, "logs", t + ".log")
    if not os.path.exists(path):
        print("| %s | not run | | | | | | | |" % t)
        continue
    text = open(path, errors="replace").read()
    start = re.search(r"== %s: (\S+), (\d+)s" % t, text)
    end = re.search(r"== %s: exit (\d+) at (\S+)" % t, text)
    execs = re.search(r"stat::number_of_executed_units: (\d+)", text)
    rate = re.search(r"stat::average_exec_per_sec:\s+(\d+)", text)
    final = re.findall(r"#\d+\s+(?:DONE|NEW|REDUCE|pulse)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", text)
    done = re.search(r"Done (\d+) runs in (\d+) second", text)
    arts = os.listdir(os.path.join(HERE, "artifacts", t)) if os.path.isdir(os.path.join(HERE, "artifacts", t)) else []
    cov, ft, corp, size = final[-1] if final else ("?",) * 4
    print("| %s | %s | %s s | %.1f M | %s | %s | %s | %s files (%s) | %d |" % (
        t,
        start.group(1)[11:16] + "–" + (end.group(2)[11:16] if end else "?") if start else "?",
        done.group(2) if done else "?",
        int(execs.group(1)) / 1e6 if execs else float("nan"),
        rate.group(1) if rate else "?",
        cov, ft, corp, size, len(arts)))
