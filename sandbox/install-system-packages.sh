#!/bin/sh
# Installs the Debian packages sendrail's local stack needs, only those missing:
# Dovecot (the IMAP server of the mail sandbox), Exim (the receiving server of
# `sendrail bench smtp`), a Java runtime and Maven (to fetch and run the Kafka broker),
# Chromium and its driver (the analytics page's browser test).
# Quick when everything is there.
set -eu
missing=""
command -v dovecot >/dev/null 2>&1 || missing="$missing dovecot-imapd"
command -v exim4 >/dev/null 2>&1 || missing="$missing exim4-daemon-light"
command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"
command -v mvn >/dev/null 2>&1 || missing="$missing maven"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "sendrail needs these Debian packages:$missing; install them (e.g. sudo apt-get install$missing)" >&2
    exit 1
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# policy-rc.d keeps the packaged Dovecot and Exim services from starting: sendrail runs
# its own.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.sendrail
chmod +x /usr/sbin/policy-rc.d.sendrail
[ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.sendrail /usr/sbin/policy-rc.d; added=1; }
apt-get install -y -q --no-install-recommends $missing
[ "${added:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d
rm -f /usr/sbin/policy-rc.d.sendrail
