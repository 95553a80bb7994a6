#!/usr/bin/env bash
# The official redis image's entrypoint contract: `redis-server [options]` (or only
# options, or a .conf file) as the command; without a config file the server listens
# on every interface with protected mode off, since the container is the boundary.
# Unlike the official image, nothing is persisted unless asked for: tests want a
# server that starts empty and never stalls on a snapshot.
set -Eeuo pipefail

if [[ "${1:-}" == -* || "${1:-}" == *.conf ]]; then
    set -- redis-server "$@"
fi

# True when one of the arguments after the command is the option $1, e.g. --save.
given() {
    local option=$1 arg
    shift
    for arg in "${@:2}"; do
        [[ $arg == "$option" ]] && return 0
    done
    return 1
}

if [[ "${1:-}" == redis-server ]]; then
    # A config file (second word, not an option) is the user's full say; else add defaults.
    if [[ $# -eq 1 || "${2:-}" == -* ]]; then
        given --protected-mode "$@" || set -- "$@" --protected-mode no
        given --save "$@" || set -- "$@" --save ''
        given --appendonly "$@" || set -- "$@" --appendonly no
    fi
    if [[ $(id -u) -eq 0 ]]; then
        chown redis:redis /data 2>/dev/null || true
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
