#!/usr/bin/env bash
# Every benchmark that has a --quick mode, one after the other, with each one's wall time.
# The goal: each finishes in 5 minutes on 2 idle cores. Run it on a quiet machine (nothing
# else running: a second job on 2 cores slows a benchmark 2x or more), from the repository
# root with the project's virtualenv:
#
#   bash benchmarks/quick_all.sh            # writes benchmarks/results/quick_all.txt too
set -u
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=benchmarks/results/quick_all.txt
logs=$(mktemp -d "${TMPDIR:-/tmp}/quick-all-XXXXXX")  # each benchmark's full output
{
  echo "# every --quick benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
fail=0
for script in bench_trainer bench_sft bench_study bench_study_cost bench_prefix bench_exact_match; do
  start=$(date +%s%N)
  "$py" "benchmarks/$script.py" --quick > "$logs/$script.log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  verdict=$( [ $ms -le 300000 ] && echo "within 5 min" || echo "OVER 5 min" )
  [ $rc -ne 0 ] && verdict="FAILED (rc $rc, see $logs/$script.log)" && fail=1
  printf '%-20s %4d.%d s  %s; %s\n' "$script" $((ms / 1000)) $((ms % 1000 / 100)) "$verdict" \
    "$(grep -E '^(ratio|agreement):' "$logs/$script.log" | tr '\n' ' ')" | tee -a "$out"
done
echo "full outputs: $logs"
exit $fail
