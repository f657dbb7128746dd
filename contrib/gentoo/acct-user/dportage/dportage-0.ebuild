# Copyright 2026 dportage authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-user

DESCRIPTION="User the dportage compile server runs as"
ACCT_USER_ID=-1
KEYWORDS="~amd64 ~arm64"
ACCT_USER_HOME=/var/lib/dportage/daemon
ACCT_USER_HOME_PERMS=0700
ACCT_USER_GROUPS=( dportage )

acct-user_add_deps
