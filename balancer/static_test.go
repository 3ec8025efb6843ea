package balancer

import (
	"reflect"
	"testing"
)

func nodeAddrs(tb *Table, key string) []string {
	p := tb.Pool(key)
	if p == nil {
		return nil
	}
	var out []string
	for _, n := range p.Nodes() {
		out = append(out, n.Address)
	}
	return out
}

// A reload adds the nodes newly listed, removes those no longer listed, and
// leaves the rest as they were: their counters survive, and static nodes
// that came another way (the admin API) are not touched.
func TestStaticSetFollowsTheConfiguration(t *testing.T) {
	tb, _ := newTable(t, Config{})
	if err := tb.AddStatic("admin.test", "10.0.9.9:3031", 1); err != nil {
		t.Fatal(err)
	}
	s := NewStaticSet(tb)
	a, b, c := StaticNode{"a.test", "10.0.0.1:3031"}, StaticNode{"a.test", "10.0.0.2:3031"}, StaticNode{"c.test", "10.0.0.3:3031"}
	if added, removed, err := s.Apply([]StaticNode{a, b}); err != nil || removed != nil || !reflect.DeepEqual(added, []StaticNode{a, b}) {
		t.Fatalf("first Apply: added %v, removed %v, %v", added, removed, err)
	}
	if got := nodeAddrs(tb, "a.test"); !reflect.DeepEqual(got, []string{a.Address, b.Address}) {
		t.Fatalf("a.test nodes %v", got)
	}
	na := tb.Pool("a.test").Node(a.Address)
	if !na.Static {
		t.Fatal("configured node not static")
	}
	na.AddTraffic(10, 20)

	added, removed, err := s.Apply([]StaticNode{a, c})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(removed, []StaticNode{b}) || !reflect.DeepEqual(added, []StaticNode{c}) {
		t.Fatalf("added %v, removed %v; want %v and %v", added, removed, []StaticNode{c}, []StaticNode{b})
	}
	if got := nodeAddrs(tb, "a.test"); !reflect.DeepEqual(got, []string{a.Address}) {
		t.Fatalf("a.test nodes after the reload %v; want only %s", got, a.Address)
	}
	if tb.Pool("a.test").Node(a.Address) != na || na.Info().RxBytes != 10 {
		t.Fatalf("a kept node was replaced or lost its counters: %+v", tb.Pool("a.test").Node(a.Address).Info())
	}
	if got := nodeAddrs(tb, "c.test"); !reflect.DeepEqual(got, []string{c.Address}) {
		t.Fatalf("c.test nodes %v", got)
	}

	if _, removed, err = s.Apply(nil); err != nil || !reflect.DeepEqual(removed, []StaticNode{a, c}) {
		t.Fatalf("Apply(nil): removed %v, %v; want a and c in order", removed, err)
	}
	if got := nodeAddrs(tb, "admin.test"); !reflect.DeepEqual(got, []string{"10.0.9.9:3031"}) {
		t.Fatalf("a static node the set never added was touched: %v", got)
	}
}

// A node the table refuses fails the Apply before anything is removed.
func TestStaticSetRefusalRemovesNothing(t *testing.T) {
	tb, _ := newTable(t, Config{})
	s := NewStaticSet(tb)
	a := StaticNode{"a.test", "10.0.0.1:3031"}
	if _, _, err := s.Apply([]StaticNode{a}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Apply([]StaticNode{{"b\x01.test", "10.0.0.2:3031"}}); err == nil {
		t.Fatal("Apply of a bad key succeeded")
	}
	if got := nodeAddrs(tb, "a.test"); !reflect.DeepEqual(got, []string{a.Address}) {
		t.Fatalf("a refused Apply removed nodes: a.test has %v", got)
	}
	if _, removed, err := s.Apply(nil); err != nil || !reflect.DeepEqual(removed, []StaticNode{a}) {
		t.Fatalf("Apply(nil) after a refusal: removed %v, %v; want a", removed, err)
	}
}

// Nodes a refused Apply added before the refusal are tracked: a later Apply
// that no longer lists them removes them instead of leaving them behind.
func TestStaticSetRefusalTracksWhatItAdded(t *testing.T) {
	tb, _ := newTable(t, Config{})
	s := NewStaticSet(tb)
	a := StaticNode{"a.test", "10.0.0.1:3031"}
	if _, _, err := s.Apply([]StaticNode{a, {"b\x01.test", "10.0.0.2:3031"}}); err == nil {
		t.Fatal("Apply of a bad key succeeded")
	}
	if got := nodeAddrs(tb, "a.test"); !reflect.DeepEqual(got, []string{a.Address}) {
		t.Fatalf("a.test has %v; want the node added before the refusal", got)
	}
	if _, removed, err := s.Apply(nil); err != nil || !reflect.DeepEqual(removed, []StaticNode{a}) {
		t.Fatalf("Apply(nil): removed %v, %v; want a", removed, err)
	}
	if got := nodeAddrs(tb, "a.test"); got != nil {
		t.Fatalf("a.test still has %v after Apply(nil)", got)
	}
}
