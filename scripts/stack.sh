#!/usr/bin/env bash
# Starts, stops or reports RabbitMQ, FerretDB, Keycloak and the S3 gateway for local use, all on loopback,
# data under var/.
#   scripts/stack.sh start|stop|status
# IPV_RABBIT_NODES=3 makes RabbitMQ a cluster of three nodes on loopback (scripts/common.sh: names, ports),
# for the fault tests and the benchmark; one node is the default, for speed.
# With AMQP_URI / MONGO_URI / KEYCLOAK_URL / S3_ENDPOINT_URL set, that server is someone else's: nothing is
# started, it is only checked.
source "$(dirname "$0")/common.sh"
# var/env (sourced by make) exports the URIs of the local servers: those are ours, not external.
if [ -n "${IPV_LOCAL_STACK:-}" ]; then unset AMQP_URI MONGO_URI; fi
if [ -n "${IPV_LOCAL_KEYCLOAK:-}" ]; then unset KEYCLOAK_URL; fi
if [ -n "${IPV_LOCAL_S3:-}" ]; then unset S3_ENDPOINT_URL S3_ACCESS_KEY S3_SECRET_KEY; fi

RABBIT_DIR=$VAR/rabbitmq
FERRET_DIR=$VAR/ferretdb
KC_DIR=$VAR/keycloak
S3_DIR=$VAR/s3
PY=$VENV/bin/python
TEST_VHOST=${IPV_TEST_VHOST:-ipv_test}

rabbit_env() {
  # Debian's wrapper runs the node as the rabbitmq user; when root's checkout is not reachable by
  # it (e.g. under a 0700 mktemp directory) the node keeps its data under /var/lib/rabbitmq.
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && ! runuser -u rabbitmq -- test -x "$VAR" 2>/dev/null; then
    RABBIT_DIR=/var/lib/rabbitmq/ipv-$(echo "$ROOT" | sha256sum | cut -c1-12)
    # A second stack of the same checkout (IPV_VAR elsewhere, e.g. the fault tests) gets its own.
    [ "$VAR" = "$ROOT/var" ] || RABBIT_DIR=$RABBIT_DIR-$(echo "$VAR" | sha256sum | cut -c1-8)
  fi
  export PATH=$PATH:/usr/sbin:/usr/lib/rabbitmq/bin
}

mongo_uri() { echo "${MONGO_URI:-mongodb://127.0.0.1:$MONGO_PORT/}"; }

amqp_answers() {
  "$PY" - "$1" 2>/dev/null <<'PY'
import sys, kombu
with kombu.Connection(sys.argv[1], connect_timeout=2) as c:
    c.connect()
PY
}
mongo_answers() {
  "$PY" - "$1" 2>/dev/null <<'PY'
import sys, pymongo
pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=2000).admin.command("ping")
PY
}

# RabbitMQ and FerretDB may be shared by checkouts (each test run has its own vhost and databases), but a
# Keycloak or S3 gateway another checkout started holds that checkout's admin password and keys: using it
# fails later with an error that names neither. Say so at once.
started_here() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
foreign() {
  die "$1 answers on 127.0.0.1:$2 but this checkout did not start it (another checkout's? 'make stop' there, or set $3 to a free port)"
}

# The cluster's nodes, one "name amqp_port dist_port" line each (one line for a single node).
rabbit_nodes() {
  if [ "$RABBIT_NODES" = 1 ]; then echo "$RABBIT_NODE $AMQP_PORT $RABBIT_DIST_PORT"; return; fi
  local amqp=(${IPV_AMQP_PORTS:-$(seq "$AMQP_PORT" $((AMQP_PORT + RABBIT_NODES - 1)))})
  local dist=(${IPV_RABBIT_DIST_PORTS:-$(seq "$RABBIT_DIST_PORT" $((RABBIT_DIST_PORT + RABBIT_NODES - 1)))})
  [ ${#amqp[@]} = "$RABBIT_NODES" ] && [ ${#dist[@]} = "$RABBIT_NODES" ] \
    || die "IPV_AMQP_PORTS and IPV_RABBIT_DIST_PORTS must list $RABBIT_NODES ports each"
  for i in $(seq 0 $((RABBIT_NODES - 1))); do
    echo "${RABBIT_NODE%@*}-$((i + 1))@${RABBIT_NODE#*@} ${amqp[$i]} ${dist[$i]}"
  done
}
first_node() { rabbit_nodes | awk 'NR == 1 {print $1}'; }

# node_env NAME AMQP_PORT DIST_PORT: the environment of one node (call in a subshell); NODE_DIR is its data.
node_env() {
  NODE_DIR=$RABBIT_DIR
  [ "$RABBIT_NODES" = 1 ] || NODE_DIR=$RABBIT_DIR/$1
  # The distribution listener on loopback too (Erlang's default is every interface).
  export RABBITMQ_NODENAME=$1 RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$2 \
    RABBITMQ_DIST_PORT=$3 ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    RABBITMQ_MNESIA_BASE=$NODE_DIR/mnesia RABBITMQ_LOG_BASE=$NODE_DIR/log \
    RABBITMQ_PID_FILE=$NODE_DIR/rabbit.pid RABBITMQ_ENABLED_PLUGINS_FILE=$NODE_DIR/enabled_plugins \
    RABBITMQ_CONFIG_FILE=$NODE_DIR/rabbitmq RABBITMQ_ADVANCED_CONFIG_FILE=$NODE_DIR/advanced.config
}

node_uri() { echo "amqp://guest:guest@127.0.0.1:$1/${2:-}"; }  # node_uri PORT [VHOST]

# The broker's URI for services: with a cluster, every node's, separated by ';' (kombu's alternates:
# a client whose node dies fails over to the next one).
amqp_uri() {
  [ -z "${AMQP_URI:-}" ] || { echo "$AMQP_URI"; return; }
  local vhost=${1:-} uris=() name port dist
  while read -r name port dist; do uris+=("$(node_uri "$port" "$vhost")"); done < <(rabbit_nodes)
  (IFS=';'; echo "${uris[*]}")
}

# start_node NAME AMQP_PORT DIST_PORT: starts one node unless it answers; does not wait for it.
start_node() {
  (
    node_env "$@"
    if amqp_answers "$(node_uri "$2")"; then say "RabbitMQ $1 already running on 127.0.0.1:$2"; exit 0; fi
    mkdir -p "$NODE_DIR/log" "$NODE_DIR/mnesia"
    echo '[].' >"$NODE_DIR/enabled_plugins"
    # Our own config file so /etc/rabbitmq is never read; loopback users need no change.
    printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$2" >"$NODE_DIR/rabbitmq.conf"
    if [ "$RABBIT_NODES" != 1 ]; then
      # A fresh node joins the others (the first to start forms the cluster); a node with data rejoins its
      # cluster whatever this says. All nodes share the Erlang cookie of the user they run as: Debian's
      # wrapper runs every node as `rabbitmq` with HOME=/var/lib/rabbitmq whatever our HOME is.
      { echo "cluster_formation.peer_discovery_backend = classic_config"
        n=1; while read -r peer _ _; do echo "cluster_formation.classic_config.nodes.$n = $peer"; n=$((n + 1)); done < <(rabbit_nodes)
        # A node that lost its peers pauses instead of serving a minority (no split brain).
        echo "cluster_partition_handling = pause_minority"
      } >>"$NODE_DIR/rabbitmq.conf"
    fi
    echo '[].' >"$NODE_DIR/advanced.config"
    # Debian's wrapper drops root to the rabbitmq user, which must own the node's directory.
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$NODE_DIR"; fi
    say "starting RabbitMQ $1 on 127.0.0.1:$2 (log: $NODE_DIR/log)"
    setsid nohup rabbitmq-server >"$NODE_DIR/console.log" 2>&1 </dev/null &
    echo $! >"$NODE_DIR/wrapper.pid"
  )
}

wait_node() {
  ( node_env "$@"
    wait_for "RabbitMQ $1" 180 amqp_answers "$(node_uri "$2")" "$(cat "$NODE_DIR/wrapper.pid" 2>/dev/null || echo $$)" || {
      tail -30 "$NODE_DIR/console.log" >&2
      die "RabbitMQ $1 did not answer on 127.0.0.1:$2 within 180 s; see $NODE_DIR/log. A port in use? try IPV_AMQP_PORT=..."; } )
}

start_rabbit() {
  if [ -n "${AMQP_URI:-}" ]; then
    amqp_answers "$AMQP_URI" || die "AMQP_URI=$AMQP_URI does not answer"
    say "using RabbitMQ at AMQP_URI"; return
  fi
  rabbit_env
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server missing: run scripts/install.sh"
  local name port dist first
  first=$(rabbit_nodes | sed -n 1p)
  mkdir -p "$VAR" && echo "$RABBIT_NODES" >"$RABBIT_NODES_FILE"
  # A new cluster is formed by its first node alone; the others then join it. Nodes that have data all
  # start at once: each waits for the peers it last saw running, so one at a time would wait for ever.
  if [ "$RABBIT_NODES" != 1 ] && [ ! -d "$RABBIT_DIR/${first%% *}/mnesia/${first%% *}" ]; then
    start_node $first; wait_node $first
  fi
  while read -r name port dist; do start_node "$name" "$port" "$dist" </dev/null; done < <(rabbit_nodes)
  while read -r name port dist; do wait_node "$name" "$port" "$dist" </dev/null; done < <(rabbit_nodes)
  if [ "$RABBIT_NODES" != 1 ]; then
    # Up is not joined: every node must be running in one cluster before queues are declared across it.
    local deadline=$((SECONDS + 60)) running
    until running=$(rabbitmqctl -q -n "$(first_node)" eval \
        'length(rabbit_nodes:all_running()).' 2>/dev/null) && [ "$running" = "$RABBIT_NODES" ]; do
      [ $SECONDS -lt $deadline ] || die "RabbitMQ: only ${running:-?} of $RABBIT_NODES nodes run in one cluster; see $RABBIT_DIR/*/log"
      sleep 1
    done
    say "RabbitMQ cluster of $RABBIT_NODES nodes is up: $(rabbit_nodes | cut -d' ' -f1 | tr '\n' ' ')"
  fi
  # Tests get their own vhost so they never meet the events of a `make run` stack; IPV_TEST_VHOST
  # gives two checkouts testing at once on one machine a vhost each, so they never share a queue.
  test_vhost
  # A local broker that holds classic queues from before quorum queues (the services would be refused
  # on them) is moved now, unless a service still runs on it (then: make stop, make run).
  # (The test vhost needs no move: `make test` empties it, fresh_test_vhost.)
  (cd "$ROOT" && "$PY" -W ignore -m ipvkit.migrate_queues --quiet --amqp-uri "$(amqp_uri)" run >&2) \
    || say "RabbitMQ vhost '/' still has classic queues: stop the services, then make migrate-queues"
}

start_ferret() {
  if [ -n "${MONGO_URI:-}" ]; then
    mongo_answers "$MONGO_URI" || die "MONGO_URI=$MONGO_URI does not answer"
    say "using MongoDB at MONGO_URI"; return
  fi
  if mongo_answers "$(mongo_uri)"; then say "FerretDB already running on 127.0.0.1:$MONGO_PORT"; return; fi
  [ -x "$FERRETDB_BIN" ] || die "FerretDB missing: run scripts/install.sh"
  mkdir -p "$FERRET_DIR/data" "$FERRET_DIR/state"
  say "starting FerretDB $FERRETDB_VERSION (SQLite) on 127.0.0.1:$MONGO_PORT"
  # GOGC=400: FerretDB decodes each document it reads or writes from JSON, and with Go's default (100) its
  # collector took about a tenth of its CPU under the order load (pprof); with 400 its resident memory
  # peaked at 79 MB in that load, for 15 % more orders/s and a lower p99 (bench/README.md, "FerretDB's collector").
  # IPV_FERRETDB_DEBUG_ADDR=127.0.0.1:8088 serves Go's pprof there (bench/README.md, "Profiling FerretDB").
  GOGC=${IPV_FERRETDB_GOGC:-400} setsid nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$FERRET_DIR/data/" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$FERRET_DIR/state" --telemetry=disable \
    --debug-addr="${IPV_FERRETDB_DEBUG_ADDR:--}" --log-level=WARN >"$FERRET_DIR/ferretdb.log" 2>&1 </dev/null &
  echo $! >"$FERRET_DIR/ferretdb.pid"
  wait_for "FerretDB" 60 mongo_answers "$(mongo_uri)" $! || {
    tail -30 "$FERRET_DIR/ferretdb.log" >&2
    die "FerretDB did not answer on 127.0.0.1:$MONGO_PORT; see $FERRET_DIR/ferretdb.log. A port in use? try IPV_MONGO_PORT=..."; }
}

s3_uri() { echo "${S3_ENDPOINT_URL:-http://127.0.0.1:$S3_PORT}"; }
s3_answers() { curl -fs -o /dev/null "$1/healthz"; }
s3_reachable() { curl -s -o /dev/null "$1"; }   # any HTTP answer: an S3 endpoint of someone else's

start_s3() {
  if [ -n "${S3_ENDPOINT_URL:-}" ]; then
    s3_reachable "$S3_ENDPOINT_URL" || die "S3_ENDPOINT_URL=$S3_ENDPOINT_URL does not answer"
    say "using object storage at S3_ENDPOINT_URL"; return
  fi
  mkdir -p "$S3_DIR/data" "$S3_DIR/versions"
  # The gateway's root credentials, made once per checkout and kept out of the process list's
  # arguments (versitygw reads them from its environment).
  if [ ! -s "$S3_DIR/credentials" ]; then
    (umask 077; "$PY" -c 'import secrets; print("ipv" + secrets.token_hex(8)); print(secrets.token_urlsafe(30))' \
      >"$S3_DIR/credentials")
  fi
  if s3_answers "$(s3_uri)"; then
    started_here "$S3_DIR/versitygw.pid" || foreign "an S3 gateway" "$S3_PORT" IPV_S3_PORT
    say "S3 gateway already running on 127.0.0.1:$S3_PORT"; return
  fi
  [ -x "$VERSITYGW_BIN" ] || die "versitygw missing: run scripts/install.sh"
  say "starting the Versity S3 gateway $VERSITYGW_VERSION on 127.0.0.1:$S3_PORT (data: $S3_DIR)"
  # Versioning (a folder of its own) is what S3 object lock needs: delivered documents get a legal hold.
  ROOT_ACCESS_KEY_ID=$(sed -n 1p "$S3_DIR/credentials") ROOT_SECRET_ACCESS_KEY=$(sed -n 2p "$S3_DIR/credentials") \
    setsid nohup "$VERSITYGW_BIN" --port "127.0.0.1:$S3_PORT" --health /healthz --quiet \
    posix --versioning-dir "$S3_DIR/versions" "$S3_DIR/data" >"$S3_DIR/versitygw.log" 2>&1 </dev/null &
  echo $! >"$S3_DIR/versitygw.pid"
  wait_for "S3 gateway" 30 s3_answers "$(s3_uri)" $! || {
    tail -30 "$S3_DIR/versitygw.log" >&2
    die "the S3 gateway did not answer on 127.0.0.1:$S3_PORT; see $S3_DIR/versitygw.log. A port in use? try IPV_S3_PORT=..."; }
}

# Stops the process in pid file $2 (waiting up to 5 s) and says "$1 stopped".
stop_pidfile() {
  if [ -f "$2" ] && kill "$(cat "$2")" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$(cat "$2")" 2>/dev/null || break; sleep 0.1; done
    say "$1 stopped"
  fi
  rm -f "$2"
}

stop_s3() {
  [ -z "${S3_ENDPOINT_URL:-}" ] || return 0
  stop_pidfile "S3 gateway" "$S3_DIR/versitygw.pid"
}

stop_rabbit() {
  [ -z "${AMQP_URI:-}" ] || return 0
  rabbit_env
  local name port dist
  # Every node at once and whether or not it answers AMQP: nodes stopped one after the other leave the last
  # in a minority, where pause_minority closes its listeners but keeps it running.
  while read -r name port dist; do
    ( node_env "$name" "$port" "$dist"
      if rabbitmqctl -q -n "$name" stop </dev/null >/dev/null 2>&1; then say "RabbitMQ $name stopped"; fi ) &
  done < <(rabbit_nodes)
  wait
  rm -f "$RABBIT_NODES_FILE"
}

stop_ferret() {
  [ -z "${MONGO_URI:-}" ] || return 0
  stop_pidfile FerretDB "$FERRET_DIR/ferretdb.pid"
}

# -- Keycloak ----------------------------------------------------------------------------------------
keycloak_url() { echo "${KEYCLOAK_URL:-http://127.0.0.1:$KEYCLOAK_PORT}"; }
keycloak_ready() { curl -fs -o /dev/null "http://127.0.0.1:$KEYCLOAK_MGMT_PORT/health/ready"; }
realm_answers() { curl -fsS -o /dev/null "$1/realms/ipv/.well-known/openid-configuration"; }

start_keycloak() {
  if [ -n "${KEYCLOAK_URL:-}" ]; then
    realm_answers "$KEYCLOAK_URL" || die "KEYCLOAK_URL=$KEYCLOAK_URL has no realm 'ipv' (import deploy/keycloak/ipv-realm.json there)"
    say "using Keycloak at KEYCLOAK_URL"; return
  fi
  local pidf=$KC_DIR/keycloak.pid
  if keycloak_ready; then
    started_here "$pidf" || foreign "a Keycloak" "$KEYCLOAK_PORT" IPV_KEYCLOAK_PORT
    say "Keycloak already running on 127.0.0.1:$KEYCLOAK_PORT"
  elif [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    # Ours, still starting (or on other ports than asked): a second one would find its database locked.
    wait_for "Keycloak" 240 keycloak_ready "" "$(cat "$pidf")" \
      || die "Keycloak (pid $(cat "$pidf"), log $KC_DIR/keycloak.log) runs but is not ready on 127.0.0.1:$KEYCLOAK_MGMT_PORT; 'make stop' it first if it was started with other ports"
  else
    [ -f "$KEYCLOAK_HOME/.built" ] || die "Keycloak missing: run scripts/install.sh"
    local java; java=$(java_home) || die "Keycloak needs Java >= 21: run scripts/install.sh"
    mkdir -p "$KC_DIR/data"
    # The master realm's administrator, local only: scripts/keycloak.py imports the realm and makes users
    # with it. Created by Keycloak on its first start from these variables, ignored afterwards.
    [ -s "$KC_DIR/admin-password" ] || (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$KC_DIR/admin-password")
    say "starting Keycloak $KEYCLOAK_VERSION on 127.0.0.1:$KEYCLOAK_PORT (log: $KC_DIR/keycloak.log)"
    # The embedded H2 database lives under var/ (the distribution in $CACHE is shared and read-only);
    # a small heap: Keycloak's default takes half the machine's memory.
    # The transaction log too: under the shared distribution two checkouts' Keycloaks would recover
    # each other's transactions.
    (export JAVA_HOME=$java KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat "$KC_DIR/admin-password")" \
        JAVA_OPTS_KC_HEAP="-Xms128m -Xmx768m" \
        JAVA_OPTS_APPEND="-Dquarkus.transaction-manager.object-store.directory=$KC_DIR/data/transaction-logs" &&
      exec setsid nohup "$KEYCLOAK_HOME/bin/kc.sh" start --optimized \
        --http-enabled=true --http-host=127.0.0.1 --http-port="$KEYCLOAK_PORT" \
        --http-management-port="$KEYCLOAK_MGMT_PORT" --hostname="http://127.0.0.1:$KEYCLOAK_PORT" \
        --db-url="jdbc:h2:file:$KC_DIR/data/keycloakdb;NON_KEYWORDS=VALUE" \
        >"$KC_DIR/keycloak.log" 2>&1 </dev/null) &
    echo $! >"$pidf"
    wait_for "Keycloak" 240 keycloak_ready "" "$(cat "$pidf")" || {
      tail -30 "$KC_DIR/keycloak.log" >&2
      die "Keycloak was not ready on 127.0.0.1:$KEYCLOAK_MGMT_PORT within 240 s; see $KC_DIR/keycloak.log. A port in use? try IPV_KEYCLOAK_PORT=... IPV_KEYCLOAK_MGMT_PORT=..."; }
  fi
  # The realm as kept in deploy/keycloak/ (again when the file changed), the local client and demo users.
  KEYCLOAK_URL=$(keycloak_url) IPV_KEYCLOAK_DIR=$KC_DIR "$PY" -W ignore "$ROOT/scripts/keycloak.py" import \
    || die "importing the realm into Keycloak failed"
}

stop_keycloak() {
  [ -z "${KEYCLOAK_URL:-}" ] || return 0
  local pidf=$KC_DIR/keycloak.pid
  if [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null; then
    # kc.sh passes TERM on to its JVM; both are in the process group setsid gave it.
    for _ in $(seq 300); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$(cat "$pidf")" 2>/dev/null; then kill -KILL -- "-$(cat "$pidf")" 2>/dev/null; say "Keycloak did not stop in 30 s: killed"
    else say "Keycloak stopped"; fi
  fi
  rm -f "$pidf"
}

status() {
  rabbit_env
  local name port dist
  while read -r name port dist; do
    if amqp_answers "$(node_uri "$port")"; then echo "rabbitmq: up   $name amqp://127.0.0.1:$port/"
    else echo "rabbitmq: DOWN $name amqp://127.0.0.1:$port/"; fi
  done < <(rabbit_nodes)
  if mongo_answers "$(mongo_uri)"; then echo "ferretdb: up   $(mongo_uri)"; else echo "ferretdb: DOWN $(mongo_uri)"; fi
  if realm_answers "$(keycloak_url)"; then echo "keycloak: up   $(keycloak_url)/realms/ipv"; else echo "keycloak: DOWN $(keycloak_url)"; fi
  if s3_answers "$(s3_uri)" || { [ -n "${S3_ENDPOINT_URL:-}" ] && s3_reachable "$S3_ENDPOINT_URL"; }; then
    echo "s3:       up   $(s3_uri)"; else echo "s3:       DOWN $(s3_uri)"; fi
}

write_env() {
  # The environment every service and test reads; sourced by the Makefile and scripts/services.sh.
  mkdir -p "$VAR"
  rm -f "$VAR/auth_secret"  # tokens are signed by Keycloak now; no service holds a signing secret
  cat >"$VAR/env" <<ENV
$( [ -z "${AMQP_URI:-}${MONGO_URI:-}" ] && echo "export IPV_LOCAL_STACK=1" )
$( [ -z "${KEYCLOAK_URL:-}" ] && echo "export IPV_LOCAL_KEYCLOAK=1" )
export AMQP_URI='$(amqp_uri)'
export MONGO_URI='$(mongo_uri)'
export TEST_AMQP_URI="${TEST_AMQP_URI:-$(amqp_uri '${IPV_TEST_VHOST:-ipv_test}')}"
export KEYCLOAK_URL='$(keycloak_url)'
export OIDC_ISSUER='$(keycloak_url)/realms/ipv'
export OIDC_AUDIENCE=ipv-api
export IPV_KEYCLOAK_DIR='$KC_DIR'
export IDENTITY_CLIENT_SECRET="\$(cat '$KC_DIR/tooling-secret' 2>/dev/null)"
ENV
  if [ -n "${S3_ENDPOINT_URL:-}" ]; then
    cat >>"$VAR/env" <<ENV
export S3_ENDPOINT_URL='$S3_ENDPOINT_URL'
export S3_ACCESS_KEY='${S3_ACCESS_KEY:-}'
export S3_SECRET_KEY='${S3_SECRET_KEY:-}'
export S3_BUCKET='${S3_BUCKET:-ipv-documents}'
ENV
  else
    # IPV_S3_DATA_DIR: where the local gateway keeps the objects (tests tamper with one there).
    cat >>"$VAR/env" <<ENV
export IPV_LOCAL_S3=1
export S3_ENDPOINT_URL='$(s3_uri)'
export S3_ACCESS_KEY="\$(sed -n 1p '$S3_DIR/credentials')"
export S3_SECRET_KEY="\$(sed -n 2p '$S3_DIR/credentials')"
export S3_BUCKET='${S3_BUCKET:-ipv-documents}'
export IPV_S3_DATA_DIR='$S3_DIR/data'
ENV
  fi
}

# The tests' vhost is scratch: each `make test` starts on an empty one, so queues a test declared under
# older code (a broker whose data outlives the checkout, as under /var/lib/rabbitmq) cannot refuse it.
fresh_test_vhost() {
  rabbit_env
  rabbitmqctl -q -n "$(first_node)" delete_vhost "$TEST_VHOST" >/dev/null 2>&1 || true
  test_vhost
}

# test_vhost: the tests' vhost exists and guest may use it.
test_vhost() {
  rabbitmqctl -q -n "$(first_node)" add_vhost "$TEST_VHOST" >/dev/null 2>&1 || true
  rabbitmqctl -q -n "$(first_node)" set_permissions -p "$TEST_VHOST" guest '.*' '.*' '.*' >/dev/null \
    || die "could not grant guest access to vhost $TEST_VHOST"
}

case "${1:-}" in
  fresh-test-vhost) fresh_test_vhost ;;
  start) start_rabbit; start_ferret; start_keycloak; start_s3; write_env ;;
  stop) stop_rabbit; stop_ferret; stop_keycloak; stop_s3 ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status|fresh-test-vhost" >&2; exit 2 ;;
esac
