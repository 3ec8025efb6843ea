package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
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

// decodePools decodes the pools: section of the file strictly: a misspelt
// field is a problem, not a silently ignored setting, and each problem
// names the pool, the field and the file's line. Every problem is
// returned; the pools decoded are returned whole or not at all.
func decodePools(n *yaml.Node) (map[string]poolConfig, []error) {
	if n.Kind != yaml.MappingNode {
		return nil, []error{fmt.Errorf("line %d: want a map of pool key to settings", n.Line)}
	}
	var p problems
	pools := make(map[string]poolConfig, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, body := n.Content[i].Value, resolveAlias(n.Content[i+1])
		if _, dup := pools[key]; dup {
			p.addf("line %d: pool %q is listed twice", n.Content[i].Line, key)
			continue
		}
		var pc poolConfig
		decodeFields(body, key, []yamlField{
			{"algo", func(v *yaml.Node) error { return scalarString(v, &pc.Algo) }},
			{"max-inflight", func(v *yaml.Node) error { return scalarString(v, &pc.MaxInflight) }},
			{"queue-size", func(v *yaml.Node) error { return scalarInt(v, &pc.QueueSize) }},
			{"queue-timeout", func(v *yaml.Node) error { return scalarDuration(v, &pc.QueueTimeout) }},
			{"health-check", func(v *yaml.Node) error {
				pc.HealthCheck = decodeHealth(v, key, &p)
				return nil
			}},
		}, &p)
		pools[key] = pc
	}
	if len(p) > 0 {
		return nil, p
	}
	return pools, nil
}

// decodeHealth decodes a pool's health-check: block.
func decodeHealth(n *yaml.Node, key string, p *problems) *healthConfig {
	h := &healthConfig{}
	decodeFields(n, key+": health-check", []yamlField{
		{"type", func(v *yaml.Node) error { return scalarString(v, &h.Type) }},
		{"path", func(v *yaml.Node) error { return scalarString(v, &h.Path) }},
		{"host", func(v *yaml.Node) error { return scalarString(v, &h.Host) }},
		{"port", func(v *yaml.Node) error {
			var port int
			if err := scalarInt(v, &port); err != nil {
				return err
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("%d is out of range (0-65535)", port)
			}
			h.Port = uint16(port)
			return nil
		}},
		{"interval", func(v *yaml.Node) error { return scalarDuration(v, &h.Interval) }},
		{"timeout", func(v *yaml.Node) error { return scalarDuration(v, &h.Timeout) }},
		{"rise", func(v *yaml.Node) error { return scalarInt(v, &h.Rise) }},
		{"fall", func(v *yaml.Node) error { return scalarInt(v, &h.Fall) }},
	}, p)
	return h
}

// yamlField is one known field of a YAML map and how to decode its value.
type yamlField struct {
	name string
	set  func(v *yaml.Node) error
}

// decodeFields decodes the map n field by field; an unknown field, or a
// value its field refuses, is a problem naming where and the line.
func decodeFields(n *yaml.Node, where string, fields []yamlField, p *problems) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with nothing: every field at its default
	}
	if n.Kind != yaml.MappingNode {
		p.addf("%s: line %d: want a map of settings", where, n.Line)
		return
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		j := slices.IndexFunc(fields, func(f yamlField) bool { return f.name == k.Value })
		if j < 0 {
			p.addf("%s: line %d: unknown setting %q (want %s)", where, k.Line, k.Value, strings.Join(names, ", "))
			continue
		}
		if err := fields[j].set(v); err != nil {
			p.addf("%s: line %d: %s: %w", where, v.Line, k.Value, err)
		}
	}
}

func scalarString(v *yaml.Node, dst *string) error {
	if v.Kind != yaml.ScalarNode {
		return errors.New("want a single value")
	}
	*dst = v.Value
	return nil
}

func scalarInt(v *yaml.Node, dst *int) error {
	if v.Kind != yaml.ScalarNode {
		return errors.New("want a single value")
	}
	n, err := strconv.Atoi(v.Value)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v.Value)
	}
	*dst = n
	return nil
}

func scalarDuration(v *yaml.Node, dst *time.Duration) error {
	if v.Kind != yaml.ScalarNode {
		return errors.New("want a single value")
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 5s, 1m)", v.Value)
	}
	*dst = d
	return nil
}

// defaultPolicy is the policy of pools the file does not name.
func (o *options) defaultPolicy() balancer.Policy {
	limit, _ := balancer.ParseLimit(o.maxInflight) // validated
	return balancer.Policy{MaxInflight: limit, QueueSize: o.queueSize, QueueTimeout: o.queueTimeout}
}

// poolPolicies resolves the pools: section into balancer policies and
// health checks, validating every field. The error lists every problem,
// pools in key order.
func (o *options) poolPolicies() (map[string]balancer.Policy, map[string]health.Check, error) {
	pols := make(map[string]balancer.Policy, len(o.pools))
	checks := map[string]health.Check{}
	seen := make(map[string]string, len(o.pools))
	var p problems
	for _, key := range slices.Sorted(maps.Keys(o.pools)) {
		if key == "" || len(key) > 255 || strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			p.addf("pools: bad pool key %q", key)
			continue
		}
		if other, dup := seen[strings.ToLower(key)]; dup {
			p.addf("pools: %q and %q name the same pool (keys are case-insensitive)", other, key)
			continue
		}
		seen[strings.ToLower(key)] = key
		if pol, check, ok := poolPolicy(key, o.pools[key], &p); ok {
			pols[key] = pol
			if check != nil {
				checks[key] = *check
			}
		}
	}
	if len(p) > 0 {
		return nil, nil, p.err()
	}
	return pols, checks, nil
}

// poolPolicy resolves one pool's settings; ok is false after a problem.
func poolPolicy(key string, pc poolConfig, p *problems) (pol balancer.Policy, check *health.Check, ok bool) {
	n := len(*p)
	pol = balancer.Policy{QueueSize: pc.QueueSize, QueueTimeout: pc.QueueTimeout}
	if pc.QueueSize < 0 || pc.QueueSize > 1<<20 {
		p.addf("pools: %s: queue-size must be between 0 and 1048576, got %d", key, pc.QueueSize)
	}
	if pc.QueueTimeout < 0 {
		p.addf("pools: %s: queue-timeout must not be negative, got %s", key, pc.QueueTimeout)
	}
	if pc.Algo != "" {
		if a, err := balancer.ParseAlgo(pc.Algo); err != nil {
			p.addf("pools: %s: algo %q: want wrr, lrc, wlrc, iphash, p2c, hash or sed", key, pc.Algo)
		} else {
			pol.Algo = a
		}
	}
	if pc.MaxInflight != "" {
		if l, err := balancer.ParseLimit(pc.MaxInflight); err != nil {
			p.addf("pools: %s: %w", key, err)
		} else {
			pol.MaxInflight = l
		}
	}
	if len(*p) == n {
		if err := pol.Validate(); err != nil {
			p.addf("pools: %s: %w", key, err)
		}
	}
	if h := pc.HealthCheck; h != nil {
		c := health.Check{Type: h.Type, Path: h.Path, Host: h.Host, Port: h.Port, Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}
		if err := c.Normalize(); err != nil {
			p.addf("pools: %s: %w", key, err)
		}
		check = &c
	}
	return pol, check, len(*p) == n
}
