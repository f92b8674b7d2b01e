# syntax=docker/dockerfile:1
# The gateway image. Build from the repository root:
#   docker build -t jobgate:dev .
# The worker has its own image: worker/Dockerfile.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between
# builds, so the binary is copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jobgate --bin jobgate \
    && install -D -m 0755 target/release/jobgate /out/jobgate

# distroless/cc has glibc, libgcc and CA certificates, no shell, and the user
# nonroot with uid and gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/jobgate /usr/local/bin/jobgate
USER 65532:65532
ENV JOBGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/jobgate"]
CMD ["serve"]
