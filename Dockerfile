# syntax=docker/dockerfile:1.7
#
# audithawk container image: a release build on Debian bookworm, copied into distroless
# (glibc + libgcc + CA certificates, no shell, no package manager), running as the
# distroless `nonroot` user (uid 65532). About 25-35 MB in total.
#
#   docker build -t audithawk:dev .
#   docker run --rm audithawk:dev --version
#
# The detections/ tree is embedded at build time (build.rs), so rules ship inside the
# binary; mount extra rule directories and point `rules.dirs` at them.

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Manifests first so the dependency layer is cached across source changes.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY detections ./detections
# The release profile keeps line tables (debug = 1) for profiling; the image does not need
# them. --locked: build exactly what Cargo.lock pins.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin audithawk \
 && install -D -m 0755 target/release/audithawk /out/audithawk

# State directories owned by the runtime user (checkpoint, correlation snapshots).
RUN install -d -o 65532 -g 65532 -m 0750 /out/var/lib/audithawk

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/audithawk /usr/local/bin/audithawk
COPY --from=build --chown=65532:65532 /out/var/lib/audithawk /var/lib/audithawk
COPY policies /usr/share/audithawk/policies
USER 65532:65532
# 8443: webhook (TLS), /healthz, /readyz, /metrics.
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/audithawk"]
CMD ["serve", "--config", "/etc/audithawk/config.yaml"]
