package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/health"
)

// poolConfig is one entry of the configuration file's pools: section. Keys
// are pool keys (host, *.wildcard, .dotsplit or host/mount), matched
// case-insensitively; every field is optional.
type poolConfig struct {
	Algo         string        `yaml:"algo"`
	MaxInflight  string        `yaml:"max-inflight"`
	QueueSize    int           `yaml:"queue-size"`
	QueueTimeout time.Duration `yaml:"queue-timeout"`
	HealthCheck  *healthConfig `yaml:"health-check"`
}

// healthConfig is a pool's health-check: block (see health.Check).
type healthConfig struct {
	Type     string        `yaml:"type"`
	Path     string        `yaml:"path"`
	Host     string        `yaml:"host"`
	Port     uint16        `yaml:"port"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Rise     int           `yaml:"rise"`
	Fall     int           `yaml:"fall"`
}

// decodePools decodes the pools: section of the file strictly (a misspelt
// field is an error, not a silently ignored setting), with the file's own
// line numbers in errors.
func decodePools(data []byte) (map[string]poolConfig, error) {
	var doc struct {
		Pools map[string]poolConfig `yaml:"pools"`
		Rest  map[string]any        `yaml:",inline"` // the flag settings
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, oneLine(err)
	}
	if doc.Pools == nil {
		return nil, errors.New("want a map of pool key to settings")
	}
	return doc.Pools, nil
}

// defaultPolicy is the policy of pools the file does not name.
func (o *options) defaultPolicy() balancer.Policy {
	limit, _ := balancer.ParseLimit(o.maxInflight) // validated
	return balancer.Policy{MaxInflight: limit, QueueSize: o.queueSize, QueueTimeout: o.queueTimeout}
}

// poolPolicies resolves the pools: section into balancer policies and
// health checks, validating every field.
func (o *options) poolPolicies() (map[string]balancer.Policy, map[string]health.Check, error) {
	pols := make(map[string]balancer.Policy, len(o.pools))
	checks := map[string]health.Check{}
	seen := make(map[string]string, len(o.pools))
	for key, pc := range o.pools {
		if key == "" || len(key) > 255 || strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return nil, nil, fmt.Errorf("pools: bad pool key %q", key)
		}
		if other, dup := seen[strings.ToLower(key)]; dup {
			return nil, nil, fmt.Errorf("pools: %q and %q name the same pool (keys are case-insensitive)", other, key)
		}
		seen[strings.ToLower(key)] = key
		pol := balancer.Policy{QueueSize: pc.QueueSize, QueueTimeout: pc.QueueTimeout}
		if pc.Algo != "" {
			a, err := balancer.ParseAlgo(pc.Algo)
			if err != nil {
				return nil, nil, fmt.Errorf("pools: %s: algo %q: want wrr, lrc, wlrc, iphash, p2c or hash", key, pc.Algo)
			}
			pol.Algo = a
		}
		if pc.MaxInflight != "" {
			l, err := balancer.ParseLimit(pc.MaxInflight)
			if err != nil {
				return nil, nil, fmt.Errorf("pools: %s: %w", key, err)
			}
			pol.MaxInflight = l
		}
		if err := pol.Validate(); err != nil {
			return nil, nil, fmt.Errorf("pools: %s: %w", key, err)
		}
		pols[key] = pol
		if h := pc.HealthCheck; h != nil {
			c := health.Check{Type: h.Type, Path: h.Path, Host: h.Host, Port: h.Port, Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}
			if err := c.Normalize(); err != nil {
				return nil, nil, fmt.Errorf("pools: %s: %w", key, err)
			}
			checks[key] = c
		}
	}
	return pols, checks, nil
}
