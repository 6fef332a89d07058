#!/usr/bin/env bash
# Starts or stops every service and the local ingress (nginx on $PORT, default 8000, routing
# /api/v1/<area> to the owning service as the Kubernetes Ingress does). Services listen on
# IPV_SERVICE_PORT_BASE+1.. (default 8101-8105), so two checkouts on one machine can run side by side.
#   scripts/services.sh start|stop|status|ingress   (ingress: only (re)start nginx)
source "$(dirname "$0")/common.sh"
source "$VAR/env"

PORT=${PORT:-8000}
RUN=$VAR/run
# service name, its HTTP port (with the default base 8100; the manifests use these), and the API areas
# (path prefixes under /api/v1/) it owns
SERVICES=(
  "enterprises 8101 enterprises"
  "providers 8102 agencies recommendations"
  "vouchers 8103 programmes vouchers orders claims"
  "audit 8104 audit"
  "documents 8105 documents"
)
apply_port_base() {  # the table with IPV_SERVICE_PORT_BASE applied to its ports
  local i
  for i in "${!SERVICES[@]}"; do
    set -- ${SERVICES[$i]}
    SERVICES[$i]="$1 $(($2 - 8100 + ${IPV_SERVICE_PORT_BASE:-8100})) ${*:3}"
  done
}
apply_port_base
# Uploads: the documents service's own limit (DOCUMENT_MAX_BYTES) plus room for the form around the file;
# the service refuses a larger file itself, as JSON, as soon as it passes the limit.
DOCUMENT_MAX_BYTES=${DOCUMENT_MAX_BYTES:-20971520}
UPLOAD_BODY_KB=$(( DOCUMENT_MAX_BYTES / 1024 + 64 ))
# What nginx itself answers (a body over the limit, a malformed request, a service down) is JSON in the
# API's one error shape too: code, error, message (494 is nginx's own code for headers too large).
INGRESS_ERRORS=(
  "400 400 invalid_request the request is malformed"
  "404 404 not_found no such route"
  "405 405 method_not_allowed this method is not allowed here"
  "408 408 request_timeout the request did not arrive in time"
  "413 413 payload_too_large the request body is over 1 MB"
  "414 414 uri_too_long the request line is too long"
  "494 431 headers_too_large the request headers are too large"
  "431 431 headers_too_large the request headers are too large"
  "500 500 internal_error internal error"
  "502 502 unavailable the service is unavailable; retry"
  "503 503 unavailable the service is unavailable; retry"
  "504 504 unavailable the service did not answer in time; retry"
)
# The portal (server-rendered pages at /, calling the API through the ingress) runs under gunicorn.
PORTAL_PORT=$((${IPV_SERVICE_PORT_BASE:-8100} + 6))

start() {
  mkdir -p "$RUN"
  for entry in "${SERVICES[@]}"; do
    set -- $entry
    local name=$1 port=$2 pidf=$RUN/$1.pid
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then say "$name already running"; continue; fi
    if curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; then
      die "port $port already answers (another checkout's services? stop them there with 'make stop')"
    fi
    say "starting $name on 127.0.0.1:$port (log: $RUN/$name.log)"
    (cd "$ROOT" && export "$(echo "$name" | tr a-z A-Z)_HTTP=127.0.0.1:$port" PYTHONWARNINGS=ignore &&
      exec nohup "$VENV/bin/nameko" run --config "services/$name/config.yaml" "services.$name.service:SERVICE" \
        >"$RUN/$name.log" 2>&1 </dev/null) &
    echo $! >"$pidf"
  done
  for entry in "${SERVICES[@]}"; do
    set -- $entry
    local deadline=$((SECONDS + 60))
    until curl -fs "http://127.0.0.1:$2/readyz" >/dev/null; do
      kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null || { tail -20 "$RUN/$1.log" >&2; die "$1 exited; see $RUN/$1.log"; }
      [ $SECONDS -lt $deadline ] || { tail -20 "$RUN/$1.log" >&2; die "$1 not ready after 60 s; see $RUN/$1.log"; }
      sleep 0.5
    done
    say "$1 is ready"
  done
  start_portal
  start_ingress
}

start_portal() {
  local pidf=$RUN/portal.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then say "portal already running"; return; fi
  if curl -s -o /dev/null "http://127.0.0.1:$PORTAL_PORT/healthz"; then
    die "port $PORTAL_PORT already answers (another checkout's portal? stop it there with 'make stop')"
  fi
  say "starting portal on 127.0.0.1:$PORTAL_PORT (log: $RUN/portal.log)"
  # The portal reaches the API and Keycloak by the ingress address the browser uses too.
  # The reader client's secret was kept by scripts/keycloak.py when it imported the realm.
  local reader_secret=""
  [ -z "${IPV_KEYCLOAK_DIR:-}" ] || [ ! -f "$IPV_KEYCLOAK_DIR/portal-reader-secret" ] || reader_secret=$(cat "$IPV_KEYCLOAK_DIR/portal-reader-secret")
  (cd "$ROOT" && export PORTAL_API_URL="http://127.0.0.1:$PORT" PORTAL_PUBLIC_URL="http://127.0.0.1:$PORT" \
      PORTAL_READER_CLIENT_ID=ipv-portal-reader PORTAL_READER_CLIENT_SECRET="$reader_secret" &&
    exec nohup "$VENV/bin/gunicorn" --config services/portal/gunicorn.conf.py --bind "127.0.0.1:$PORTAL_PORT" \
      "services.portal.app:create_app()" >"$RUN/portal.log" 2>&1 </dev/null) &
  echo $! >"$pidf"
  local deadline=$((SECONDS + 60))
  until curl -fs "http://127.0.0.1:$PORTAL_PORT/healthz" >/dev/null; do
    kill -0 "$(cat "$pidf")" 2>/dev/null || { tail -20 "$RUN/portal.log" >&2; die "portal exited; see $RUN/portal.log"; }
    [ $SECONDS -lt $deadline ] || { tail -20 "$RUN/portal.log" >&2; die "portal not ready after 60 s; see $RUN/portal.log"; }
    sleep 0.5
  done
  say "portal is ready"
}

start_ingress() {
  local conf=$RUN/nginx.conf
  {
    echo "worker_processes 1; pid $RUN/nginx.pid; error_log $RUN/nginx-error.log warn; daemon on;"
    echo "events { worker_connections 1024; }"
    echo "http {"
    echo "  access_log off; client_body_temp_path $RUN/nginx-tmp; proxy_temp_path $RUN/nginx-tmp;"
    echo "  fastcgi_temp_path $RUN/nginx-tmp; uwsgi_temp_path $RUN/nginx-tmp; scgi_temp_path $RUN/nginx-tmp;"
    # Bodies up to the limit stay in memory and answers stream through: nginx's workers run as another user
    # when started by root and could not write temp files under var/ (a 100 KB body answered 500).
    echo "  client_max_body_size 1m; client_body_buffer_size 1m; proxy_max_temp_file_size 0;"
    for entry in "${SERVICES[@]}"; do
      set -- $entry
      echo "  upstream $1 { server 127.0.0.1:$2; keepalive 32; }"
    done
    echo "  upstream portal { server 127.0.0.1:$PORTAL_PORT; keepalive 16; }"
    echo "  server {"
    echo "    listen 127.0.0.1:$PORT;"
    echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host;"
    for entry in "${SERVICES[@]}"; do
      set -- $entry
      local name=$1; shift 2
      for area in "$@"; do
        if [ "$area" = documents ]; then
          # Streamed on to the service as it arrives, with the upload limit. A location with an error_page of
          # its own inherits none of the server's: all of them again, 413 with the upload's own words.
          echo "    location /api/v1/$area { client_max_body_size ${UPLOAD_BODY_KB}k; proxy_request_buffering off;"
          for error in "${INGRESS_ERRORS[@]}"; do
            set -- $error
            [ "$1" = 413 ] || echo "      error_page $1 =$2 /_ingress_error/$1;"
          done
          echo "      error_page 413 =413 /_ingress_error/413-upload; proxy_pass http://$name; }"
          echo "    location = /_ingress_error/413-upload { internal; default_type application/json;"
          echo "      return 413 '{\"error\":\"payload_too_large\",\"message\":\"the upload is over $((DOCUMENT_MAX_BYTES / 1048576)) MB\"}'; }"
        else
          echo "    location /api/v1/$area { proxy_pass http://$name; }"
        fi
      done
      echo "    location = /api/v1/openapi/$name.json { proxy_pass http://$name/api/v1/openapi.json; }"
    done
    echo "    location /api/ { default_type application/json; return 404 '{\"error\":\"not_found\",\"message\":\"no such route\"}'; }"
    # The portal's uploads pass through to the documents API, so its body limit is the documents one.
    echo "    location / { client_max_body_size 25m; proxy_set_header X-Forwarded-For \$remote_addr; proxy_pass http://portal; }"
    for entry in "${INGRESS_ERRORS[@]}"; do
      set -- $entry
      local code=$1 status=$2 error=$3; shift 3
      # A URI, not a named location: nginx cannot redirect a request whose line it failed to read to one.
      echo "    error_page $code =$status /_ingress_error/$code;"
      echo "    location = /_ingress_error/$code { internal; default_type application/json;"
      [ "$status" -lt 502 ] || echo "      add_header Retry-After 1 always;"
      echo "      return $status '{\"error\":\"$error\",\"message\":\"$*\"}'; }"
    done
    echo "  }"
    echo "}"
  } >"$conf"
  mkdir -p "$RUN/nginx-tmp"
  local nginx=$(command -v nginx || echo /usr/sbin/nginx)
  if [ -f "$RUN/nginx.pid" ] && kill -0 "$(cat "$RUN/nginx.pid")" 2>/dev/null; then
    "$nginx" -c "$conf" -p "$RUN" -s reload >/dev/null
  else
    "$nginx" -c "$conf" -p "$RUN" >/dev/null 2>"$RUN/nginx-start.log" || { cat "$RUN/nginx-start.log" >&2; die "nginx did not start on 127.0.0.1:$PORT (port in use? set PORT=...)"; }
  fi
  say "ingress on http://127.0.0.1:$PORT"
}

stop() {
  if [ -f "$RUN/nginx.pid" ]; then
    kill "$(cat "$RUN/nginx.pid")" 2>/dev/null || true; rm -f "$RUN/nginx.pid"
  fi
  if [ -f "$RUN/portal.pid" ] && kill -0 "$(cat "$RUN/portal.pid")" 2>/dev/null; then
    local ppid; ppid=$(cat "$RUN/portal.pid")
    kill -TERM "$ppid"  # gunicorn's master stops its workers
    for _ in $(seq 100); do kill -0 "$ppid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$ppid" 2>/dev/null && kill -KILL "$ppid" && say "portal did not stop in 10 s: killed" || say "portal stopped"
  fi
  rm -f "$RUN/portal.pid"
  for entry in "${SERVICES[@]}"; do
    set -- $entry
    local pidf=$RUN/$1.pid
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
      local pid; pid=$(cat "$pidf")
      kill -TERM "$pid"
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; say "$1 did not stop in 15 s: killed"; else say "$1 stopped"; fi
    fi
    rm -f "$pidf"
  done
}

status() {
  for entry in "${SERVICES[@]}"; do
    set -- $entry
    if curl -fs "http://127.0.0.1:$2/readyz" >/dev/null; then echo "$1: ready  http://127.0.0.1:$2"; else echo "$1: DOWN"; fi
  done
  if curl -fs "http://127.0.0.1:$PORTAL_PORT/healthz" >/dev/null; then echo "portal: ready  http://127.0.0.1:$PORT/"; else echo "portal: DOWN"; fi
  if curl -s "http://127.0.0.1:$PORT/" >/dev/null; then echo "ingress: up    http://127.0.0.1:$PORT"; else echo "ingress: DOWN"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  ingress) mkdir -p "$RUN"; start_ingress ;;
  *) echo "usage: $0 start|stop|status|ingress" >&2; exit 2 ;;
esac
