#!/usr/bin/env bash
# Puts distcc 3.4's own test suite (test/testdistcc.py and test/comfychair.py,
# GPL-2.0-or-later, unmodified, their copyright headers intact) into DIR
# (default: target/distcc-suite) so that run.sh can run it.
#
# The files come from Debian's source package of distcc: its upstream tarball
# is distcc 3.4's release, the same release as the Debian distcc 3.4 the
# interop tests compare us with, and the tarball's SHA-256 is checked below.
# They are provisioned like the distcc binaries (.ci/run installs both) rather
# than committed: this workplace does not let us commit code copied out of
# other projects' repositories.
#
# Needs apt-get (and root, the first time, to enable Debian's source indexes).
# Does nothing when DIR already holds the suite.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-"$here/../../target/distcc-suite"}
orig=distcc_3.4+really3.4.orig.tar.gz
orig_sha256=37a34c9555498a1168fea026b292ab07e7bb394715d87d8403e0c33b16d2d008
files=(testdistcc.py comfychair.py)

have_suite() {
    local f
    for f in "${files[@]}"; do [ -f "$dest/$f" ] || return 1; done
}
have_suite && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# apt-get source reads deb-src indexes, which Debian's images leave off.
have_src_indexes() { apt-get source --print-uris distcc >/dev/null 2>&1; }
if ! have_src_indexes; then
    [ "$(id -u)" -eq 0 ] || { echo "provision.sh: run as root once to enable Debian's deb-src indexes" >&2; exit 1; }
    src_list=/etc/apt/sources.list.d/dportage-deb-src.sources
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src_list"
    else
        grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | sed 's/^deb /deb-src /' >"${src_list%.sources}.list"
    fi
    apt-get update -qq >/dev/null
fi

# Only the upstream tarball is needed; a missing Debian patch tarball (some
# mirrors drop old ones) makes apt-get fail after the tarball has arrived.
apt-get source --download-only distcc >apt.log 2>&1 || true
if [ ! -f "$orig" ]; then
    echo "provision.sh: apt-get source distcc did not bring $orig:" >&2
    cat apt.log >&2
    exit 1
fi
echo "$orig_sha256  $orig" | sha256sum -c --quiet - || {
    echo "provision.sh: $orig is not distcc 3.4's release tarball" >&2
    exit 1
}
tar -xzf "$orig" "${files[@]/#/distcc-3.4/test/}" distcc-3.4/COPYING
mkdir -p "$dest"
cp distcc-3.4/test/* distcc-3.4/COPYING "$dest/"
have_suite
echo "provision.sh: distcc 3.4's test suite is in $dest"
