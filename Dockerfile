# Multi-stage build of the adstream binary. The build command is the same
# `cargo build --release --locked` the benchmarks use; librdkafka is built
# from the source rdkafka vendors, so no system Kafka library is needed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY sql ./sql
# Only for the manifest: Cargo.toml also names the bench binary.
COPY bench ./bench
RUN cargo build --release --locked --bin adstream

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/adstream /usr/local/bin/adstream
USER nobody
ENTRYPOINT ["adstream"]
CMD ["run", "--self-feed", "1000"]
