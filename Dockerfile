# The personalizer binary alone in an image without a distribution: no
# shell, no package manager, running as an unprivileged user (the contents
# of a distroless "static" image, built from scratch). Every role is a
# subcommand: docker run IMAGE server|joiner|learner|broker|dev|health ...
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/personalizer ./cmd/personalizer
# /data, where a volume mounted there starts from: owned by the user the
# processes run as (copied as content, so that --chown applies to it).
RUN mkdir -p /out/root/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/personalizer /personalizer
COPY --from=build --chown=65532:65532 /out/root/ /
USER 65532:65532
WORKDIR /data
ENTRYPOINT ["/personalizer"]
