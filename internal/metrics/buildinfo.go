package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amexd/amexd/internal/version"
)

// BuildInfo is amexd_build_info, always 1, labelled with the running
// build's version, commit and Go version, so a dashboard shows which build
// serves and when an upgrade changed it.
func BuildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "amexd_build_info",
		Help: "The running build: version, commit and Go version; always 1.",
	}, []string{"version", "commit", "goversion"})
	g.WithLabelValues(version.Version, version.Revision(), runtime.Version()).Set(1)
	return g
}
