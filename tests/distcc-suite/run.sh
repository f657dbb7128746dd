#!/usr/bin/env bash
# Runs distcc 3.4's own test suite (test/testdistcc.py, unmodified; see
# provision.sh for where it comes from) against a distcc/distccd pair: the
# installed distcc 3.4 by default, or dportage with --dportage BIN.
#
#   run.sh [--dportage BIN | --bin DIR] [--lzo] [--suite DIR] [--expect FILE]
#          [--timeout SECS] [--shard K/N] [--keep] [CASE...]
#
#   --dportage BIN  links named distcc and distccd to BIN come first in PATH
#   --bin DIR       DIR (holding distcc and distccd) comes first in PATH
#   --lzo           the suite's own switch: its daemon tests use ",lzo" hosts
#   --suite DIR     where testdistcc.py and comfychair.py are
#                   (default: target/distcc-suite, filled by provision.sh)
#   --expect FILE   cases (one a line, # comments) that must end OK or NOTRUN;
#                   exit 1 if one does not
#   --timeout SECS  per case (default 240)
#   --shard K/N     only every Nth case of the list, starting at the Kth
#                   (0-based): N runs with K = 0..N-1 cover every case once,
#                   so the suite can run in parallel
#   CASE...         run only these cases (default: all, in the suite's order)
#
# Each case runs in its own python process, so one hung case is cut off by
# its timeout instead of stopping the rest, and each case's time is shown.
# Nothing is fetched: the suite must already be provisioned.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite_dir="$here/../../target/distcc-suite"
bin_dir=""
dportage=""
lzo=()
expect=""
per_case_timeout=240
keep=0
shard=""
cases=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dportage) dportage=$2; shift 2 ;;
        --bin) bin_dir=$2; shift 2 ;;
        --lzo) lzo=(--lzo); shift ;;
        --suite) suite_dir=$2; shift 2 ;;
        --expect) expect=$2; shift 2 ;;
        --timeout) per_case_timeout=$2; shift 2 ;;
        --shard) shard=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        --*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) cases+=("$1"); shift ;;
    esac
done

for f in testdistcc.py comfychair.py; do
    if [ ! -f "$suite_dir/$f" ]; then
        echo "run.sh: $suite_dir/$f is missing; run tests/distcc-suite/provision.sh first" >&2
        exit 2
    fi
done
python=$(PATH=/usr/local/bin:/usr/bin:/bin command -v python3) || {
    echo "run.sh: python3 is needed" >&2
    exit 2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/distcc-suite.XXXXXX")
mkdir -p "$work/suite" "$work/run" "$work/logs" "$work/bin"
cp "$suite_dir/testdistcc.py" "$suite_dir/comfychair.py" "$work/suite/"

# As root, distccd switches to the distcc user, which cannot write the
# suite's directories, and `chmod 0` does not stop root from opening a log
# (BadLogFile_Case): the suite assumes an ordinary user, so it runs as nobody.
as_user=()
if [ "$(id -u)" -eq 0 ]; then
    as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi

if [ -n "$dportage" ]; then
    # A copy: a rebuild during the run must not change the binary under test,
    # and nobody may not be able to reach the original.
    cp "$dportage" "$work/bin/dportage"
    ln -s dportage "$work/bin/distcc"
    ln -s dportage "$work/bin/distccd"
    bin_dir="$work/bin"
elif [ -n "$bin_dir" ]; then
    bin_dir=$(realpath "$bin_dir")
fi
[ ${#as_user[@]} -eq 0 ] || chown -R nobody:nogroup "$work"

# A fixed PATH, as distcc's Makefile runs the suite (RESTRICTED_PATH): no
# masquerade directory or shim of the caller's may stand in for the compiler.
suite_path="/usr/local/bin:/usr/bin:/bin"
[ -z "$bin_dir" ] || suite_path="$bin_dir:$suite_path"

if [ ${#cases[@]} -eq 0 ]; then
    mapfile -t cases < <(cd "$work/suite" && "$python" -c \
        'import testdistcc; print("\n".join(t.__name__ for t in testdistcc.tests))')
fi
if [ -n "$shard" ]; then
    shard_k=${shard%/*}
    shard_n=${shard#*/}
    if ! [[ "$shard_k" =~ ^[0-9]+$ && "$shard_n" =~ ^[1-9][0-9]*$ ]] || [ "$shard_k" -ge "$shard_n" ]; then
        echo "run.sh: --shard wants K/N with 0 <= K < N, not $shard" >&2
        exit 2
    fi
    all_cases=("${cases[@]}")
    cases=()
    for i in "${!all_cases[@]}"; do
        [ $((i % shard_n)) -ne "$shard_k" ] || cases+=("${all_cases[$i]}")
    done
fi

echo "distcc suite: $(PATH=$suite_path command -v distcc) and $(PATH=$suite_path command -v distccd)${lzo:+ (--lzo)}"
PATH=$suite_path distcc --version | head -n 1

declare -A status
ok=0 failed=0 notrun=0
for case_name in "${cases[@]}"; do
    log="$work/logs/$case_name.txt"
    started=$(date +%s)
    rc=0
    timeout --kill-after=10 "$per_case_timeout" "${as_user[@]}" \
        env -i HOME="$work/run" PATH="$suite_path" LANG=C LC_ALL=C \
        sh -c 'cd "$1" && shift && exec "$@"' sh "$work/run" \
        "$python" "$work/suite/testdistcc.py" "${lzo[@]}" "$case_name" >"$log" 2>&1 || rc=$?
    took=$(($(date +%s) - started))
    # comfychair prints "NAME   " before the test and "OK", "FAIL" or
    # "NOTRUN, why" after it; a daemon's output may come in between.
    result=$("$python" -c '
import re, sys
text = open(sys.argv[1], errors="replace").read()
start = text.find(sys.argv[2])
m = start >= 0 and re.search(r"(?:^|\s)(OK|FAIL|NOTRUN.*)$", text[start + len(sys.argv[2]):], re.M)
print(m.group(1) if m else "")
' "$log" "$case_name")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        result="TIMEOUT after ${per_case_timeout}s"
    elif [ -z "$result" ]; then
        result="FAIL (exit $rc, no verdict)"
    fi
    case "$result" in
        OK) ok=$((ok + 1)); status[$case_name]=OK ;;
        NOTRUN*) notrun=$((notrun + 1)); status[$case_name]=NOTRUN ;;
        *) failed=$((failed + 1)); status[$case_name]=FAIL ;;
    esac
    printf '%-42s %-40s %4ss\n' "$case_name" "$result" "$took"
done

# A case cut off by its timeout leaves its daemon to die of --lifetime; end
# those now (only ours: their pid files are under $work).
for pidfile in "$work"/run/_testtmp/*/daemonpid.tmp; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    if [ -n "$pid" ] && grep -qa "$work" "/proc/$pid/cmdline" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
    fi
done

echo "distcc suite summary: $ok OK, $failed FAIL, $notrun NOTRUN"

unmet=()
if [ -n "$expect" ]; then
    while read -r line; do
        name=${line%%#*}
        name=${name//[[:space:]]/}
        [ -n "$name" ] || continue
        # Only the cases asked for this run are judged.
        [ -n "${status[$name]+set}" ] || continue
        [ "${status[$name]}" = FAIL ] && unmet+=("$name")
    done <"$expect"
fi

if [ ${#unmet[@]} -gt 0 ]; then
    echo "distcc suite: these pass against distcc 3.4 but failed here: ${unmet[*]}"
    for name in "${unmet[@]}"; do
        echo "----- $name"
        tail -n 60 "$work/logs/$name.txt"
    done
    echo "distcc suite: logs kept in $work"
    exit 1
fi
if [ "$keep" -eq 1 ]; then
    echo "distcc suite: logs kept in $work"
else
    rm -rf "$work"
fi
