package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/bench"
	"github.com/amexd/amexd/internal/testkit/cluster"
)

// cluster builds a local cluster (--hosts hosts in their own network
// namespaces behind HAProxy, one Redis, one simulator), runs the mixed
// scenario through HAProxy, reports it with the upstream calls it cost, and
// tears the cluster down.
func (r *runner) cluster(ctx context.Context) (reps []bench.Report, err error) {
	if err := cluster.Check(); err != nil {
		return nil, err
	}
	if r.bin = r.opts.amexd; r.bin == "" {
		fmt.Fprintln(r.log, "building amexd …")
		if r.bin, err = bench.BuildAmexd(ctx, r.tmp); err != nil {
			return nil, err
		}
	}
	args := []string{"-ratelimit.rate", "16000000-M", "-cache.shared", r.opts.shared}
	if r.opts.workers > 0 {
		args = append(args, "-workers", strconv.Itoa(r.opts.workers))
	}
	c, err := cluster.Start(ctx, cluster.Options{
		Binary:    r.bin,
		Hosts:     r.opts.hosts,
		Dir:       r.tmp,
		Args:      args,
		Simulator: simulator.DefaultConfig(),
		Log:       slog.New(slog.NewTextHandler(r.log, nil)),
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, h := range c.Hosts {
				fmt.Fprintf(os.Stderr, "host %d log (end):\n%s\n", h.Index, h.Log())
			}
		}
		c.Close()
	}()
	fmt.Fprintf(r.log, "cluster %s: HAProxy at %s, %d hosts, Redis %s, simulator %s, cache.shared %s\n",
		c.ID, c.LB, len(c.Hosts), c.RedisAddr, c.UpstreamURL, r.opts.shared)
	reps, err = r.mixed(ctx, c.LB)
	st := c.Upstream.Stats()
	for i := range reps {
		reps[i].Name = fmt.Sprintf("cluster %d hosts, %s", len(c.Hosts), reps[i].Name)
		reps[i].Notes = append(reps[i].Notes, fmt.Sprintf("through HAProxy to %d hosts (cache.shared %s); upstream calls: getUsers %d, getUserById %d, getEvents %d, getEventById %d, addEvent %d",
			len(c.Hosts), r.opts.shared, st.Calls.GetUsers, st.Calls.GetUserByID, st.Calls.GetEvents, st.Calls.GetEventByID, st.Calls.AddEvent))
	}
	if errors.Is(err, context.Canceled) {
		err = fmt.Errorf("interrupted: %w", err)
	}
	return reps, err
}
