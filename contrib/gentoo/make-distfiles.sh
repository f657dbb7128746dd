#!/bin/sh
# Make the distfiles of sys-devel/dportage from this checkout, into DISTDIR:
#   dportage-VERSION.tar.xz         the sources (git archive of HEAD)
#   dportage-VERSION-crates.tar.xz  the crates it builds with (cargo vendor),
#                                   laid out as cargo.eclass's ECARGO_VENDOR
set -eu
out=${1:?usage: make-distfiles.sh DISTDIR (portageq distdir)}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)
p="dportage-$version"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
git -C "$top" archive --format=tar --prefix="$p/" HEAD | xz -T0 > "$tmp/$p.tar.xz"
mkdir -p "$tmp/cargo_home"
(cd "$top" && cargo vendor --locked --versioned-dirs "$tmp/cargo_home/gentoo" > /dev/null)
tar -C "$tmp" -cJf "$tmp/$p-crates.tar.xz" cargo_home/gentoo
mv "$tmp/$p.tar.xz" "$tmp/$p-crates.tar.xz" "$out/"
echo "$out/$p.tar.xz"
echo "$out/$p-crates.tar.xz"
