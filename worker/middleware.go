package worker

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/ulule/limiter/v3"

	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/internal/ratelimit"
)

// headerRequestID is X-Request-ID in its canonical form, so that the hot
// path indexes header maps directly instead of canonicalising the name.
const headerRequestID = "X-Request-Id"

// saneRequestID is what an incoming X-Request-ID must look like to be kept:
// short, printable and free of anything a log parser could trip on.
var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:\-]{1,128}$`)

// recoverPanics turns a handler's panic into a logged 500 in the error shape,
// so one bad request cannot take the worker down.
func (a *App) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				a.log.ErrorContext(c.Request().Context(), "handler panicked", "panic", fmt.Sprint(r),
					"request_id", requestID(c), "stack", string(debug.Stack()))
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return next(c)
	}
}

// assignRequestID keeps a sane incoming X-Request-ID or makes one, and
// echoes it on the answer. The answer's header is where the ID lives for
// the rest of the request (see requestID).
func assignRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		in := c.Request().Header[headerRequestID]
		if len(in) > 0 && saneRequestID.MatchString(in[0]) {
			in = in[:1:1]
		} else {
			var buf [16]byte
			in = headerValue(strconv.AppendUint(buf[:0], rand.Uint64(), 16))
		}
		c.Response().Header()[headerRequestID] = in
		return next(c)
	}
}

func requestID(c echo.Context) string {
	if v := c.Response().Header()[headerRequestID]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// accessLog records every request's metrics and, when the access log is
// on, its line. It logs no header values, so Authorization and Cookie
// never reach the logs.
func (a *App) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		a.inflight.Add(1)
		defer a.inflight.Add(-1)
		err := next(c)
		if err != nil {
			a.echo.HTTPErrorHandler(err, c)
		}
		d := time.Since(start)
		req, res := c.Request(), c.Response()
		if req.RemoteAddr == probeAddr {
			return nil
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		if rs := a.series[routeMethod{route, req.Method}]; rs != nil {
			rs.Request(res.Status, d)
		} else {
			a.metrics.Request(route, req.Method, res.Status, d)
		}
		a.requests.Add(1)
		a.observe(start.Add(d), d, res.Status)
		if a.access != nil {
			r := logging.Request{
				Time:     start,
				ID:       requestID(c),
				Method:   req.Method,
				Path:     req.URL.Path,
				Status:   res.Status,
				Bytes:    res.Size,
				Duration: d,
				IP:       c.RealIP(),
			}
			if v := res.Header()["X-Cache"]; len(v) > 0 {
				r.Cache = v[0]
			}
			a.access.Log(&r)
		}
		return nil
	}
}

// securityHeaders sets the headers of the Node backend's helmet that
// apply to a JSON API, plus HSTS when the worker serves TLS. helmet's
// Cross-Origin-Opener-Policy is left out: it governs the windows a
// document opens, and no answer here is a document that opens one; every
// header costs each answer its share of net/http's clone, sort and write.
func securityHeaders(tls bool) echo.MiddlewareFunc {
	headers := [][2]string{
		{"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"},
		{"X-Content-Type-Options", "nosniff"},
		{"X-Frame-Options", "DENY"},
		{"Referrer-Policy", "no-referrer"},
		{"Cross-Origin-Resource-Policy", "same-origin"},
	}
	if tls {
		headers = append(headers, [2]string{"Strict-Transport-Security", "max-age=31536000; includeSubDomains"})
	}
	// The value slices are shared by every response: full to capacity, so
	// an Add on one response reallocates instead of writing into them.
	values := make([][]string, len(headers))
	for i, kv := range headers {
		values[i] = []string{kv[1]}[:1:1]
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			for i, kv := range headers {
				h[kv[0]] = values[i]
			}
			return next(c)
		}
	}
}

// limitBody refuses a declared body over max at once; handlers also read
// through http.MaxBytesReader for bodies of unknown length.
func limitBody(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.ContentLength > limit {
				return newError(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes", limit)
			}
			if req.Body != nil && req.Body != http.NoBody {
				req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
			}
			return next(c)
		}
	}
}

// rateLimit is one limit: a name (for metrics), a limiter and which
// requests it counts.
type rateLimit struct {
	name    string
	limiter *limiter.Limiter
	applies func(c echo.Context) bool
}

// limitKeys is what a limit's answers reuse: the prefix of its store keys
// and its header values, formatted once.
type limitKeys struct {
	prefix    string
	rate      int64
	limit     []string
	remaining numberValues
	reset     numberValues
}

// limitRate counts every request but health probes against each limit that
// applies, per client (an IPv4 address, or an IPv6 prefix of v6Bits), and
// answers 429 past any of them. The headers describe the tightest limit.
func (a *App) limitRate(limits []rateLimit, v6Bits int) echo.MiddlewareFunc {
	keys := make([]limitKeys, len(limits))
	for i, l := range limits {
		r := l.limiter.Rate
		keys[i] = limitKeys{
			prefix:    l.name + "|",
			rate:      r.Limit,
			limit:     []string{strconv.FormatInt(r.Limit, 10)},
			remaining: newNumberValues(r.Limit + 1),
			reset:     newNumberValues(int64(r.Period/time.Second) + 1),
		}
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			switch c.Path() {
			case "/healthz", "/readyz":
				return next(c)
			}
			client := ratelimit.ClientKey(c.RealIP(), v6Bits)
			var (
				tightest limiter.Context
				which    = -1
				hit      string
			)
			for i, l := range limits {
				if !l.applies(c) {
					continue
				}
				lc, err := l.limiter.Get(c.Request().Context(), keys[i].prefix+client)
				if err != nil {
					// The store answers by its own failure policy; an error
					// here is unexpected and must not cost the client a 500.
					a.log.WarnContext(c.Request().Context(), "rate limit store failed", "limit", l.name, "err", err)
					continue
				}
				if which < 0 || lc.Remaining < tightest.Remaining || (lc.Reached && !tightest.Reached) {
					tightest, which = lc, i
				}
				if lc.Reached && hit == "" {
					hit = l.name
				}
			}
			if which < 0 {
				return next(c)
			}
			h := c.Response().Header()
			reset := max(0, tightest.Reset-time.Now().Unix())
			// Canonical keys and values formatted once: this runs on every
			// request.
			k := &keys[which]
			// The store may answer for a smaller limit than the configured
			// one (this machine's share while Redis fails).
			if tightest.Limit == k.rate {
				h["X-Ratelimit-Limit"] = k.limit
			} else {
				h["X-Ratelimit-Limit"] = []string{strconv.FormatInt(tightest.Limit, 10)}
			}
			h["X-Ratelimit-Remaining"] = k.remaining.header(tightest.Remaining)
			h["X-Ratelimit-Reset"] = k.reset.header(reset)
			if hit != "" {
				a.metrics.Rejected(hit)
				a.rejections.Add(1)
				return &apiError{
					Status:     http.StatusTooManyRequests,
					Code:       "rate_limited",
					Message:    fmt.Sprintf("more than %d requests in the window; retry later", tightest.Limit),
					RetryAfter: time.Duration(max(reset, 1)) * time.Second,
				}
			}
			return next(c)
		}
	}
}

// varyOrigin is the Vary value of every answer when CORS is on, shared:
// full to capacity, so an Add on one answer reallocates instead of
// writing into it.
var varyOrigin = []string{echo.HeaderOrigin}

// sameOriginOrCORS runs cors only for the requests it has work for: a
// preflight or a request naming its Origin. Any other request (every
// non-browser client, and a browser's same-origin GET) gets only what cors
// would have set on it, Vary: Origin, without cors's per-request
// header parsing.
func sameOriginOrCORS(cors echo.MiddlewareFunc) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		withCORS := cors(next)
		return func(c echo.Context) error {
			req := c.Request()
			if req.Method == http.MethodOptions || len(req.Header[echo.HeaderOrigin]) > 0 {
				return withCORS(c)
			}
			h := c.Response().Header()
			if _, ok := h[echo.HeaderVary]; ok {
				h.Add(echo.HeaderVary, echo.HeaderOrigin)
			} else {
				h[echo.HeaderVary] = varyOrigin
			}
			return next(c)
		}
	}
}
