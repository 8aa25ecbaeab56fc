# Multi-stage build of the adstream binary. The build command,
# `cargo build --release --locked --bin adstream`, is pinned by
# tests/deploy_consistency.rs (which also checks that Cargo.lock satisfies
# --locked); librdkafka is built from the source rdkafka vendors, so no
# system Kafka library is needed. TLS is the system's OpenSSL (libssl-dev in
# the build image, libssl3 here; docs/tls.md).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY sql ./sql
# Only for the manifest: Cargo.toml also names the bench binary.
COPY bench ./bench
RUN cargo build --release --locked --bin adstream

FROM debian:bookworm-slim
# curl: for the container health check on /healthz. libssl3: TLS to Kafka,
# ClickHouse and Redis. openssl: scripts/tls.sh in the compose tls profile.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 openssl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/adstream /usr/local/bin/adstream
USER nobody
# /metrics and /healthz; inside a container, listen on every interface.
ENV ADSTREAM_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
EXPOSE 9465
ENTRYPOINT ["adstream"]
CMD ["run", "--self-feed", "1000"]
