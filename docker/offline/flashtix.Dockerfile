# The flashtix binaries, built on this machine (`cargo build --release`), on a
# Debian root: for machines without a registry. The context is a directory
# holding `flashtix-server` and `flashtix`.
ARG BASE=flashtix/debian:bookworm
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/flashtix && chown nobody:nogroup /var/lib/flashtix
COPY flashtix-server flashtix /usr/local/bin/
WORKDIR /var/lib/flashtix
ENV FLASHTIX_BIND=0.0.0.0:8080
EXPOSE 8080
USER nobody
CMD ["flashtix-server"]
