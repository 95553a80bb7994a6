#!/usr/bin/env bash
# The official postgres image's entrypoint contract, trimmed to what tests use:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default: the user),
#   POSTGRES_INITDB_ARGS, /docker-entrypoint-initdb.d/*.sql|*.sh on first start,
#   and `postgres -c name=value …` (or just `-c …`) as the command.
#
# Unlike the official image, the cluster is created when the image is built (initdb
# costs ~3s, most of a test container's start) and only personalised here: the
# bootstrap superuser renamed to POSTGRES_USER, its password set, the database made.
# An empty mounted PGDATA, or POSTGRES_INITDB_ARGS, still gets a fresh initdb.
set -Eeuo pipefail

# `docker run image -c fsync=off` means `postgres -c fsync=off`, as in the official image.
if [[ "${1:-}" == -* ]]; then
    set -- postgres "$@"
fi
if [[ "${1:-}" != postgres ]]; then
    exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
# Left by the image build in a cluster that still awaits personalisation.
template_marker=$PGDATA/labkit-template

# Started as root (the default): fix ownership of a possibly mounted data directory,
# then run this script again as postgres, which PostgreSQL insists on.
if [[ $(id -u) -eq 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
# Over the Unix socket, which only this container reaches, trust needs no password.
psql=(psql -X -q -v ON_ERROR_STOP=1 --no-password --dbname postgres)

fresh_initdb() {
    find "$PGDATA" -mindepth 1 -delete
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as upstream
    initdb --username="$user" -E UTF8 --locale=C.UTF-8 --auth=trust ${POSTGRES_INITDB_ARGS:-} >/dev/null
    printf '%s\n' "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
}

# A private server on the socket only, so a client polling the TCP port (as
# testcontainers does) never sees a half-initialised database.
start_private_server() {
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c fsync=off" -w -s start
}

rename_bootstrap_superuser() {
    # The bootstrap superuser can't rename itself, so a short-lived stand-in does it.
    "${psql[@]}" --username postgres <<<'CREATE ROLE labkit_stand_in SUPERUSER LOGIN;'
    "${psql[@]}" --username labkit_stand_in --set user="$user" \
        <<<'ALTER ROLE postgres RENAME TO :"user";'
    "${psql[@]}" --username "$user" <<<'DROP ROLE labkit_stand_in;'
}

run_init_scripts() {
    local script
    shopt -s nullglob
    # shellcheck disable=SC1090  # a .sh that isn't executable is sourced, as upstream
    for script in /docker-entrypoint-initdb.d/*; do
        echo "entrypoint: running $script" >&2
        case $script in
            *.sql) "${psql[@]}" --username "$user" --dbname "$db" -f "$script" ;;
            *.sh)  if [[ -x $script ]]; then "$script"; else source "$script"; fi ;;
            *)     echo "entrypoint: ignoring $script (not .sql or .sh)" >&2 ;;
        esac
    done
}

initialise_cluster() {
    if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
        cat >&2 <<-EOF
		Error: POSTGRES_PASSWORD is empty, so nobody could log in over TCP.
		       Set POSTGRES_PASSWORD=…, or POSTGRES_HOST_AUTH_METHOD=trust to allow
		       every connection without a password (never outside a test).
		EOF
        exit 1
    fi

    if [[ -e $template_marker && -z ${POSTGRES_INITDB_ARGS:-} ]]; then
        start_private_server
        [[ $user == postgres ]] || rename_bootstrap_superuser
    else
        fresh_initdb
        start_private_server
    fi

    # Every TCP connection, loopback included, must give the password.
    cat >"$PGDATA/pg_hba.conf" <<-EOF
	local all         all     trust
	local replication all     trust
	host  all         all all $auth
	host  replication all all $auth
	EOF
    "${psql[@]}" --username "$user" -c 'SELECT pg_reload_conf();' >/dev/null
    if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
        "${psql[@]}" --username "$user" --set user="$user" --set password="$POSTGRES_PASSWORD" \
            <<<"ALTER ROLE :\"user\" PASSWORD :'password';"
    fi
    if [[ $db != postgres ]]; then
        "${psql[@]}" --username "$user" --set db="$db" <<<'CREATE DATABASE :"db" STRATEGY = FILE_COPY;'
    fi
    run_init_scripts
    pg_ctl -D "$PGDATA" -m fast -w -s stop
    rm -f "$template_marker"
    echo "entrypoint: database $db ready for user $user" >&2
}

if [[ -e $template_marker || ! -s "$PGDATA/PG_VERSION" ]]; then
    initialise_cluster
fi
exec "$@"
