# Multi-arch image of the static power-dev-plugin binary.
#   docker buildx build --platform linux/amd64,linux/ppc64le,linux/s390x -t power-dev-plugin:dev .
#   podman build --platform linux/ppc64le -t power-dev-plugin:dev .
# `make image` builds the same image without Docker (see the Makefile).
ARG GO_VERSION=1.26
FROM --platform=$BUILDPLATFORM docker.io/library/golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=devel
ARG GIT_COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.gitCommit=${GIT_COMMIT}" \
      -o /out/power-dev-plugin ./cmd/kubelet-plugin

# distroless/static: no shell, no package manager; the binary is the image.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/power-dev-plugin /usr/bin/power-dev-plugin
ENTRYPOINT ["/usr/bin/power-dev-plugin"]
