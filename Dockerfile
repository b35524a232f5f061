# amexd as a container: a static binary on distroless, running as nonroot.
#
#   docker build -t amexd .
#   docker run --rm -p 3000:3000 amexd
#   docker exec <container> amexctl status
#
# Without arguments amexd runs the built-in configuration (configs/amexd.yaml:
# embedded simulator, auth off). For production mount a configuration and
# its JWT secret and point amexd at them, for example:
#   docker run -p 3000:3000 \
#     -v ./production.yaml:/etc/amexd/production.yaml:ro \
#     -v ./jwt.secret:/etc/amexd/jwt.secret:ro \
#     amexd -config /etc/amexd/production.yaml
# Any key can also be set as AMEXD_<KEY>, e.g. -e AMEXD_WORKERS=4 (the
# default, one worker per CPU, counts the host's CPUs, not the CPU quota).
# Access lines go to stderr with the other logs, for `docker logs`, whatever
# log.access_file the mounted configuration names (production.yaml's
# /var/log/amexd does not exist in the image); to write a file instead,
# mount a directory writable by uid 65532 and set -e AMEXD_LOG_ACCESS_FILE.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/amexd/amexd/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/amexd ./cmd/amexctl

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/amexd /out/amexctl /usr/local/bin/
# The operator socket defaults to /tmp/amexd-65532/amexd.sock for the
# nonroot user; amexctl, run by `docker exec` as the same user, finds it.
USER nonroot:nonroot
# The production configuration is written for a VM: its access log goes to
# the service's LogsDirectory and its operator socket to the service's
# group, neither of which an image has. Here access lines go to stderr and
# the socket stays the nonroot user's.
ENV AMEXD_LOG_ACCESS_FILE=""
ENV AMEXD_CONTROL_GROUP=""
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s \
  CMD ["/usr/local/bin/amexctl", "health"]
ENTRYPOINT ["/usr/local/bin/amexd"]
