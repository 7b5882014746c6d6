# pophook: one static binary on a distroless base (CA certificates, no shell).
#   docker build -t pophook .
#   docker run --env-file .env -v pophook-data:/data pophook
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo) so it runs on distroless/static; the same command builds
# the release binary outside Docker.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pophook ./cmd/pophook \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pophook /usr/local/bin/pophook
# The data dir holds ledger.db and the spool; a named volume mounted here
# takes this ownership, so the non-root user can write it.
COPY --from=build --chown=65532:65532 /out/data /data
ENV POPHOOK_DATA_DIR=/data \
    POPHOOK_HTTP_ADDR=:8080
VOLUME /data
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pophook"]
CMD ["run"]
