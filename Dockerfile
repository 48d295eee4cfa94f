# syntax=docker/dockerfile:1
# Build stage: the same command CI runs (scripts/build-release.sh), so a broken build stage
# cannot land even though CI has no Docker engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY scripts/build-release.sh ./scripts/build-release.sh
RUN bash scripts/build-release.sh

# Run stage: glibc, CA certificates (registries and Google endpoints are HTTPS) and a non-root
# user; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/image-relay /usr/local/bin/image-relay
USER nonroot:nonroot
# Cloud Run sets PORT; rules are mounted here (Terraform mounts a Secret Manager secret).
ENV RELAY_RULES=/etc/image-relay/rules.toml \
    RELAY_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/image-relay"]
CMD ["serve"]
