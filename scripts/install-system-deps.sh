#!/bin/sh
# Installs Debian's OpenLDAP server and tools when missing: the demo, the tests and the bench
# start their own private slapd on 127.0.0.1, never the system one. The package's own service
# is kept from starting during the install (a temporary policy-rc.d), so nothing listens on
# the machine's addresses afterwards.
set -eu
if [ -x /usr/sbin/slapd ] && command -v ldapwhoami >/dev/null 2>&1; then
    exit 0
fi
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
echo "installing Debian's slapd and ldap-utils (once)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    slapd ldap-utils >/dev/null
