package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/health"
)

func TestPoolsSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`max-inflight: auto
queue-timeout: 3s
pools:
  api.example.com:
    algo: p2c
    max-inflight: 4
    queue-size: 16
    health-check:
      type: http
      path: /healthz
      port: 9000
      interval: 2s
      rise: 1
      fall: 2
  "*.shop.test":
    algo: lrc
  example.com/static:
    max-inflight: 0
`), 0o644)
	o, _, err := parseArgs([]string{"--config", path})
	if err != nil {
		t.Fatal(err)
	}
	pols, checks, err := o.poolPolicies()
	if err != nil {
		t.Fatal(err)
	}
	if got := o.defaultPolicy(); got.MaxInflight != balancer.LimitAuto || got.QueueTimeout != 3*time.Second || got.QueueSize != balancer.DefaultQueueSize {
		t.Errorf("default policy %+v", got)
	}
	if got := pols["api.example.com"]; got.Algo != balancer.AlgoP2C || got.MaxInflight != 4 || got.QueueSize != 16 {
		t.Errorf("api policy %+v", got)
	}
	if got := pols["*.shop.test"]; got.Algo != balancer.AlgoLRC || got.MaxInflight != 0 {
		t.Errorf("wildcard policy %+v", got)
	}
	want := health.Check{Type: "http", Path: "/healthz", Port: 9000, Interval: 2 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 2}
	if got := checks["api.example.com"]; got != want || len(checks) != 1 {
		t.Errorf("checks %+v, want %+v", checks, want)
	}
}

func TestPoolsSectionErrors(t *testing.T) {
	for body, want := range map[string]string{
		"pools:\n  a:\n    algo: fast\n":                         "algo",
		"pools:\n  a:\n    max-inflight: lots\n":                 "max in-flight",
		"pools:\n  a:\n    maxinflight: 3\n":                     "maxinflight",
		"pools:\n  a:\n    health-check:\n      type: icmp\n":    "icmp",
		"pools:\n  a:\n    health-check:\n      intervall: 1s\n": "intervall",
		"pools:\n  a:\n    queue-timeout: soon\n":                `line 3: queue-timeout: "soon" is not a duration`,
		"pools:\n  a: {}\n  A: {}\n":                             "same pool",
		"pools: [a, b]\n":                                        "pools",
		"max-inflight: -3\n":                                     "--max-inflight",
		"queue-timeout: 0s\n":                                    "--queue-timeout",
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(path, []byte(body), 0o644)
		_, _, err := parseArgs([]string{"--config", path})
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: err %v, want one line mentioning %q", body, err, want)
		}
	}
}
