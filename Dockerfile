# pophook: one static binary on distroless/static.
#
#   docker build -t pophook \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm --env-file .env -v pophook-data:/var/lib/pophook \
#     -p 127.0.0.1:8080:8080 pophook            # the daemon (CMD run)
#   docker run --rm pophook demo                # a self-contained demo
#
# Needs BuildKit (the default builder since Docker 23). .dockerignore leaves
# .git out of the context, so go build cannot stamp the commit itself: it
# comes in as COMMIT and is set with -X main.commit.
#
# deploy/image_test.go reads the go build line below and builds the binary
# with exactly its flags, checks it is static, and runs it in an empty root
# as uid 65532: keep that RUN a single go build command.

# The builder runs on the build machine's platform and cross-compiles, so
# `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.
# Pinned to a Go release; pin the digest too for reproducible builds:
#   docker buildx imagetools inspect golang:1.26.8-trixie
FROM --platform=$BUILDPLATFORM golang:1.26.8-trixie AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/pophook ./cmd/pophook
# The data dir, made here because the final stage has no shell; the COPY
# below gives it to uid 65532.
RUN install -d -m 0700 /out/data

# distroless/static rather than scratch: it has what a static Go binary
# needs from a system and nothing else (no shell, no package manager):
# the Debian CA bundle at /etc/ssl/certs/ca-certificates.crt (POP3, SMTP and
# webhook TLS), tzdata (CRON_TZ= in a SCHEDULE), /etc/passwd and /etc/group
# with nonroot = 65532, and /tmp; Google rebuilds it when any of that
# changes. The :nonroot tag defaults to uid 65532; USER below says so again.
FROM gcr.io/distroless/static-debian13:nonroot
ARG VERSION=dev
ARG COMMIT=
LABEL org.opencontainers.image.title="pophook" \
      org.opencontainers.image.description="Fetches POP3 mail and forwards every message once to webhooks, Maildirs and SMTP relays" \
      org.opencontainers.image.source="https://github.com/pophook/pophook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/pophook /pophook
# ledger.db, the spool and control.token live here. A new named volume
# mounted here takes this owner and mode, so uid 65532 can write it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/pophook
# Listen on every interface so that the port can be published; publish it
# on 127.0.0.1 (docker run -p 127.0.0.1:8080:8080) unless the status page
# and /metrics are meant for the network.
ENV POPHOOK_DATA_DIR=/var/lib/pophook \
    POPHOOK_HTTP_ADDR=:8080
VOLUME /var/lib/pophook
EXPOSE 8080
USER 65532:65532
# SIGTERM: nothing new starts, the message in hand is finished, then QUIT.
# Give it time: docker stop -t 120 (compose: stop_grace_period).
STOPSIGNAL SIGTERM
# Ready unless the scheduler is not running or every account has failed
# since start. Exec form: there is no shell in the image.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/pophook", "healthcheck"]
ENTRYPOINT ["/pophook"]
CMD ["run"]
