#!/usr/bin/env bash
# The official rabbitmq image's contract: RABBITMQ_DEFAULT_USER / _PASS / _VHOST
# (default guest/guest and /), RABBITMQ_NODE_PORT (read by RabbitMQ itself), and
# loopback_users none so the default user may log in through a published port.
set -Eeuo pipefail

if [[ "${1:-}" == rabbitmq-server && $(id -u) -eq 0 ]]; then
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ "${1:-}" == rabbitmq-server ]]; then
    # Written at each start, from this container's environment.
    cat >/etc/rabbitmq/conf.d/10-defaults.conf <<-CONF
	loopback_users = none
	default_user = ${RABBITMQ_DEFAULT_USER:-guest}
	default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
	default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}
	CONF
fi
exec "$@"
