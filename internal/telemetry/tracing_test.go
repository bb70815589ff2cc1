package telemetry

import (
	"context"
	"testing"
)

func TestTracing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		on      bool
		wantErr bool
	}{
		{"off", nil, false, false},
		{"http", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, false},
		{"grpc traces", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false},
		{"bad protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tp, shutdown, err := Tracing(context.Background(), func(k string) string { return tt.env[k] }, "personalizer-test")
			if (err != nil) != tt.wantErr || (tp != nil) != tt.on {
				t.Fatalf("provider %v, err %v; want on %v, error %v", tp, err, tt.on, tt.wantErr)
			}
			if err := shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
}
