package balancer_test

import (
	"fmt"

	"github.com/fastrouter/fastrouter/balancer"
)

// Nodes announce themselves into pools; a request's host finds its pool
// and the pool picks a node, which the caller releases with Done.
func ExampleTable_Lookup() {
	t, err := balancer.New(balancer.Config{FallbackKey: "default"})
	if err != nil {
		panic(err)
	}
	for _, a := range []struct {
		key, addr string
		weight    uint64
	}{
		{"example.com", "10.0.0.1:3031", 2},
		{"example.com", "10.0.0.2:3031", 1},
		{"*.example.com", "/run/uwsgi/wild.sock", 0},
		{"default", "10.0.0.9:3031", 0},
	} {
		if _, err := t.Announce(&balancer.Announce{Key: []byte(a.key), Address: []byte(a.addr), Weight: a.weight}); err != nil {
			panic(err)
		}
	}
	for _, host := range []string{"Example.COM:8080", "api.example.com", "other.org"} {
		fmt.Printf("%-16s → pool %q\n", host, t.Lookup([]byte(host)).Key)
	}

	p := t.Pool("example.com")
	now := t.Now().UnixNano()
	for range 3 {
		n := p.Pick(now, nil)
		fmt.Println("pick", n.Address)
		n.Done()
	}
	// Output:
	// Example.COM:8080 → pool "example.com"
	// api.example.com  → pool "*.example.com"
	// other.org        → pool "default"
	// pick 10.0.0.1:3031
	// pick 10.0.0.2:3031
	// pick 10.0.0.1:3031
}
