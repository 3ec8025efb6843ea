//go:build !race

package router

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestAnswerChallengeAllocatesNothing: with ACME on, the HTTP-01 check costs
// an ordinary request nothing, and a known token is answered without
// allocating once the response buffer is warm.
func TestAnswerChallengeAllocatesNothing(t *testing.T) {
	rt, err := New(Config{Pools: emptyPools{}, Challenges: &fakeChallenges{host: "app.test", token: "tok"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uri    string
		answer bool
	}{{"/index.html", false}, {"/.well-known/acme-challenge/tok", true}} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetRequestURI(tc.uri)
		ctx.Request.Header.SetHost("app.test")
		ctx.Request.Header.SetMethod("GET")
		rt.answerChallenge(&ctx) // warm up
		n := testing.AllocsPerRun(100, func() {
			if got := rt.answerChallenge(&ctx); got != tc.answer {
				t.Fatalf("%s: answered %v", tc.uri, got)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocs/op; want 0", tc.uri, n)
		}
	}
}
