package loop

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"PT10M", 10 * time.Minute, "PT10M"},
		{"PT5S", 5 * time.Second, "PT5S"},
		{"P2D", 48 * time.Hour, "P2D"},
		{"P1DT1H30M0.5S", 25*time.Hour + 30*time.Minute + 500*time.Millisecond, "P1DT1H30M0.5S"},
		{"P1W", 7 * 24 * time.Hour, "P7D"},
		{"pt1h", time.Hour, "PT1H"},
		{"PT0S", 0, "PT0S"},
		{"00:10:00", 10 * time.Minute, "PT10M"},
		{"1.02:03:04.5", 26*time.Hour + 3*time.Minute + 4500*time.Millisecond, "P1DT2H3M4.5S"},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if s := Duration(got).String(); s != tc.out {
			t.Errorf("Duration(%v).String() = %q, want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"", "P", "PT", "10m", "P1H", "PT1D", "P1Y", "PT1M1", "25:00:00", "1:2", "PTT1S"} {
		if got, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", bad, got)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`600`), &d); err == nil {
		t.Error("a number took as a duration")
	}
}

func TestServiceJSON(t *testing.T) {
	// Personalizer's own example, v1.1-preview.3.
	in := `{ "rewardWaitTime": "PT10M", "defaultReward": 0.0, "rewardAggregation": "earliest",
  "explorationPercentage": 0.2, "modelExportFrequency": "PT5M", "logMirrorEnabled": true,
  "logMirrorSasUri": "https://testblob.blob.core.windows.net/container?se=x&sp=rwl&sv=2018-11-09&sr=c&sig=signature",
  "logRetentionDays": 7, "lastConfigurationEditDate": "2019-01-19T00:00:00Z", "learningMode": "Online",
  "isAutoOptimizationEnabled": true, "autoOptimizationFrequency": "P7D",
  "autoOptimizationStartDate": "2019-01-19T00:00:00Z" }`
	var s Service
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if time.Duration(s.RewardWaitTime) != 10*time.Minute || s.LogRetentionDays != 7 || time.Duration(s.AutoOptimizationFrequency) != 7*24*time.Hour {
		t.Fatalf("decoded %+v", s)
	}
	out, _ := json.Marshal(s)
	var back map[string]any
	json.Unmarshal(out, &back)
	if back["rewardWaitTime"] != "PT10M" || back["autoOptimizationFrequency"] != "P7D" || back["lastConfigurationEditDate"] != "2019-01-19T00:00:00Z" {
		t.Fatalf("encoded %s", out)
	}
}

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestValidate(t *testing.T) {
	base := Default("a")
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		code string
	}{
		{"short wait", func(c *Config) { c.Service.RewardWaitTime = Duration(50 * time.Millisecond) }, "InvalidRewardWaitTime"},
		{"long wait", func(c *Config) { c.Service.RewardWaitTime = Duration(49 * time.Hour) }, "InvalidRewardWaitTime"},
		{"reward", func(c *Config) { c.Service.DefaultReward = 1.5 }, "InvalidServiceConfiguration"},
		{"exploration", func(c *Config) { c.Service.ExplorationPercentage = -0.1 }, "InvalidServiceConfiguration"},
		{"export", func(c *Config) { c.Service.ModelExportFrequency = 0 }, "InvalidServiceConfiguration"},
		{"aggregation", func(c *Config) { c.Service.RewardAggregation = "last" }, "InvalidServiceConfiguration"},
		{"mode", func(c *Config) { c.Service.LearningMode = "online!" }, "InvalidServiceConfiguration"},
		{"retention 0", func(c *Config) { c.Service.LogRetentionDays = 0 }, "InvalidLogRetentionDays"},
		{"retention short", func(c *Config) {
			c.Service.RewardWaitTime = Duration(25 * time.Hour)
			c.Service.LogRetentionDays = 1
		}, "InvalidLogRetentionDays"},
		{"policy arguments", func(c *Config) { c.Policy.Arguments = "--cb_adf" }, "InvalidPolicyConfiguration"},
		{"policy unknown option", func(c *Config) { c.Policy.Arguments = "--cb_explore_adf --frobnicate" }, "InvalidPolicyConfiguration"},
		{"policy name", func(c *Config) { c.Policy.Name = "" }, "InvalidPolicyContract"},
	} {
		c := *base
		tc.edit(&c)
		if got := code(c.Validate()); got != tc.code {
			t.Errorf("%s: code %q, want %q (%v)", tc.name, got, tc.code, c.Validate())
		}
	}
	c := *base
	c.Service.LogRetentionDays = -1
	if err := c.Validate(); err != nil {
		t.Errorf("retention -1: %v", err)
	}
	c.Service.LogRetentionDays = 2
	c.Service.RewardWaitTime = Duration(24 * time.Hour)
	if err := c.Validate(); err != nil {
		t.Errorf("retention 2 days for a 1-day wait: %v", err)
	}
}

func TestUpdate(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 123, time.UTC)
	c := Default("a")
	s := c.Service
	s.RewardWaitTime = Duration(time.Minute)
	s.RewardAggregation = "SUM"
	s.LearningMode = ""
	next, err := c.Update(s, now)
	if err != nil {
		t.Fatal(err)
	}
	if next.Version != 1 || next.Service.RewardAggregation != "sum" || next.Service.LearningMode != Online ||
		!next.Service.LastConfigurationEditDate.Equal(now.Truncate(time.Second)) || c.Version != 0 {
		t.Fatalf("update gave %+v (old %+v)", next, c)
	}
	r := next.JoinRules()
	if r.RewardWaitMs != 60000 || r.Aggregation != "sum" || r.ConfigVersion != 1 {
		t.Fatalf("join rules %v", r)
	}
	s = next.Service
	s.LearningMode = Apprentice
	s.DefaultReward = 0.5
	if _, err := next.Update(s, now); code(err) != "InvalidLearningModeServiceConfiguration" {
		t.Fatalf("mode and reward together: %v", err)
	}
	s.DefaultReward = next.Service.DefaultReward
	if third, err := next.Update(s, now); err != nil || third.Service.Mode() != 2 {
		t.Fatalf("mode alone: %v, %v", third, err)
	}
	lim, err := next.SetLimits(Limits{MaxActions: 3}, now)
	if err != nil || lim.Version != 2 || lim.Limits.MaxActions != 3 {
		t.Fatalf("SetLimits: %+v, %v", lim, err)
	}
	if _, err := next.SetLimits(Limits{MaxFeatures: -1}, now); code(err) != "BadRequest" {
		t.Fatalf("negative limit: %v", err)
	}
	p, err := next.SetPolicy(Policy{Name: "x", Arguments: "--cb_explore_adf --epsilon 0.1 -q ::"}, now)
	if err != nil || p.Version != 2 || p.Policy.Name != "x" {
		t.Fatalf("SetPolicy: %+v, %v", p, err)
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry(Default("a"))
	cur := r.Get("a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan *Config)
	go func() {
		c, err := r.Next(ctx, "a", cur)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	v1 := *cur
	v1.Version = 1
	if !r.Set(&v1) {
		t.Fatal("version 1 refused")
	}
	if c := <-got; c != &v1 {
		t.Fatalf("Next gave %+v", c)
	}
	old := *cur
	if r.Set(&old) {
		t.Fatal("version 0 replaced version 1")
	}
	same := v1
	if !r.Set(&same) || r.Get("a") != &same {
		t.Fatal("an equal version (the later write) must replace")
	}
	if r.Get("b") != nil {
		t.Fatal("unknown loop")
	}
	r.Delete("a")
	if r.Get("a") != nil || len(r.Loops()) != 0 {
		t.Fatal("Delete")
	}
}

func TestEncode(t *testing.T) {
	c := Default("shop")
	c.Version = 7
	c.Service.RewardWaitTime = Duration(90 * time.Second)
	c.Limits.MaxActions = 10
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal([]byte("shop"), b)
	if err != nil || *got != *c {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, c)
	}
	if _, err := Unmarshal([]byte("other"), b); err == nil {
		t.Error("a configuration under another loop's key was taken")
	}
	c.Service.DefaultReward = 3
	b, _ = Marshal(c)
	if _, err := Unmarshal([]byte("shop"), b); err == nil {
		t.Error("an invalid configuration was taken")
	}
	if _, err := Unmarshal([]byte("shop"), []byte("{")); err == nil {
		t.Error("broken JSON was taken")
	}
}

// TestEncodeExplainability: the configuration record keeps
// isInferenceExplainabilityEnabled, and a record written before the
// setting existed reads as off.
func TestEncodeExplainability(t *testing.T) {
	c := Default("shop")
	if c.Service.IsInferenceExplainabilityEnabled {
		t.Fatal("on by default")
	}
	c.Version = 2
	c.Service.IsInferenceExplainabilityEnabled = true
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"isInferenceExplainabilityEnabled":true`) {
		t.Errorf("record %s", b)
	}
	if got, err := Unmarshal([]byte("shop"), b); err != nil || *got != *c {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, c)
	}
	old := strings.Replace(string(b), `,"isInferenceExplainabilityEnabled":true`, "", 1)
	if got, err := Unmarshal([]byte("shop"), []byte(old)); err != nil || got.Service.IsInferenceExplainabilityEnabled {
		t.Fatalf("a record without the field: %+v, %v", got, err)
	}
}

// TestProblemTypeFixed: a loop takes policies of its own problem type
// only, and resetting its policy keeps the type.
func TestProblemTypeFixed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	single := Default("s")
	multi, err := single.SetPolicy(Policy{Name: "ccb", Arguments: "--ccb_explore_adf --epsilon 0.1"}, now)
	var le *Error
	if !errors.As(err, &le) || le.Code != "InvalidPolicyConfiguration" || !strings.Contains(le.Message, "problem type is fixed") {
		t.Fatalf("single-slot loop took a multi-slot policy: %v, %v", multi, err)
	}
	m := Default("m")
	m.Policy = m.Policy.DefaultFor()
	m.Policy.Arguments = strings.Replace(m.Policy.Arguments, "--cb_explore_adf", "--ccb_explore_adf", 1)
	if err := m.Validate(); err != nil || !m.Policy.MultiSlot() {
		t.Fatalf("multi-slot config: %v", err)
	}
	next, err := m.SetPolicy(Policy{Name: "faster", Arguments: "--ccb_explore_adf -l 0.1"}, now)
	if err != nil || next.Version != m.Version+1 {
		t.Fatalf("multi-slot loop refused a multi-slot policy: %v", err)
	}
	if _, err := next.SetPolicy(Policy{Name: "cb", Arguments: "--cb_explore_adf"}, now); !errors.As(err, &le) {
		t.Fatalf("multi-slot loop took a single-slot policy: %v", err)
	}
	if d := next.Policy.DefaultFor(); !d.MultiSlot() || d.Name != DefaultPolicyName {
		t.Errorf("a multi-slot loop's default policy is %v", d)
	}
	if d := single.Policy.DefaultFor(); d.MultiSlot() {
		t.Errorf("a single-slot loop's default policy is %v", d)
	}
}
