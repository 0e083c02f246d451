"""The main job (`loraplace run` on the default study) with runs side by side vs one at a time.

Each arm is a fresh `loraplace run` process into a fresh output directory, on one warm cache
(the blocks are tokenised once, before the timed passes), arms alternating:

- ``workers auto``: the default study as shipped (one worker process per core, 1 thread each);
- ``in-process``: the same study with ``workers=null`` (one run at a time, torch's threads).

``--precision fp32`` (the default here) forces what a CPU without native bf16 runs, whatever
this CPU has. After the timed passes it compares what the two arms conclude: the paired
tests of the report's placement comparison (which pairs differ significantly, after Holm),
read from each arm's store through loraplace's own analysis.

    python benchmarks/bench_main_job.py                 # 2 passes per arm, fp32
    python benchmarks/bench_main_job.py --repeats 1 --precision auto
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_average, machine, median, save_json, update_results_md

LORAPLACE = str(Path(sys.executable).with_name("loraplace"))


def timed_run(out: Path, precision: str, workers: str, env: dict, extra=()) -> float:
    cmd = [LORAPLACE, "run", f"train.precision={precision}", f"workers={workers}", *extra]
    t0 = time.perf_counter()
    subprocess.run([*cmd, f"out={out}"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def significant_pairs(out: Path) -> list[str]:
    """The placement pairs whose eval losses differ after Holm, as the report reads them."""
    from loraplace.analysis import paired_tests, read_study_data, summarize

    tests = paired_tests(summarize(read_study_data(out)))
    return sorted(f"{t.a} vs {t.b}: {t.verdict}" for t in tests if t.verdict != "within noise")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per arm")
    ap.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or auto")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-main-"))
    env = {**os.environ, "LORAPLACE_CACHE": str(work / "cache")}
    arms = {"workers auto": "auto", "in-process": "null"}
    load = load_average()
    warm = ["seeds=[0]", "placements=[seed-ffn]", "zero_shot=false", "train.steps=1"]
    timed_run(work / "warm", args.precision, "null", env, warm)  # tokenise once: a warm cache
    times: dict[str, list[float]] = {a: [] for a in arms}
    outs: dict[str, Path] = {}
    for i in range(args.repeats):
        for arm, workers in arms.items():
            outs[arm] = work / f"{arm.replace(' ', '-')}-{i}"
            times[arm].append(timed_run(outs[arm], args.precision, workers, env))
            print(f"{arm}: {times[arm][-1]:.1f} s", flush=True)
    pairs = {arm: significant_pairs(out) for arm, out in outs.items()}
    ratio = median(times["in-process"]) / median(times["workers auto"])
    same = pairs["workers auto"] == pairs["in-process"]
    rows = [f"| {a} | {median(t):.1f} | {min(t):.1f} | {max(t):.1f} |" for a, t in times.items()]
    m = machine()
    md = "\n".join(
        [
            "### The main job: runs side by side vs one at a time (bench_main_job.py)",
            "",
            f"`python benchmarks/bench_main_job.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
            "",
            f"- {m['cpu']}, {os.cpu_count()} cores, AVX512-BF16: {m['avx512_bf16']}; "
            f"precision {args.precision}; load average at start "
            f"{', '.join(f'{x:.1f}' for x in load)}; warm cache, fresh process per pass",
            "",
            "| arm | median (s) | min (s) | max (s) |",
            "| --- | ---: | ---: | ---: |",
            *rows,
            "",
            f"**ratio: {ratio:.2f}** (in-process / workers auto). Significant pairs (Holm), "
            f"workers auto: {pairs['workers auto'] or 'none'}; in-process: "
            f"{pairs['in-process'] or 'none'}; same: {same}",
        ]
    )
    print(md)
    print(f"ratio: {ratio:.2f}")
    save_json("bench_main_job", {"times": times, "pairs": pairs, "load": load, "ratio": ratio})
    update_results_md("bench_main_job", md)


if __name__ == "__main__":
    main()
