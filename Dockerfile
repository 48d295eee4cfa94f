# syntax=docker/dockerfile:1
# Build stage: the same command CI runs (scripts/build-release.sh).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY scripts/build-release.sh ./scripts/build-release.sh
RUN bash scripts/build-release.sh

# Run stage: glibc, CA certificates and a non-root user, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/image-relay /usr/local/bin/image-relay
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/image-relay"]
