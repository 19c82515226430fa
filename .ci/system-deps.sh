#!/usr/bin/env bash
# Installs the system packages the suite drives for real: Debian's Chromium (through Playwright,
# never `playwright install`), redis-server, Node with npm, and the PostgreSQL server
# (initdb, postgres: Debian keeps them in /usr/lib/postgresql/<version>/bin, out of PATH).
# Needs root and apt-get; otherwise says what is missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# npm installs axe-core for the accessibility checks (tests/js/package-lock.json).
command -v npm >/dev/null 2>&1 || need+=(npm)
{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]});" \
         "the tests that need them will be skipped outside CI" >&2
fi
