#!/usr/bin/env bash
# Do two revisions give the same answers? Four generated instances (a 100,000-request single-pool round, a
# 20,000-request general period with minimums and multi-month requests, a 20,000-seller baseline, a 30,000-request
# period) solved by REV and by the working tree, and every file compared byte for byte. For refactors that must not
# change a result.
#
#     bash benchmarks/same_answers.sh REV      # e.g. main~5; prints "same" or each file that differs; exit 1 if any
set -euo pipefail
rev="${1:?usage: same_answers.sh REV}"
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
work="$(mktemp -d)"
trap 'git -C "$here" worktree remove --force "$work/rev" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$here" worktree add -q --detach "$work/rev" "$rev"
gen() { PYTHONPATH="$here" "$py" -m optalloc.cli generate -o "$work/$1" -q "${@:2}"; }
gen single --single-pool --requests 100000 --seed 7
gen general --sellers 20000 --fcs 50 --regions 10 --storage-types 2 --months 3 --rounds 3 --requests 20000 \
    --min-cube-share 0.05 --multi-month-share 0.3 --seed 7
gen baseline --sellers 20000 --fcs 50 --regions 10 --storage-types 1 --months 3 --rounds 1 --requests 0 \
    --second-region-share 0 --seed 7
gen period --sellers 5000 --requests 30000 --seed 3
differ=0
for inst in single general baseline period; do
  for who in rev tree; do
    src="$here"; [ "$who" = rev ] && src="$work/rev"
    (cd "$src" && PYTHONPATH="$src" "$py" -m optalloc.cli solve "$work/$inst" -o "$work/out-$inst-$who" -q)
  done
  for f in "$work/out-$inst-tree"/*; do
    name="$(basename "$f")"
    cmp -s "$work/out-$inst-rev/$name" "$f" || { echo "differs: $inst/$name"; differ=1; }
  done
done
[ "$differ" = 0 ] && echo "same: every file of the four instances"
exit "$differ"
