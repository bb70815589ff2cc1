# The personalizer binary on a distroless base: every role is a subcommand
# (docker run IMAGE server|joiner|learner|broker|dev ...).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/personalizer ./cmd/personalizer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/personalizer /personalizer
USER nonroot:nonroot
ENTRYPOINT ["/personalizer"]
