# syntax=docker/dockerfile:1
# Multi-stage build of the single l2lb binary (controller and speaker).
# Not built in this repository's CI: the development machines have no
# Docker engine. Build with: docker build -t l2lb:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
RUN cargo build --release --locked --bin l2lb \
 && strip target/release/l2lb

# distroless/cc has glibc and libgcc, which the binary links; nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/l2lb /usr/local/bin/l2lb
# The controller runs as this user; the speaker's manifest runs it as root
# with only CAP_NET_RAW (see deploy/speaker.yaml).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/l2lb"]
