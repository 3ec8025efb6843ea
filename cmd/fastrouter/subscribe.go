package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/subauth"
)

// subscribeOptions are the flags of `fastrouter subscribe`.
type subscribeOptions struct {
	servers      []string
	key, address string
	weight       uint64
	modifier1    uint
	backup       uint64
	algo         string
	notify       string
	unsubscribe  bool
	drain        bool
	drainTimeout time.Duration
	sign         string
	every        time.Duration
}

// newSubscribeFlags defines the flags of `fastrouter subscribe` on o.
func newSubscribeFlags(o *subscribeOptions) *flagSet {
	fs := newFlagSetNamed("fastrouter subscribe")
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	o.servers = []string{"127.0.0.1:2626"}
	fs.Var(&listFlag{vals: &o.servers}, "server", "subscription server `ADDR` (UDP ip:port, or a unix datagram socket path; repeatable)")
	fs.StringVar(&o.key, "key", "", "pool `KEY` (the host name requests use; required)")
	fs.StringVar(&o.address, "address", "", "the node's uwsgi `ADDR`: ip:port, :port (the sender's IP), or a unix socket path (required)")
	fs.Uint64Var(&o.weight, "weight", 0, "node weight `N` (default 0, read as 1)")
	fs.UintVar(&o.modifier1, "modifier1", 0, "uwsgi modifier1 `N` the router puts in requests to this node")
	fs.Uint64Var(&o.backup, "backup", 0, "backup level `N` (default 0: primary)")
	fs.StringVar(&o.algo, "algo", "", "balancing algorithm `NAME` of the pool, if this datagram creates it")
	fs.StringVar(&o.notify, "notify", "", "unix datagram socket `PATH` the router notifies when a drain of this node completes")
	fs.BoolVar(&o.unsubscribe, "unsubscribe", false, "send an unsubscribe (the router drains the node, then removes it)")
	fs.BoolVar(&o.drain, "drain", false, "ask the router to drain the node (drain=1)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 0, "drain deadline `D` sent with --drain or --unsubscribe (default 0s: the router's --drain-timeout)")
	fs.StringVar(&o.sign, "sign", "", "sign with `DIGEST:KEYFILE`: a PEM RSA private key (as uWSGI's --subscribe-to ...,SHA256:key.pem) or an Ed25519 one")
	fs.DurationVar(&o.every, "every", 0, "re-announce every `D` (at least 1s) until SIGTERM/SIGINT, then unsubscribe (default 0s: send once)")
	fs.close()
	return fs
}

// runSubscribe is `fastrouter subscribe`: it announces a node that is not a
// uWSGI instance (any uwsgi-protocol server) to subscription servers, with
// the datagrams uWSGI's --subscribe-to sends, optionally signed the way
// uWSGI signs them (RSA) or with Ed25519. Once by default; with --every it
// keeps announcing until SIGTERM/SIGINT and then unsubscribes, as a uWSGI
// node does. Exit 0 when every datagram was sent, 1 on a send failure, 2
// for bad flags.
func runSubscribe(args []string, stdout, stderr io.Writer) int {
	var o subscribeOptions
	fs := newSubscribeFlags(&o)
	var p problems
	rest, help := parseFlags(fs, args, &p)
	if help {
		fmt.Fprintf(stdout, "Usage: fastrouter subscribe --key KEY --address ADDR [flags]\n\n"+
			"Sends subscription datagrams (uWSGI --subscribe-to format) for a node that is not uWSGI.\n\nFlags:\n")
		printFlags(stdout, fs)
		return 0
	}
	if len(rest) > 0 {
		p.addf("unexpected argument %q (see fastrouter subscribe --help)", rest[0])
	}
	p.add(o.validate())
	if len(p) > 0 {
		report(stderr, "fastrouter subscribe", p.err())
		return 2
	}
	var signer *subauth.Signer
	if o.sign != "" {
		var err error
		if signer, err = subauth.LoadSigner(o.sign); err != nil {
			fmt.Fprintf(stderr, "fastrouter subscribe: --sign: %v\n", err)
			return 2
		}
	}
	send := func(unsubscribe bool) error {
		d, err := o.datagram(unsubscribe, signer, time.Now())
		if err != nil {
			return err
		}
		return sendDatagram(o.servers, d)
	}
	if o.every == 0 {
		if err := send(o.unsubscribe); err != nil {
			fmt.Fprintf(stderr, "fastrouter subscribe: %v\n", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	t := time.NewTicker(o.every)
	defer t.Stop()
	for {
		if err := send(false); err != nil {
			// A router that is down now may be up at the next tick.
			fmt.Fprintf(stderr, "fastrouter subscribe: %v\n", err)
		}
		select {
		case <-ctx.Done():
			if err := send(true); err != nil {
				fmt.Fprintf(stderr, "fastrouter subscribe: unsubscribe: %v\n", err)
				return 1
			}
			return 0
		case <-t.C:
		}
	}
}

func (o *subscribeOptions) validate() error {
	switch {
	case o.key == "" || len(o.key) > uwsgi.MaxKeyLen:
		return errors.New("--key is required (1 to 255 bytes)")
	case o.address == "" || len(o.address) > uwsgi.MaxAddressLen:
		return errors.New("--address is required (1 to 255 bytes)")
	case o.modifier1 > 255:
		return errors.New("--modifier1 must be 0..255")
	case o.every != 0 && o.every < time.Second:
		// Signed datagrams carry whole seconds and must be newer than the
		// last one: two in the same second would be refused as a replay.
		return errors.New("--every must be at least 1s")
	case o.every != 0 && o.unsubscribe:
		return errors.New("--every and --unsubscribe exclude each other (--every unsubscribes on exit)")
	case o.drainTimeout < 0 || o.drainTimeout%time.Second != 0:
		return errors.New("--drain-timeout must be whole seconds")
	case len(o.servers) == 0:
		return errors.New("--server is required")
	}
	if !strings.HasPrefix(o.address, ":") {
		if _, err := balancer.ParseEndpoint(o.address); err != nil {
			return fmt.Errorf("--address %q: %w", o.address, err)
		}
	}
	if o.algo != "" {
		if _, err := balancer.ParseAlgo(o.algo); err != nil {
			return fmt.Errorf("--algo: unknown algorithm %q", o.algo)
		}
	}
	return nil
}

// datagram builds one announce (or unsubscribe), signed when signer is set.
func (o *subscribeOptions) datagram(unsubscribe bool, signer *subauth.Signer, now time.Time) ([]byte, error) {
	sub := uwsgi.Subscription{
		Unsubscribe:  unsubscribe,
		Key:          []byte(o.key),
		Address:      []byte(o.address),
		Modifier1:    uint8(o.modifier1),
		Cores:        1,
		Weight:       o.weight,
		Backup:       o.backup,
		Drain:        o.drain && !unsubscribe,
		DrainTimeout: uint64(o.drainTimeout / time.Second),
	}
	if o.algo != "" {
		sub.Algo = []byte(o.algo)
	}
	if o.notify != "" {
		sub.Notify = []byte(o.notify)
	}
	if signer == nil {
		return uwsgi.AppendSubscription(nil, &sub), nil
	}
	return subauth.AppendSigned(nil, &sub, signer, now)
}

// sendDatagram sends d to every server, each over a fresh socket (as uWSGI
// does), with a deadline.
func sendDatagram(servers []string, d []byte) error {
	var errs []error
	for _, s := range servers {
		network := "udp"
		if strings.Contains(s, "/") || strings.HasPrefix(s, "@") {
			network = "unixgram"
		}
		c, err := net.DialTimeout(network, s, 5*time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(d); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
		c.Close()
	}
	return errors.Join(errs...)
}
