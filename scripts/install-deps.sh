#!/usr/bin/env bash
# install-deps.sh - make sure every Debian package chatd needs to build, test
# and run locally is installed. Installs only what is missing, so it is cheap
# to call before every build (scripts/run.sh and scripts/test.sh do) and says
# nothing when all is already there.
set -euo pipefail

# Keep in step with CMakeLists.txt (pkg-config modules), tests/ (cmocka and
# the python3 integration tests, nginx for the multi-instance ones, chromium
# and its driver for the page's browser tests), scripts/services.sh
# (postgresql, redis), scripts/ha.sh (patroni, etcd, redis-sentinel) and WEB_LIBS (the page's Markdown, sanitizing and
# highlighting libraries, served by chatd from where Debian puts them).
PACKAGES=(
    build-essential pkg-config cmake clang libclang-rt-14-dev clang-format-14
    libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev protobuf-compiler
    libpq-dev libhiredis-dev libwebsockets-dev libwebsockets-evlib-ev libjansson-dev
    libcurl4-openssl-dev libssl-dev libcmocka-dev libzip-dev libarchive-dev
    postgresql redis-server
    patroni etcd-server redis-sentinel curl
    python3 python3-grpcio python3-protobuf python3-websocket python3-psycopg2 python3-redis
    python3-jwt
    procps gdb nginx-light
    libjs-marked node-dompurify libjs-highlight.js
    chromium chromium-driver python3-selenium fonts-dejavu-core
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg-query exits non-zero for a package it has never heard of; that is
    # "missing" too, hence the || true.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
# update only now: the package lists of a fresh machine may be empty or stale,
# and a machine with everything installed should not pay for the download.
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
