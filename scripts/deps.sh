#!/bin/sh
# Installs the Debian packages the build and the tests need, when they are missing.
#   root:             apt-get directly
#   other users:      sudo apt-get (when sudo exists)
#   neither, or no apt: a message naming the packages; the build goes on if the
#                     libraries are already present some other way (headers found).
# Usage: scripts/deps.sh PACKAGE...
set -u
[ "$#" -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
  done
else
  # No dpkg: look for what the packages provide (headers and commands).
  for p in "$@"; do
    case "$p" in
      libzstd-dev)     f=/usr/include/zstd.h ;;
      libsqlite3-dev)  f=/usr/include/sqlite3.h ;;
      libssl-dev)      f=/usr/include/openssl/sha.h ;;
      libopenblas-dev) f=/usr/include/cblas.h
                       for g in /usr/include/*/cblas.h /usr/include/openblas/cblas.h; do [ -e "$g" ] && f=$g; done ;;
      *)               f="" ;;
    esac
    if [ -n "$f" ]; then [ -e "$f" ] || missing="$missing $p"
    else command -v "$p" >/dev/null 2>&1 || missing="$missing $p"; fi
  done
fi
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing:$missing; this machine has no apt-get: install the equivalent packages" >&2
  echo "      (zstd and SQLite development headers, OpenBLAS with cblas.h) and run make again." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  run() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
  run() { sudo "$@"; }
else
  echo "deps: missing:$missing" >&2
  echo "      installing them needs root or sudo; as root run:" >&2
  echo "      apt-get install -y$missing" >&2
  exit 1
fi
echo "deps: installing$missing"
run env DEBIAN_FRONTEND=noninteractive apt-get update -qq || { echo "deps: apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
  || { echo "deps: apt-get install$missing failed" >&2; exit 1; }
