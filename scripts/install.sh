#!/usr/bin/env bash
# Installs what the project needs and is missing; safe to run any number of times.
#   Debian packages: rabbitmq-server, nginx-light (local ingress), prometheus (with promtool; ops tests)
#   FerretDB v1.24.2 built from the Go module proxy
#   Keycloak (identity provider) from Maven Central, on a Java >= 21 found on the machine (or from apt)
#   the Versity S3 gateway (versitygw v1.8.0) built from the Go module proxy, for the documents service
#   Python virtualenv in .venv with the pinned dependencies of pyproject.toml
source "$(dirname "$0")/common.sh"

# Logs and built tools live in $CACHE; a new machine (or an empty HOME) has no ~/.cache yet.
mkdir -p "$CACHE/bin"
APT_LOG=$CACHE/apt.log

need_pkgs=()
if [ -z "${AMQP_URI:-}" ] && ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
  need_pkgs+=(rabbitmq-server)
fi
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
# prometheus brings promtool too: the ops tests run the real server and check the alert rules.
command -v prometheus >/dev/null || need_pkgs+=(prometheus)
# tests/ops renders the Kubernetes overlays with `kubectl kustomize` (or a standalone kustomize).
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null && apt-cache show kubectl >/dev/null 2>&1; then
  need_pkgs+=(kubectl)
fi
# The portal's browser tests drive Debian's chromium (Playwright's own download cannot work offline);
# without a CJK font every Chinese character renders as a box in the screenshots.
command -v chromium >/dev/null || need_pkgs+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need_pkgs+=(fonts-noto-cjk)
# npm fetches the portal's front-end libraries from the npm registry (below).
command -v npm >/dev/null || need_pkgs+=(npm)
# unzip unpacks Keycloak's distribution.
[ -n "${KEYCLOAK_URL:-}" ] || command -v unzip >/dev/null || need_pkgs+=(unzip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  command -v apt-get >/dev/null || die "apt-get not found; install ${need_pkgs[*]} with your package manager"
  as_root apt-get update -qq || die "apt-get update failed (network or apt sources?)"
  # policy-rc.d keeps apt from starting system-wide copies: we run our own on loopback.
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" \
    >"$APT_LOG" 2>&1 || { tail -20 "$APT_LOG" >&2; die "apt-get install ${need_pkgs[*]} failed (log: $APT_LOG)"; }
fi

if [ -z "${MONGO_URI:-}" ] && [ ! -x "$FERRETDB_BIN" ]; then
  command -v go >/dev/null || die "Go is needed to build FerretDB: install Go >= 1.21 (https://go.dev/doc/install)"
  say "building FerretDB $FERRETDB_VERSION (once; cached in $CACHE/bin)"
  # `go install ...@v1.24.2` builds a binary that panics at start because the module lacks
  # build/version/version.txt (FerretDB issue #2982); build the same module source with that file.
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] || die "go mod download github.com/FerretDB/FerretDB@$FERRETDB_VERSION failed"
  build=$(mktemp -d)
  cp -r "$src/." "$build/" && chmod -R u+w "$build"
  echo "$FERRETDB_VERSION" >"$build/build/version/version.txt"
  # Atomic guarded updates (the money path rests on them), _id lookups that use the _id index, and
  # filters SQLite narrows before FerretDB decodes: the patch's header says why.
  (cd "$build" && git apply "$FERRETDB_PATCH") || die "could not apply $FERRETDB_PATCH to FerretDB $FERRETDB_VERSION"
  # Every document read goes through the patch's one-pass decoder: build only if it agrees with FerretDB's own.
  # (FerretDB's test helpers find the source root by its .git.)
  (cd "$build" && git init -q && go test ./internal/handler/sjson/) \
    || die "the patched FerretDB's document decoder failed its tests"
  (cd "$build" && go build -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) || die "building FerretDB failed"
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  rm -rf "$build"
fi

if [ -z "${S3_ENDPOINT_URL:-}" ] && [ ! -x "$VERSITYGW_BIN" ]; then
  command -v go >/dev/null || die "Go is needed to build the Versity S3 gateway: install Go >= 1.24 (https://go.dev/doc/install)"
  say "building the Versity S3 gateway $VERSITYGW_VERSION (once; cached in $CACHE/bin)"
  build=$(mktemp -d)
  GOBIN=$build go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
    || die "building versitygw $VERSITYGW_VERSION failed (Go module proxy reachable?)"
  mv "$build/versitygw" "$VERSITYGW_BIN"
  rm -rf "$build"
fi

# Keycloak: the quarkus distribution zip from Maven Central, checked against its published SHA-1 (the
# checksum Central serves for every artifact), unpacked into $CACHE and pre-built once (`kc.sh build`
# fixes the build-time options, so each start skips the augmentation step).
if [ -z "${KEYCLOAK_URL:-}" ]; then
  if ! java_home >/dev/null; then
    jdk=""
    for p in openjdk-25-jre-headless openjdk-21-jre-headless; do
      if apt-cache show "$p" >/dev/null 2>&1; then jdk=$p; break; fi
    done
    [ -n "$jdk" ] || die "Keycloak $KEYCLOAK_VERSION needs Java 21 or newer: none under \$JAVA_HOME or /usr/lib/jvm, and apt offers no openjdk-21/25 (install e.g. Temurin 21 and set JAVA_HOME)"
    say "installing $jdk (Keycloak needs Java >= 21)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$jdk" \
      >"$APT_LOG" 2>&1 || { tail -20 "$APT_LOG" >&2; die "apt-get install $jdk failed (log: $APT_LOG)"; }
  fi
  if [ ! -f "$KEYCLOAK_HOME/.built" ]; then
    url=https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/$KEYCLOAK_VERSION/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip
    zip=$CACHE/keycloak-$KEYCLOAK_VERSION.zip
    if [ ! -f "$zip" ]; then
      say "downloading Keycloak $KEYCLOAK_VERSION from Maven Central (165 MB, once)"
      curl -fsSL --retry 3 -o "$zip.part" "$url" || die "could not download $url"
      sha1=$(curl -fsSL --retry 3 "$url.sha1") || die "could not download $url.sha1"
      [ "$(sha1sum "$zip.part" | cut -d' ' -f1)" = "${sha1%% *}" ] || { rm -f "$zip.part"; die "checksum mismatch for $url"; }
      mv "$zip.part" "$zip"
    fi
    say "unpacking and building Keycloak $KEYCLOAK_VERSION into $KEYCLOAK_HOME"
    rm -rf "$KEYCLOAK_HOME" "$KEYCLOAK_HOME.tmp" && mkdir -p "$KEYCLOAK_HOME.tmp"
    (cd "$KEYCLOAK_HOME.tmp" && unzip -q "$zip") || die "could not unpack $zip"
    mv "$KEYCLOAK_HOME.tmp/keycloak-$KEYCLOAK_VERSION" "$KEYCLOAK_HOME" && rm -rf "$KEYCLOAK_HOME.tmp"
    # Build-time options must match those stack.sh starts with (dev-file database, health on).
    JAVA_HOME=$(java_home) "$KEYCLOAK_HOME/bin/kc.sh" build --db=dev-file --health-enabled=true \
      >"$CACHE/keycloak-build.log" 2>&1 \
      || { tail -20 "$CACHE/keycloak-build.log" >&2; die "kc.sh build failed (log: $CACHE/keycloak-build.log)"; }
    rm -f "$zip" && touch "$KEYCLOAK_HOME/.built"
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v $c >/dev/null && $c -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || die "Python 3.11 is needed (python3.11 not found)"
stamp=$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)
if [ ! -f "$stamp" ]; then
  say "installing Python dependencies into $VENV"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "setuptools==75.8.0" "wheel==0.45.1"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test,bench]" || die "pip install failed"
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi

# Portal front-end libraries (htmx, ECharts; axe-core for the browser tests) from the npm registry, as
# locked in services/portal/package-lock.json; reinstalled only when the lock changes. npm's cache lives in
# $CACHE so an empty HOME works and a fresh clone downloads nothing twice.
PORTAL=$ROOT/services/portal
portal_stamp=$PORTAL/node_modules/.installed-$(sha256sum "$PORTAL/package-lock.json" | cut -c1-16)
if [ ! -f "$portal_stamp" ]; then
  command -v npm >/dev/null || die "npm is needed for the portal's front-end libraries (Debian: apt-get install npm)"
  say "installing the portal's front-end libraries (npm ci)"
  mkdir -p "$CACHE/npm"
  (cd "$PORTAL" && npm_config_cache="$CACHE/npm" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || die "npm ci in services/portal failed"
  touch "$portal_stamp"
fi

# The portal's translations: compiled from the committed .po catalogues whenever one changed.
for po in "$PORTAL"/translations/*/LC_MESSAGES/messages.po; do
  [ -f "$po" ] || continue
  if [ ! -f "${po%.po}.mo" ] || [ "$po" -nt "${po%.po}.mo" ]; then
    "$VENV/bin/pybabel" compile -i "$po" -o "${po%.po}.mo" 2>/dev/null || die "could not compile $po"
  fi
done
