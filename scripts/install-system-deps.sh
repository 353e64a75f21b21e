#!/bin/sh
# Installs what a fresh Debian machine lacks for the demo, the tests and the bench:
# Debian's OpenLDAP server and tools, Samba (an AD domain controller for the AD tests),
# PostgreSQL (the store several brokers share), Prometheus (its server and promtool, for the
# metrics tests), and python3-venv. The demo, tests and bench
# start their own private slapd and PostgreSQL on 127.0.0.1, never the system ones: the
# packages' own services are kept from starting during the install (a temporary policy-rc.d),
# and PostgreSQL makes no "main" cluster, so nothing listens afterwards, not even after a reboot.
set -eu
need=""
[ -x /usr/sbin/slapd ] || need="$need slapd"
command -v ldapwhoami >/dev/null 2>&1 || need="$need ldap-utils"
python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"
# A real Active Directory domain controller for the AD tests (tooling/samba.py: AD_PACKAGES).
for pkg in samba samba-ad-provision samba-dsdb-modules samba-vfs-modules ldb-tools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
done
# initdb and postgres of any major version (tooling/postgres.py: find_bindir).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need="$need postgresql"
# A real Prometheus server and promtool for the metrics tests (tooling/prometheus.py); the
# package's service is kept from starting like the others', and nothing enables it here.
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need="$need prometheus"
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
# On its first install, postgresql-15's postinst runs pg_createcluster for a "main" cluster
# on port 5432 (policy-rc.d only stops it starting now: it would start at the next boot)
# unless createcluster.conf, which includes createcluster.d/*.conf, says create_main_cluster
# is off. The drop-in lasts as long as this install.
no_cluster=/etc/postgresql-common/createcluster.d/pta-no-main-cluster.conf
made_no_cluster=no
case "$need" in
*postgresql*)
    if [ ! -e "$no_cluster" ]; then
        $SUDO mkdir -p "${no_cluster%/*}"
        echo "create_main_cluster = false" | $SUDO tee "$no_cluster" >/dev/null
        made_no_cluster=yes
    fi
    ;;
esac
cleanup() {
    if [ "$made_policy" = yes ]; then $SUDO rm -f "$policy"; fi
    if [ "$made_no_cluster" = yes ]; then $SUDO rm -f "$no_cluster"; fi
}
trap cleanup EXIT
echo "installing Debian packages:$need (once)..."
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # $need is a list of package names
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
