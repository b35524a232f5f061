// Package worker is amexd's HTTP layer: the Echo application every worker
// process serves (routes, middleware, handlers, errors, the OpenAPI
// document). The process around it is worker/process; business logic lives
// in internal/catalog.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/ulule/limiter/v3"

	"github.com/amexd/amexd/internal/catalog"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/internal/metrics"
	"github.com/amexd/amexd/internal/upstream"
)

// Deps are what the application serves from. Catalog, Limiter, Idempotency
// and Metrics are required.
type Deps struct {
	Catalog *catalog.Catalog
	// Limiter stores the rate-limit counters.
	Limiter limiter.Store
	// Idempotency keeps the answers of writes sent with an Idempotency-Key.
	Idempotency idempotency.Store
	Metrics     *metrics.Worker
	// Breakers reports this worker's circuit breakers.
	Breakers func() []upstream.BreakerStatus
	// Cluster reports every worker's breakers; nil outside a supervisor.
	Cluster func(ctx context.Context) (control.ClusterStatus, error)
	// Ready checks that the upstream is reachable, for /readyz.
	Ready func(ctx context.Context) error
	Log   *slog.Logger
	// Access receives one line per answered request; nil writes none.
	Access *logging.AccessLog
	// Slot and PID identify this worker in circuit status answers.
	Slot, PID int
}

// App is one worker's HTTP application.
type App struct {
	echo *echo.Echo
	// chain is the middleware composed once around the routed handler, so
	// a request does not rebuild it (Echo's own ServeHTTP does, at one
	// allocation per middleware).
	chain      echo.HandlerFunc
	deps       Deps
	cat        *catalog.Catalog
	idem       idempotency.Store
	metrics    *metrics.Worker
	log        *slog.Logger
	access     *logging.AccessLog
	draining   atomic.Bool
	requests   atomic.Uint64
	rejections atomic.Uint64
	inflight   atomic.Int64
	// series are each route's request series, resolved once (read-only
	// after New).
	series map[routeMethod]*metrics.Route
	// latency and serverErrors are the per-worker figures (requeststats.go).
	latency      metrics.LatencyWindow
	serverErrors atomic.Uint64
}

// New builds the application for cfg.
func New(cfg config.Config, deps Deps) (*App, error) {
	if deps.Catalog == nil || deps.Limiter == nil || deps.Idempotency == nil || deps.Metrics == nil {
		return nil, fmt.Errorf("worker: Catalog, Limiter, Idempotency and Metrics are required")
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Breakers == nil {
		deps.Breakers = func() []upstream.BreakerStatus { return nil }
	}
	if deps.Ready == nil {
		deps.Ready = func(context.Context) error { return nil }
	}
	a := &App{
		echo:    echo.New(),
		deps:    deps,
		cat:     deps.Catalog,
		idem:    deps.Idempotency,
		metrics: deps.Metrics,
		log:     deps.Log,
		access:  deps.Access,
	}
	e := a.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = a.handleError
	ipx, err := ipExtractor(cfg.RateLimit.TrustedProxies)
	if err != nil {
		return nil, err
	}
	e.IPExtractor = ipx

	limits, err := buildLimits(cfg, deps.Limiter)
	if err != nil {
		return nil, err
	}
	// The order is the order a request meets them; add one to the list.
	mws := []echo.MiddlewareFunc{
		a.closeWhenDraining,
		assignRequestID,
		a.accessLog,
		a.recoverPanics,
		securityHeaders(cfg.TLS.Enabled()),
	}
	if len(cfg.CORS.AllowOrigins) > 0 {
		mws = append(mws, sameOriginOrCORS(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:     cfg.CORS.AllowOrigins,
			AllowMethods:     cfg.CORS.AllowMethods,
			AllowHeaders:     cfg.CORS.AllowHeaders,
			AllowCredentials: cfg.CORS.AllowCredentials,
			MaxAge:           cfg.CORS.MaxAge,
			ExposeHeaders: []string{"X-Request-ID", "X-Cache", "ETag", "Retry-After", "Location", "WWW-Authenticate", "Idempotent-Replayed",
				"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"},
		})))
	}
	authn, err := authentication(cfg.Auth, deps.Log)
	if err != nil {
		return nil, err
	}
	// Rate limiting comes first so that guessing tokens costs quota.
	mws = append(mws, limitBody(cfg.HTTP.MaxBodyBytes), a.limitRate(limits, cfg.RateLimit.IPv6Prefix), authn)
	a.chain = compose(routed, mws)
	a.routes()
	a.series = make(map[routeMethod]*metrics.Route)
	for _, r := range e.Routes() {
		a.series[routeMethod{r.Path, r.Method}] = deps.Metrics.Route(r.Path, r.Method)
	}
	return a, nil
}

// routeMethod is a route's path, as Echo matched it, and a method.
type routeMethod struct{ route, method string }

// Handler is the application as an http.Handler.
func (a *App) Handler() http.Handler { return a }

// ServeHTTP routes the request and runs it through the composed chain: what
// Echo's ServeHTTP does, without composing the chain again per request.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := a.echo.AcquireContext()
	c.Reset(r, w)
	a.echo.Router().Find(r.Method, echo.GetPath(r), c)
	if err := a.chain(c); err != nil {
		a.echo.HTTPErrorHandler(err, c)
	}
	a.echo.ReleaseContext(c)
}

// routed runs the handler the router chose: a route's, or Echo's not-found
// or method-not-allowed handler.
func routed(c echo.Context) error { return c.Handler()(c) }

// compose wraps h in mws, the first outermost.
func compose(h echo.HandlerFunc, mws []echo.MiddlewareFunc) echo.HandlerFunc {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Drain marks the application as going away: /readyz answers 503 and every
// answer closes its connection from now on.
func (a *App) Drain() { a.draining.Store(true) }

// closeWhenDraining asks the client to open a new connection, which the
// kernel gives to another worker, once this one is draining.
func (a *App) closeWhenDraining(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.draining.Load() {
			c.Response().Header().Set("Connection", "close")
		}
		return next(c)
	}
}

// Requests is the number of requests answered so far.
func (a *App) Requests() uint64 { return a.requests.Load() }

// Inflight is the number of requests being served now.
func (a *App) Inflight() int64 { return a.inflight.Load() }

// Rejections is the number of requests refused by the rate limiter.
func (a *App) Rejections() uint64 { return a.rejections.Load() }

func ipExtractor(trusted []string) (echo.IPExtractor, error) {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect(), nil
	}
	var opts []echo.TrustOption
	// Only the configured proxies are trusted; Echo would otherwise trust
	// loopback and private ranges by default.
	opts = append(opts, echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false))
	for _, cidr := range trusted {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.trusted_proxies: %w", err)
		}
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...), nil
}

func buildLimits(cfg config.Config, store limiter.Store) ([]rateLimit, error) {
	global, err := limiter.NewRateFromFormatted(cfg.RateLimit.Rate)
	if err != nil {
		return nil, fmt.Errorf("ratelimit.rate: %w", err)
	}
	limits := []rateLimit{{
		name:    "global",
		limiter: limiter.New(store, global),
		applies: func(echo.Context) bool { return true },
	}}
	for _, r := range cfg.RateLimit.Routes {
		rate, err := limiter.NewRateFromFormatted(r.Rate)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.routes %s %s: %w", r.Method, r.Path, err)
		}
		method, path := strings.ToUpper(r.Method), r.Path
		limits = append(limits, rateLimit{
			name:    method + " " + path,
			limiter: limiter.New(store, rate),
			applies: func(c echo.Context) bool { return c.Request().Method == method && c.Path() == path },
		})
	}
	return limits, nil
}
