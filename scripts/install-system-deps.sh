#!/bin/sh
# Installs what a fresh Debian machine lacks for the demo, the tests and the bench:
# Debian's OpenLDAP server and tools, Samba (an AD domain controller for the AD tests), and
# python3-venv. The demo, tests and bench start their
# own private slapd on 127.0.0.1, never the system one: the package's own service is kept from
# starting during the install (a temporary policy-rc.d), so nothing listens afterwards.
set -eu
need=""
[ -x /usr/sbin/slapd ] || need="$need slapd"
command -v ldapwhoami >/dev/null 2>&1 || need="$need ldap-utils"
python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"
# A real Active Directory domain controller for the AD tests (tooling/samba.py: AD_PACKAGES).
for pkg in samba samba-ad-provision samba-dsdb-modules samba-vfs-modules ldb-tools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
done
[ -n "$need" ] || exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
policy=/usr/sbin/policy-rc.d
made_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=yes
fi
cleanup() {
    if [ "$made_policy" = yes ]; then $SUDO rm -f "$policy"; fi
}
trap cleanup EXIT
echo "installing Debian packages:$need (once)..."
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # $need is a list of package names
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
