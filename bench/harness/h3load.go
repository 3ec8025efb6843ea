package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// runH3Load drives an https URL over HTTP/3 with quic-go's client, closed
// loop like h2load's -n/-c/-m (which the Debian build cannot do over
// QUIC): c connections with m requests in flight on each, n requests in
// all, each timed from its start to the end of its body. authority is the
// SNI name and :authority. Its own CPU is the harness process's during the
// run (nothing else runs meanwhile).
func runH3Load(ctx context.Context, url, authority string, n, c, m int) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var next, failed atomic.Int64
	lat := make([][]float64, c*m)
	var firstErr atomic.Value
	cpu0 := selfCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for ci := range c {
		// One transport per connection: quic-go pools by authority.
		tr := &http3.Transport{TLSClientConfig: &tls.Config{ServerName: authority, InsecureSkipVerify: true}}
		defer tr.Close()
		cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		for si := range m {
			wg.Go(func() {
				own := &lat[ci*m+si]
				for next.Add(1) <= int64(n) && ctx.Err() == nil {
					t0 := time.Now()
					if err := h3Get(ctx, cl, url, authority); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					*own = append(*own, float64(time.Since(t0).Microseconds())/1000)
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []float64
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Float64s(all)
	r := result{requests: float64(len(all)), rps: float64(len(all)) / elapsed.Seconds(), loadCPU: selfCPU() - cpu0}
	if len(all) > 0 {
		r.p50, r.p99 = pct(all, 0.50), pct(all, 0.99)
	}
	if f := failed.Load(); f > 0 {
		r.errors = fmt.Sprintf("failed %d (first: %v)", f, firstErr.Load())
	}
	return r, ctx.Err()
}

func h3Get(ctx context.Context, cl *http.Client, url, authority string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	req.Host = authority
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// selfCPU is this process's user and system CPU time in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
