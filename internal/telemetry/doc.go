// Package telemetry holds what a process observes itself with beyond its
// components' own counters: the gRPC interceptors every serving process
// runs first (panic recovery, one log line per call through slog, Rank
// latency), and the OpenTelemetry SDK with its OTLP exporter.
//
// The roles (server, joiner, learner) use only the OpenTelemetry API; the
// SDK, the exporters and the gRPC instrumentation live here and in cmd. The
// package never registers anything globally: metrics go to the registry
// the caller gives, traces to the provider it returns.
package telemetry
