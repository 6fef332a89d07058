# Sourced by the other scripts: one place for paths, ports and versions.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAR=${IPV_VAR:-$ROOT/var}
# Built tools outlive a checkout so a fresh clone (CI) does not rebuild FerretDB.
CACHE=${IPV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipv-vouchers}
VENV=${IPV_VENV:-$ROOT/.venv}

FERRETDB_VERSION=v1.24.2
# The binary carries our patch (scripts/ferretdb-$FERRETDB_VERSION.patch); its hash names the binary so a
# changed patch rebuilds it.
FERRETDB_PATCH=$ROOT/scripts/ferretdb-$FERRETDB_VERSION.patch
FERRETDB_BIN=$CACHE/bin/ferretdb-$FERRETDB_VERSION-$(sha256sum "$FERRETDB_PATCH" | cut -c1-8)
# Object storage for the documents service: the Versity S3 gateway over a folder (its posix backend).
VERSITYGW_VERSION=v1.8.0
VERSITYGW_BIN=$CACHE/bin/versitygw-$VERSITYGW_VERSION
S3_PORT=${IPV_S3_PORT:-7070}
# Project-specific ports so a developer's own RabbitMQ/MongoDB on the default ports is left alone.
AMQP_PORT=${IPV_AMQP_PORT:-5673}
RABBIT_DIST_PORT=${IPV_RABBIT_DIST_PORT:-25673}
MONGO_PORT=${IPV_MONGO_PORT:-27018}
RABBIT_NODE=${IPV_RABBIT_NODE:-ipv@localhost}
# IPV_RABBIT_NODES=3: a cluster of three nodes on loopback instead of one (the fault tests, `make bench`'s
# quorum run). Node i is <name>-i@<host> on AMQP port AMQP_PORT+i-1 and distribution port
# RABBIT_DIST_PORT+i-1, unless IPV_AMQP_PORTS / IPV_RABBIT_DIST_PORTS list them ("p1 p2 p3").
# A started cluster is recorded in $RABBIT_NODES_FILE until `make stop`, so `make stop` (or `make run`)
# without the variable still finds every node of it.
RABBIT_NODES_FILE=$VAR/rabbitmq-nodes
RABBIT_NODES=${IPV_RABBIT_NODES:-$(cat "$RABBIT_NODES_FILE" 2>/dev/null || echo 1)}

# Keycloak (the identity provider): the Maven Central distribution, unpacked once into $CACHE; it needs
# Java 21 or newer.
KEYCLOAK_VERSION=26.5.6
KEYCLOAK_HOME=$CACHE/keycloak-$KEYCLOAK_VERSION
KEYCLOAK_PORT=${IPV_KEYCLOAK_PORT:-8180}
KEYCLOAK_MGMT_PORT=${IPV_KEYCLOAK_MGMT_PORT:-9180}

# java_home: prints a JDK home of Java >= 21 ($JAVA_HOME first, then /usr/lib/jvm/*), or fails.
java_home() {
  local candidate version
  for candidate in ${JAVA_HOME:-} /usr/lib/jvm/*; do
    [ -x "$candidate/bin/java" ] || continue
    version=$("$candidate/bin/java" -XshowSettings:properties -version 2>&1 \
              | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
    if [ -n "$version" ] && [ "$version" -ge 21 ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31mERROR:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it yourself or run as root)"; fi
}

# wait_for DESCRIPTION SECONDS CHECK ARG PID: polls `CHECK ARG` until it succeeds; gives up early
# when the server process PID has died.
wait_for() {
  local what=$1 secs=$2 check=$3 arg=$4 pid=$5
  local deadline=$((SECONDS + secs))
  until "$check" "$arg" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  say "$what is up"
}
