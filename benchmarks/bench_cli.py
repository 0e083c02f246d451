"""Wall time of the commands a user waits on: `loraplace report` on a study's store, and
`--help` / `status` (start-up), each a fresh process, interpreter start included.

With ``--vs SRC`` (the ``src`` directory of another checkout, e.g. a worktree of the
previous release) each command also runs on that code, the two arms alternating, and the
table gives the ratio of medians. The store is only read; each report goes to a temporary
directory.

    python benchmarks/bench_cli.py runs/default                  # after `loraplace run`
    python benchmarks/bench_cli.py runs/default --vs ../old/src --repeats 7
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, load_average, median, save_json, update_results_md

LORAPLACE = [sys.executable, "-c", "import sys; from loraplace.cli import main; sys.exit(main())"]


def _time(args: list[str], src: str) -> float:
    env = dict(os.environ, PYTHONPATH=src)  # that checkout's package, whatever is installed
    t0 = time.perf_counter()
    subprocess.run([*LORAPLACE, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def measure(commands: dict[str, list[str]], arms: dict[str, str], repeats: int) -> dict:
    times: dict[str, dict[str, list[float]]] = {c: {a: [] for a in arms} for c in commands}
    for i in range(repeats):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))  # alternate the arms
        for name, args in commands.items():
            for arm in order:
                times[name][arm].append(_time(args, arms[arm]))
    return times


def table(times: dict, arms: list[str]) -> str:
    head = "| command | " + " | ".join(f"{a} median (s)" for a in arms)
    rows = [head + (" | ratio |" if len(arms) == 2 else " |")]
    rows.append("| --- |" + " ---: |" * (len(arms) + (len(arms) == 2)))
    for name, by_arm in times.items():
        meds = [median(by_arm[a]) for a in arms]
        cells = " | ".join(f"{m:.2f}" for m in meds)
        ratio = f" | {meds[0] / meds[1]:.2f}" if len(arms) == 2 else ""
        rows.append(f"| `{name}` | {cells}{ratio} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a study's output directory or .db (e.g. runs/default)")
    ap.add_argument("--vs", help="src/ of another checkout: the baseline arm")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-cli-")) / "report"
    commands = {
        "loraplace --help": ["--help"],
        f"loraplace status {args.store}": ["status", args.store],
        f"loraplace report {args.store}": ["report", args.store, "--out", str(out)],
    }
    arms = {"this checkout": str(HERE.parent / "src")}
    if args.vs:
        arms = {"baseline": str(Path(args.vs).resolve()), **arms}
    load = load_average()
    times = measure(commands, arms, args.repeats)
    md = table(times, list(arms))
    print(md)
    save_json("bench_cli", {"times": times, "load_average_at_start": load, "vs": args.vs})
    cmd = "python benchmarks/bench_cli.py " + " ".join(sys.argv[1:])
    update_results_md(
        "bench_cli",
        f"### Command wall times (bench_cli.py)\n\n{os.cpu_count()} cores, load average at "
        f"start {', '.join(f'{x:.1f}' for x in load)}; {args.repeats} fresh processes per "
        f"command and arm, arms alternating; medians.\n\n{md}\n\n`{cmd}`",
    )


if __name__ == "__main__":
    main()
