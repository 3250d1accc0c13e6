"""`make bench`: the stress command three times with --processes; median entries/s,
CPU time per entry and peak RSS.

Usage: python stress/bench.py [--entries N] [--runs R] [extra stress options...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

RATE = re.compile(r"throughput ([\d,]+) entries/s")
RSS = re.compile(r"member (\d+): (\d+) MiB")
CPU = re.compile(r"CPU ([\d.]+) us/entry \(members ([\d./]+), clients ([\d.]+)\)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args, extra = parser.parse_known_args()
    command = [
        sys.executable, "-m", "raft_trio", "stress", "--clients", "8", "--batch", "100",
        "--entries", str(args.entries), "--processes", *extra,
    ]
    print("$", " ".join(command[2:]), flush=True)
    rates: list[float] = []
    cpus: list[float] = []
    peak: dict[int, int] = {}
    failed = 0
    for run in range(1, args.runs + 1):
        proc = subprocess.run(command, capture_output=True, text=True)
        out = proc.stdout
        match = RATE.search(out)
        rate = float(match.group(1).replace(",", "")) if match else 0.0
        rates.append(rate)
        # The step's line may be wrapped to the terminal's width.
        cpu = CPU.search(" ".join(out.split()))
        if cpu:
            cpus.append(float(cpu.group(1)))
        rss_line = out.split("peak RSS per server:")[-1].split("\n")[0]
        for member, mib in RSS.findall(rss_line):
            peak[int(member)] = max(peak.get(int(member), 0), int(mib))
        verdict = "all steps passed" if proc.returncode == 0 else "FAILED"
        failed += proc.returncode != 0
        where = (f" (members {cpu.group(2)}, clients {cpu.group(3)})") if cpu else ""
        used = f"CPU {cpu.group(1)} us/entry{where}" if cpu else "CPU not measured"
        print(f"run {run}: {rate:,.0f} entries/s, {used}, {verdict}", flush=True)
        if proc.returncode != 0:
            print(out[-3000:], proc.stderr[-3000:], sep="\n")
    cpu_median = (f"CPU {statistics.median(cpus):.1f} us/entry" if cpus
                  else "CPU per entry not measured")
    print(f"median: {statistics.median(rates):,.0f} entries/s, {cpu_median} over {args.runs} runs")
    shown = ", ".join(f"member {m}: {v} MiB" for m, v in sorted(peak.items()))
    print(f"peak RSS per server: {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
