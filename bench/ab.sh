#!/bin/sh
# ab.sh runs the load harness on two commits in turn, RUNS times each
# (alternating, the first commit first), each run into a results file of
# its own, and prints each run's goals: what a change costs, measured as
# the harness measures everything, against the same baselines, on the
# same machine, both commits meeting the same disturbances.
#
#	bench/ab.sh COMMIT_A COMMIT_B [RUNS [HARNESS FLAGS...]]
#	bench/ab.sh 'fd1380b^1' fd1380b 3 -scenarios accept,poll
#
# RUNS defaults to 3. Each commit is exported (git archive) into a
# temporary directory, removed at the end; the repository is not touched.
set -eu
if [ $# -lt 2 ]; then
	sed -n '2,12s/^# \{0,1\}//p' "$0" >&2
	exit 2
fi
a=$1 b=$2
runs=${3:-3}
[ $# -ge 3 ] && shift 3 || shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for side in a b; do
	eval commit=\$$side
	mkdir "$dir/$side"
	git archive "$commit" | tar -x -C "$dir/$side"
done
i=1
while [ "$i" -le "$runs" ]; do
	for side in a b; do
		eval commit=\$$side
		out="$dir/$side-$i.md"
		(cd "$dir/$side" && go run ./bench -out "$out" "$@" >"$dir/$side-$i.log" 2>&1) ||
			{ cat "$dir/$side-$i.log" >&2; exit 1; }
		echo "## run $i, $commit"
		sed -n '/^### Goals/,/^### [^G]/p' "$out" | grep '^|' | grep -v -e '^| goal' -e '^|---'
	done
	i=$((i + 1))
done
