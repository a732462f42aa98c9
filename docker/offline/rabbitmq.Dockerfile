# RabbitMQ from Debian's packages, for machines without a registry. guest/guest
# may connect from other containers, as with the official image.
ARG BASE=flashtix/debian:bookworm
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && printf 'loopback_users = none\nlisteners.tcp.default = 5672\n' > /etc/rabbitmq/rabbitmq.conf
USER rabbitmq
EXPOSE 5672
# The broker's own script, not Debian's wrapper: as PID 1 the wrapper ignores
# SIGTERM, so `docker stop` would wait out its grace and kill the broker; this
# one stops it cleanly in about a second.
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
