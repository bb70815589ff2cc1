// Package loop holds a learning loop's configuration: Personalizer's
// service configuration and learning policy, versioned, with the rules
// that make a configuration valid and the registry every role reads the
// current configurations from.
package loop

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/open-personalizer/personalizer/bandit"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Config is one loop's configuration. Version counts the changes: a
// configuration made from flags is version 0, and every accepted change
// writes the next version to the configuration topic, where the newest
// version of each loop wins.
type Config struct {
	Loop    string  `json:"loop"`
	Version uint64  `json:"version"`
	Service Service `json:"service"`
	Policy  Policy  `json:"policy"`
	Limits  Limits  `json:"limits,omitzero"`
}

// Limits bound what one request to the loop may ask for; beyond
// Personalizer, set by an operator. A zero field takes the serving
// process's own limit (its --max-* flag).
type Limits struct {
	MaxActions             int `json:"maxActions,omitempty"`
	MaxIDLength            int `json:"maxIdLength,omitempty"`
	MaxFeatureBytes        int `json:"maxFeatureBytes,omitempty"`
	MaxFeatures            int `json:"maxFeatures,omitempty"`
	MaxInteractionFeatures int `json:"maxInteractionFeatures,omitempty"`
}

// Validate reports a negative limit as an [*Error].
func (l *Limits) Validate() error {
	if l.MaxActions < 0 || l.MaxIDLength < 0 || l.MaxFeatureBytes < 0 || l.MaxFeatures < 0 || l.MaxInteractionFeatures < 0 {
		return invalid("BadRequest", "Limits must not be negative (0 takes the server's own).")
	}
	return nil
}

// Service is Personalizer's ServiceConfiguration, with its JSON names.
type Service struct {
	RewardWaitTime            Duration  `json:"rewardWaitTime"`
	DefaultReward             float32   `json:"defaultReward"`
	RewardAggregation         string    `json:"rewardAggregation"`
	ExplorationPercentage     float64   `json:"explorationPercentage"`
	ModelExportFrequency      Duration  `json:"modelExportFrequency"`
	LogMirrorEnabled          bool      `json:"logMirrorEnabled"`
	LogMirrorSasUri           string    `json:"logMirrorSasUri,omitempty"`
	LogRetentionDays          int32     `json:"logRetentionDays"`
	LastConfigurationEditDate time.Time `json:"lastConfigurationEditDate,omitzero"`
	LearningMode              string    `json:"learningMode"`
	IsAutoOptimizationEnabled bool      `json:"isAutoOptimizationEnabled"`
	AutoOptimizationFrequency Duration  `json:"autoOptimizationFrequency"`
	AutoOptimizationStartDate time.Time `json:"autoOptimizationStartDate,omitzero"`
	// IsInferenceExplainabilityEnabled makes Rank answer with each
	// action's top features and their parts in its score
	// (inferenceExplanation); Rank does more work when it is on.
	IsInferenceExplainabilityEnabled bool `json:"isInferenceExplainabilityEnabled"`
}

// Policy is Personalizer's PolicyContract: a name and VW arguments.
type Policy struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Learning modes, by Personalizer's names.
const (
	Online      = "Online"
	Apprentice  = "Apprentice"
	LoggingOnly = "LoggingOnly"
)

// DefaultPolicyName names the default policy, as Personalizer did.
const DefaultPolicyName = "default policy"

// Defaults of a new loop, Personalizer's.
const (
	DefaultRewardWait       = 10 * time.Minute
	DefaultExportFrequency  = 5 * time.Minute
	DefaultLogRetentionDays = 90
	DefaultExploration      = 0.2
)

// Bounds this service enforces. Personalizer took reward waits from 5
// seconds and export frequencies from 10 seconds; this one takes both
// from 100 ms, so that a loop on a laptop (and a test) shows learning at
// once.
const (
	MinRewardWait      = 100 * time.Millisecond
	MaxRewardWait      = 48 * time.Hour
	MinExportFrequency = 100 * time.Millisecond
	MaxNameLength      = 256
	MaxArgumentsLength = 1024
)

// Default returns a new loop's configuration, version 0.
func Default(name string) *Config {
	return &Config{
		Loop: name,
		Service: Service{
			RewardWaitTime:            Duration(DefaultRewardWait),
			RewardAggregation:         "earliest",
			ExplorationPercentage:     DefaultExploration,
			ModelExportFrequency:      Duration(DefaultExportFrequency),
			LogRetentionDays:          DefaultLogRetentionDays,
			LearningMode:              Online,
			AutoOptimizationFrequency: Duration(28 * 24 * time.Hour),
		},
		Policy: Policy{Name: DefaultPolicyName, Arguments: bandit.DefaultPolicy},
	}
}

// Error is a configuration that cannot be taken, with Personalizer's
// error code (InvalidServiceConfiguration, InvalidPolicyConfiguration, ...).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func invalid(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Validate reports the first problem of c as an [*Error].
func (c *Config) Validate() error {
	if c.Loop == "" {
		return invalid("BadRequest", "The loop name must not be empty.")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	return c.Policy.Validate()
}

// Validate reports the first problem of s as an [*Error].
func (s *Service) Validate() error {
	const code = "InvalidServiceConfiguration"
	rw := time.Duration(s.RewardWaitTime)
	switch {
	case rw < MinRewardWait || rw > MaxRewardWait:
		return invalid("InvalidRewardWaitTime", "Reward wait time should be between %v and two days, got %v.", MinRewardWait, s.RewardWaitTime)
	case isNaN32(s.DefaultReward) || s.DefaultReward < -1 || s.DefaultReward > 1:
		return invalid(code, "Default reward should be between -1 and 1, got %v.", s.DefaultReward)
	case math.IsNaN(s.ExplorationPercentage) || s.ExplorationPercentage < 0 || s.ExplorationPercentage > 1:
		return invalid(code, "Exploration percentage should be between 0 and 1, got %v.", s.ExplorationPercentage)
	case time.Duration(s.ModelExportFrequency) < MinExportFrequency:
		return invalid(code, "Model export frequency should be at least %v, got %v.", MinExportFrequency, s.ModelExportFrequency)
	case s.LogRetentionDays != -1 && (s.LogRetentionDays < 1 || time.Duration(s.LogRetentionDays)*24*time.Hour < rw.Truncate(24*time.Hour)+24*time.Hour):
		return invalid("InvalidLogRetentionDays", "Log retention days should be -1 (keep forever) or at least the reward wait time in whole days plus one, got %d.", s.LogRetentionDays)
	case time.Duration(s.AutoOptimizationFrequency) < 0:
		return invalid(code, "Auto-optimization frequency must not be negative, got %v.", s.AutoOptimizationFrequency)
	case len(s.LogMirrorSasUri) > 2048:
		return invalid(code, "Log mirror SAS URI is longer than 2048 characters.")
	}
	if _, ok := aggregations[s.RewardAggregation]; !ok {
		return invalid(code, "Reward aggregation should be earliest, sum, average, median, min or max, got %q.", s.RewardAggregation)
	}
	if _, ok := modes[s.LearningMode]; !ok {
		return invalid(code, "Learning mode should be Online, Apprentice or LoggingOnly, got %q.", s.LearningMode)
	}
	return nil
}

func isNaN32(f float32) bool { return f != f }

// Validate reports the first problem of p as an [*Error].
func (p *Policy) Validate() error {
	switch {
	case p.Name == "" || p.Arguments == "":
		return invalid("InvalidPolicyContract", "A policy needs a name and arguments.")
	case utf8.RuneCountInString(p.Name) > MaxNameLength:
		return invalid("InvalidPolicyContract", "The policy name is longer than %d characters.", MaxNameLength)
	case utf8.RuneCountInString(p.Arguments) > MaxArgumentsLength:
		return invalid("InvalidPolicyContract", "The policy arguments are longer than %d characters.", MaxArgumentsLength)
	case !strings.Contains(p.Arguments, "--cb_explore_adf") && !strings.Contains(p.Arguments, "--ccb_explore_adf"):
		return invalid("InvalidPolicyConfiguration", "The learning policy must contain --cb_explore_adf (single-slot) or --ccb_explore_adf (multi-slot).")
	}
	if _, err := bandit.ParsePolicy(p.Arguments); err != nil {
		return invalid("InvalidPolicyConfiguration", "The learning policy is not valid: %v.", err)
	}
	return nil
}

// MultiSlot reports whether p is a multi-slot policy (--ccb_explore_adf):
// the loop's problem type.
func (p *Policy) MultiSlot() bool { return strings.Contains(p.Arguments, "--ccb_explore_adf") }

// DefaultFor returns the default policy of p's problem type: what
// resetting a loop's policy sets.
func (p *Policy) DefaultFor() Policy {
	if p.MultiSlot() {
		return Policy{Name: DefaultPolicyName, Arguments: bandit.DefaultMultiSlotPolicy}
	}
	return Policy{Name: DefaultPolicyName, Arguments: bandit.DefaultPolicy}
}

// aggregations are the reward aggregations, by name.
var aggregations = map[string]bool{"earliest": true, "sum": true, "average": true, "median": true, "min": true, "max": true}

// modes maps Personalizer's learning mode names onto the logged enum.
var modes = map[string]eventsv1.LearningMode{
	Online:      eventsv1.LearningMode_LEARNING_MODE_ONLINE,
	Apprentice:  eventsv1.LearningMode_LEARNING_MODE_APPRENTICE,
	LoggingOnly: eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY,
}

// Mode returns the learning mode as rank records log it.
func (s *Service) Mode() eventsv1.LearningMode { return modes[s.LearningMode] }

// ModeName returns Personalizer's name of a logged learning mode
// (unspecified is online).
func ModeName(m eventsv1.LearningMode) string {
	for name, v := range modes {
		if v == m {
			return name
		}
	}
	return Online
}

// JoinRules returns the rules the joiner judges a rank made under c by:
// every rank record carries them, so that a change never alters how an
// earlier rank is joined, nor a replay.
func (c *Config) JoinRules() *eventsv1.JoinRules {
	return &eventsv1.JoinRules{
		RewardWaitMs:  time.Duration(c.Service.RewardWaitTime).Milliseconds(),
		DefaultReward: c.Service.DefaultReward,
		Aggregation:   c.Service.RewardAggregation,
		ConfigVersion: c.Version,
	}
}

// UsePolicy sets c's policy arguments to p's and its exploration to p's
// --epsilon (as the float32's shortest decimal: 0.2, not
// 0.20000000298023224): the configuration a process's --policy flag makes.
func (c *Config) UsePolicy(p *bandit.Policy) {
	c.Policy.Arguments = p.String()
	c.Service.ExplorationPercentage, _ = strconv.ParseFloat(strconv.FormatFloat(float64(p.Epsilon()), 'g', -1, 32), 64)
}

// Epsilon is the exploration probability Rank applies (epsilon-greedy
// policies): Personalizer's explorationPercentage, which overrides the
// policy's --epsilon.
func (c *Config) Epsilon() float32 { return float32(c.Service.ExplorationPercentage) }

// Update returns c with the service configuration replaced by s, as the
// next version, or an [*Error] saying why s cannot be taken. As
// Personalizer did, a change of learning mode must come alone: not with a
// change of the reward wait, default reward or aggregation.
func (c *Config) Update(s Service, now time.Time) (*Config, error) {
	s.RewardAggregation = strings.ToLower(s.RewardAggregation)
	if s.LearningMode == "" {
		s.LearningMode = c.Service.LearningMode
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	old := c.Service
	if s.LearningMode != old.LearningMode && (s.RewardWaitTime != old.RewardWaitTime ||
		s.DefaultReward != old.DefaultReward || s.RewardAggregation != old.RewardAggregation) {
		return nil, invalid("InvalidLearningModeServiceConfiguration",
			"Learning mode cannot be changed together with the reward wait time, default reward or reward aggregation; make two calls.")
	}
	s.LastConfigurationEditDate = now.UTC().Truncate(time.Second)
	next := *c
	next.Version++
	next.Service = s
	return &next, nil
}

// SetPolicy returns c with policy p, as the next version. p must be of
// c's problem type ([Policy.MultiSlot]).
func (c *Config) SetPolicy(p Policy, now time.Time) (*Config, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.MultiSlot() != c.Policy.MultiSlot() {
		kind := map[bool]string{false: "single-slot (--cb_explore_adf)", true: "multi-slot (--ccb_explore_adf)"}
		return nil, invalid("InvalidPolicyConfiguration", "Loop %q is %s and a loop's problem type is fixed when it is made, so that its log and models never mix the two; make a new loop for a %s policy.", c.Loop, kind[c.Policy.MultiSlot()], kind[p.MultiSlot()])
	}
	next := *c
	next.Version++
	next.Policy = p
	next.Service.LastConfigurationEditDate = now.UTC().Truncate(time.Second)
	return &next, nil
}

// SetLimits returns c with limits l, as the next version.
func (c *Config) SetLimits(l Limits, now time.Time) (*Config, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	next := *c
	next.Version++
	next.Limits = l
	next.Service.LastConfigurationEditDate = now.UTC().Truncate(time.Second)
	return &next, nil
}

// ErrNotFound is returned for a loop that has no configuration.
var ErrNotFound = errors.New("loop not found")
