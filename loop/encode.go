package loop

import (
	"encoding/json"
	"fmt"
)

// Marshal encodes c as the value of its record in the configuration
// topic (key: the loop name).
func Marshal(c *Config) ([]byte, error) { return json.Marshal(c) }

// Unmarshal decodes a configuration record. A record whose key and loop
// differ, or whose configuration is not valid, is an error: followers
// skip it rather than apply it.
func Unmarshal(key, value []byte) (*Config, error) {
	c := new(Config)
	if err := json.Unmarshal(value, c); err != nil {
		return nil, fmt.Errorf("configuration of loop %q: %w", key, err)
	}
	if c.Loop != string(key) {
		return nil, fmt.Errorf("configuration under key %q is for loop %q", key, c.Loop)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("configuration of loop %q, version %d: %w", key, c.Version, err)
	}
	return c, nil
}
