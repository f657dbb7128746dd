# Copyright 2026 dportage authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-group

DESCRIPTION="Group of the dportage daemon and of the users whose builds share its state"
ACCT_GROUP_ID=-1
KEYWORDS="~amd64 ~arm64"
