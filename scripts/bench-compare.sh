#!/bin/bash
# bench-compare.sh BASE TARGET [ROUNDS] — a before/after comparison in one run.
#
# Builds a temporary worktree at git revision BASE and runs `make TARGET` there and in this
# tree, alternating, ROUNDS times (default 3), so both sides see the same machine load. Every
# printed line of the form "<label> : <number> <unit>..." is collected; for each label found
# on both sides it prints min/median/max of each side and the ratio of medians (this tree /
# BASE). A side whose run failed makes the script print no ratio for anything and exit 1.
#
# Example: sudo scripts/bench-compare.sh 53289ce bench-lb 3
set -euo pipefail
base=${1:?usage: bench-compare.sh BASE TARGET [ROUNDS]}
target=${2:?usage: bench-compare.sh BASE TARGET [ROUNDS]}
rounds=${3:-3}
here=$(git rev-parse --show-toplevel)
rev=$(git -C "$here" rev-parse --short "$base")
tmp=$(mktemp -d /tmp/bench-compare.XXXXXX)
cleanup() { git -C "$here" worktree remove --force "$tmp/base" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
git -C "$here" worktree add --detach "$tmp/base" "$rev" >/dev/null
failed=0
for r in $(seq "$rounds"); do
	for side in base head; do
		dir=$here
		[ "$side" = base ] && dir=$tmp/base
		echo "== round $r/$rounds: $side ($( [ "$side" = base ] && echo "$rev" || git -C "$here" rev-parse --short HEAD)) make $target" >&2
		if ! make -C "$dir" "$target" >"$tmp/$side.$r.txt" 2>&1; then
			echo "!! $side round $r failed; its output: $tmp/$side.$r.txt" >&2
			tail -20 "$tmp/$side.$r.txt" >&2
			failed=1
		fi
	done
done
# label:value lines -> "side<TAB>label<TAB>value"
for f in "$tmp"/*.txt; do
	side=$(basename "$f" | cut -d. -f1)
	awk -v side="$side" -F' *: +' 'NF >= 2 && $1 ~ /^ +[a-zA-Z]/ {
		label = $1; gsub(/^ +| +$/, "", label)
		split($2, v, " "); if (v[1] ~ /^-?[0-9.]+$/) printf "%s\t%s\t%s %s\n", side, label, v[1], v[2]
	}' "$f"
done >"$tmp/all.tsv"
echo "== $target: $rev (before) vs $(git -C "$here" rev-parse --short HEAD) (after), $rounds rounds alternated"
printf '%-36s %-30s %-30s %s\n' "line" "before min/median/max" "after min/median/max" "after/before"
cut -f2 "$tmp/all.tsv" | awk '!seen[$0]++' | while IFS= read -r label; do
	stats() { awk -F'\t' -v s="$1" -v l="$label" '$1 == s && $2 == l { split($3, v, " "); print v[1] }' "$tmp/all.tsv" | sort -g |
		awk '{ a[NR] = $1 } END { if (NR == 0) exit; m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%s %s %s\n", a[1], m, a[NR] }'; }
	b=$(stats base); h=$(stats head)
	[ -z "$b" ] || [ -z "$h" ] && continue
	unit=$(awk -F'\t' -v l="$label" '$2 == l { split($3, v, " "); print v[2]; exit }' "$tmp/all.tsv")
	ratio="-"
	if [ "$failed" = 0 ]; then
		ratio=$(echo "$b $h" | awk '{ if ($2 != 0) printf "%.3f", $5 / $2; else print "-" }')
	fi
	printf '%-36s %-30s %-30s %s\n' "${label:0:36}" "$(echo $b | tr ' ' /) $unit" "$(echo $h | tr ' ' /) $unit" "$ratio"
done
if [ "$failed" != 0 ]; then
	echo "no ratios: a run failed (sanity check), see above" >&2
	exit 1
fi
