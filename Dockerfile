# One image, three binaries (writer, reader, loadtest). Built for users of
# docker-compose.yml and the Kubernetes manifests in deploy/; the project's own tests run
# the same topology from local processes.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p writer -p reader -p loadtest

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/writer /src/target/release/reader /src/target/release/loadtest /usr/local/bin/
USER 65534:65534
ENTRYPOINT ["writer"]
