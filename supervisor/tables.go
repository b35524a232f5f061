package supervisor

import (
	"context"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/ratelimit"
)

// ensureTable creates the shared rate-limit table the first time a
// configuration needs it (the shared store, or Redis's local fallback), and
// the idempotency table the first time one keeps Idempotency-Keys on this
// machine; each then lives as long as the supervisor, so counters and keys
// survive reloads.
func (o *owner) ensureTable(cfg config.Config) error {
	if err := o.ensureIdempotency(cfg); err != nil {
		return err
	}
	if !cfg.RateLimit.UsesTable() || o.tableFile != nil {
		return nil
	}
	table, f, err := ratelimit.CreateTable(cfg.RateLimit.TableSlots)
	if err != nil {
		return fmt.Errorf("create shared rate-limit table: %w", err)
	}
	o.useTable(table, f)
	return nil
}

// useTable keeps the shared rate-limit table, created here or inherited
// across a re-execution, and exports its gauges.
func (o *owner) useTable(table *ratelimit.Table, f *os.File) {
	o.table, o.tableFile = table, f
	slots := table.Stats().Slots
	o.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "amexd_ratelimit_table_slots",
			Help: "Slots of the shared rate-limit table (ratelimit.table_slots).",
		}, func() float64 { return float64(slots) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "amexd_ratelimit_table_used_slots",
			Help: "Slots of the shared rate-limit table holding a live window.",
		}, func() float64 { return float64(table.Stats().Used) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "amexd_ratelimit_table_overflow_total",
			Help: "Requests whose client found no slot in the full shared table and was limited by its overflow sketch.",
		}, func() float64 { return float64(table.Full()) }),
	)
}

// rateLimitStatus describes the shared table, nil when there is none.
func (o *owner) rateLimitStatus() *operator.RateLimitStatus {
	if o.table == nil {
		return nil
	}
	st := o.table.Stats()
	return &operator.RateLimitStatus{TableSlots: st.Slots, TableUsed: st.Used, TableOverflow: st.Full}
}

// idempotencyTable is the Idempotency-Key table every worker maps as fd 6.
// The supervisor keeps the file, so that keys outlive workers (an upgrade
// hands it to the new binary like the rate-limit table's), and a mapping
// of its own, which it only reads, for the table's figures.
type idempotencyTable struct {
	file  *os.File
	table *idempotency.Table
}

// ensureIdempotency creates the idempotency table the first time a
// configuration keeps keys on this machine.
func (o *owner) ensureIdempotency(cfg config.Config) error {
	if cfg.RateLimit.Store == ratelimit.StoreRedis || o.idem.file != nil {
		return nil
	}
	table, f, err := idempotency.NewTable(cfg.Idempotency)
	if err != nil {
		return fmt.Errorf("create idempotency table: %w", err)
	}
	o.useIdempotency(table, f)
	return nil
}

// useIdempotency keeps the idempotency table, created here or inherited
// across a re-execution, and exports its figures.
func (o *owner) useIdempotency(table *idempotency.Table, f *os.File) {
	o.idem = idempotencyTable{file: f, table: table}
	o.metrics.reg.MustRegister(idempotencyCollector{table})
}

// idempotencyCollector exports the idempotency table's figures from one
// Stats per scrape: Stats reads every entry under the table's lock, so its
// three series share a single read.
type idempotencyCollector struct{ table *idempotency.Table }

var (
	idemMaxKeysDesc = prometheus.NewDesc("amexd_idempotency_table_max_keys",
		"Keys the idempotency table holds at most (idempotency.max_keys, rounded down to whole buckets).", nil, nil)
	idemKeysDesc = prometheus.NewDesc("amexd_idempotency_table_keys",
		"Idempotency-Keys in the table whose TTL has not ended.", nil, nil)
	idemEvictedDesc = prometheus.NewDesc("amexd_idempotency_table_evicted_total",
		"Idempotency-Keys dropped before their TTL ended for want of room; more than zero means idempotency.max_keys is too small.", nil, nil)
)

func (idempotencyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- idemMaxKeysDesc
	ch <- idemKeysDesc
	ch <- idemEvictedDesc
}

func (c idempotencyCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.table.Stats(context.Background())
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(idemMaxKeysDesc, prometheus.GaugeValue, float64(st.MaxKeys))
	ch <- prometheus.MustNewConstMetric(idemKeysDesc, prometheus.GaugeValue, float64(st.Keys))
	ch <- prometheus.MustNewConstMetric(idemEvictedDesc, prometheus.CounterValue, float64(st.Evicted))
}

// idempotencyStatus describes the idempotency table, nil when there is none.
func (o *owner) idempotencyStatus() *operator.IdempotencyStatus {
	if o.idem.table == nil {
		return nil
	}
	st, err := o.idem.table.Stats(context.Background())
	if err != nil {
		return nil
	}
	return &operator.IdempotencyStatus{MaxKeys: st.MaxKeys, Keys: st.Keys, Evicted: st.Evicted}
}

func (t *idempotencyTable) close() {
	if t.table != nil {
		_ = t.table.Close()
	}
	if t.file != nil {
		t.file.Close()
	}
}
