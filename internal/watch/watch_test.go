package watch

import (
	"context"
	"errors"
	"testing"
)

func TestValue(t *testing.T) {
	var w Value[int]
	done := make(chan error)
	go func() { done <- w.Wait(context.Background(), func(v int) bool { return v == 3 }) }()
	for range 3 {
		w.Update(func(v *int) { *v++ })
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := w.Get(); got != 3 {
		t.Errorf("Get = %d, want 3", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Wait(ctx, func(v int) bool { return v == 4 }); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a canceled context = %v, want context.Canceled", err)
	}
	if err := w.Wait(ctx, func(v int) bool { return v == 3 }); err != nil {
		t.Errorf("Wait for what holds = %v, want nil", err)
	}
}
