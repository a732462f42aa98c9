# The flashtix binaries: `flashtix-server` (the sale) and `flashtix` (the CLI).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY server server
COPY cli cli
COPY chaos chaos
COPY scenarios scenarios
RUN cargo build --release --locked -p flashtix-server -p flashtix

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flashtix-server /src/target/release/flashtix /usr/local/bin/
ENV FLASHTIX_BIND=0.0.0.0:8080
EXPOSE 8080
USER nobody
CMD ["flashtix-server"]
