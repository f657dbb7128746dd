# Copyright 2026 dportage authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit cargo shell-completion systemd toolchain-funcs

DESCRIPTION="distcc 3.4-compatible compile client and server that verifies remote objects"
# The sources and the vendored crates are made from a checkout by
# contrib/gentoo/make-distfiles.sh (see contrib/gentoo/README.md).
SRC_URI="
	${P}.tar.xz
	${P}-crates.tar.xz
"

LICENSE="GPL-2+"
# The crates it is built from (and the SQLite bundled by rusqlite).
LICENSE+=" Apache-2.0 BSD BSD-2 GPL-2 ISC MIT Unicode-3.0 ZLIB public-domain"
SLOT="0"
KEYWORDS="~amd64 ~arm64"
# Distfiles come from make-distfiles.sh, not from a mirror. The test suite
# needs loopback networking, distcc 3.4 and gcc: run `cargo test` in a checkout.
RESTRICT="fetch mirror test"

# dportage is distcc (the client, the server and the masquerade directory):
# distcc must go first, or its pkg_prerm (eselect compiler-shadow remove
# distcc) would run after our merge and delete links in /usr/lib/distcc.
DEPEND="
	acct-group/dportage
	acct-user/dportage
"
RDEPEND="
	${DEPEND}
	!!sys-devel/distcc
"

QA_FLAGS_IGNORED="usr/bin/dportage"

# Links in /usr/bin: the client (distcc, dportage-cc) and the server (distccd).
# main.rs role_for picks the role from the name.
DPORTAGE_BIN_LINKS=( distcc distccd dportage-cc )

# The compiler names of the masquerade directory, /usr/lib/distcc (portage's
# FEATURES=distcc puts /usr/lib/distcc/bin first in PATH; bin is a link to
# the directory itself, as sys-devel/distcc has it). A link named like a
# compiler makes dportage the client running that compiler, and `dportage
# serve` whitelists the compiler names it finds here.
dportage_masquerade_names() {
	echo cc c++ gcc g++ clang clang++ \
		"${CHOST}-gcc" "${CHOST}-g++" "${CHOST}-clang" "${CHOST}-clang++"
}

pkg_nofetch() {
	einfo "Make ${P}.tar.xz and ${P}-crates.tar.xz from a dportage checkout:"
	einfo "  contrib/gentoo/make-distfiles.sh \"\$(portageq distdir)\""
	einfo "then run this again."
}

src_compile() {
	cargo_src_compile

	# Completions and manual pages come from the built binary's own
	# description of its command line.
	if tc-is-cross-compiler; then
		ewarn "Cross-compiling: no manual pages or shell completions (they are made by running dportage)"
		return
	fi
	local bin
	bin="$(cargo_target_dir)/dportage"
	"${bin}" man --out "${T}/man" >/dev/null || die "dportage man failed"
	mkdir -p "${T}/completions" || die
	local shell
	for shell in bash zsh fish; do
		"${bin}" completions "${shell}" > "${T}/completions/dportage.${shell}" \
			|| die "dportage completions ${shell} failed"
	done
}

src_install() {
	cargo_src_install

	local link
	for link in "${DPORTAGE_BIN_LINKS[@]}"; do
		dosym dportage "/usr/bin/${link}"
	done

	keepdir /usr/lib/distcc
	for link in $(dportage_masquerade_names); do
		dosym ../../bin/dportage "/usr/lib/distcc/${link}"
	done
	dosym . /usr/lib/distcc/bin

	if ! tc-is-cross-compiler; then
		doman "${T}"/man/*
		newbashcomp "${T}/completions/dportage.bash" dportage
		newzshcomp "${T}/completions/dportage.zsh" _dportage
		newfishcomp "${T}/completions/dportage.fish" dportage.fish
	fi

	newinitd "${FILESDIR}/dportage.initd" dportage
	newconfd "${FILESDIR}/dportage.confd" dportage
	systemd_dounit "${FILESDIR}/dportage.service"

	# The machine's state: the daemon's membership token, and what builds
	# run by members of the dportage group share (group-writable, setgid so
	# new files stay in the group).
	keepdir /var/lib/dportage
	fowners root:dportage /var/lib/dportage
	fperms 2770 /var/lib/dportage
	# The daemon's own identity: its key never leaves this directory.
	keepdir /var/lib/dportage/daemon
	fowners dportage:dportage /var/lib/dportage/daemon
	fperms 0700 /var/lib/dportage/daemon
	# Portage's sandbox lets builds write the shared state (evidence log,
	# exclusions, host speed records, locks).
	insinto /etc/sandbox.d
	newins - 90dportage <<<'SANDBOX_WRITE="/var/lib/dportage/"'

	dodoc README.md
}

pkg_postinst() {
	elog "dportage now answers as distcc, distccd and the compilers in /usr/lib/distcc."
	elog "Join a network: set DPORTAGE_COORDINATOR in /etc/conf.d/dportage (OpenRC) or"
	elog "  systemctl edit dportage  (Environment=DPORTAGE_COORDINATOR=https://...)"
	elog "then start the daemon (rc-service dportage start / systemctl start dportage)."
	elog "Builds by portage share the machine's state in /var/lib/dportage through the"
	elog "dportage group:  usermod -aG dportage portage"
	elog "Then FEATURES=\"distcc\" in make.conf; the README (${EROOT}/usr/share/doc/${PF})"
	elog "has the whole portage set-up."
}
