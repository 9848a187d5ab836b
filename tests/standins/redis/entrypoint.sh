#!/bin/sh
# As the official image does for a server started without a configuration file: accept clients from other
# containers, which Redis's protected mode refuses while no password is set.
set -eu
if [ "${1:-}" = "redis-server" ]; then
    shift
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
