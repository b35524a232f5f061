package worker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/catalog"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/upstream"
)

func (a *App) routes() {
	e := a.echo
	e.GET("/users", a.users)
	e.GET("/users/:id", a.user)
	e.GET("/events", a.events)
	e.GET("/events/circuit-status", a.circuitStatus)
	e.GET("/events/user/:id", a.userEvents)
	e.GET("/events/:id", a.event)
	e.POST("/events", a.createEvent)
	e.GET("/healthz", a.healthz)
	e.GET("/readyz", a.readyz)
	e.GET("/openapi.json", a.openAPI)

	// The original API's paths, kept for existing clients (original.go).
	e.GET(pathGetUsers, a.users)
	e.GET(pathGetEvents, a.events)
	e.GET(pathGetEventsByUser, a.userEvents)
	e.POST(pathAddEvent, a.addEventOriginal)
}

// cached writes a catalog answer with its validator and cache status, or
// 304 when the client already holds that version.
func (a *App) cached(c echo.Context, r catalog.Result, err error, notFound string) error {
	if errors.Is(err, catalog.ErrNotFound) {
		return newError(http.StatusNotFound, notFound, "%s", strings.ReplaceAll(notFound, "_", " "))
	}
	if err != nil {
		return err
	}
	// Canonical keys, and shared values where they are constant: every
	// cached read passes here.
	h := c.Response().Header()
	h["Etag"] = []string{r.ETag}
	h["X-Cache"] = cacheStatusHeader(r.Status)
	h["Cache-Control"] = noCacheHeader
	if etagMatches(c.Request().Header.Get("If-None-Match"), r.ETag) {
		return c.NoContent(http.StatusNotModified)
	}
	h[echo.HeaderContentType] = jsonHeader
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, r.Body)
}

// Header values shared by every answer that carries them. Each slice is
// full to capacity, so an Add on one answer reallocates instead of writing
// into the shared array.
var (
	noCacheHeader = []string{"no-cache"}
	jsonHeader    = []string{echo.MIMEApplicationJSON}
	hitHeader     = []string{string(cache.StatusHit)}
	missHeader    = []string{string(cache.StatusMiss)}
	staleHeader   = []string{string(cache.StatusStale)}
)

func cacheStatusHeader(s cache.Status) []string {
	switch s {
	case cache.StatusHit:
		return hitHeader
	case cache.StatusMiss:
		return missHeader
	case cache.StatusStale:
		return staleHeader
	}
	return []string{string(s)}
}

// etagMatches implements If-None-Match's weak comparison over a list.
func etagMatches(header, etag string) bool {
	if header == "" || etag == "" {
		return false
	}
	for candidate := range strings.SplitSeq(header, ",") {
		candidate = strings.TrimPrefix(strings.TrimSpace(candidate), "W/")
		if candidate == "*" || candidate == strings.TrimPrefix(etag, "W/") {
			return true
		}
	}
	return false
}

func (a *App) users(c echo.Context) error {
	r, err := a.cat.Users(c.Request().Context())
	return a.cached(c, r, err, "users_not_found")
}

func (a *App) user(c echo.Context) error {
	id, err := catalog.ParseUserID(c.Param("id"))
	if err != nil {
		return err
	}
	r, err := a.cat.User(c.Request().Context(), id)
	return a.cached(c, r, err, "user_not_found")
}

func (a *App) events(c echo.Context) error {
	r, err := a.cat.Events(c.Request().Context())
	return a.cached(c, r, err, "events_not_found")
}

func (a *App) event(c echo.Context) error {
	id, err := catalog.ParseEventID(c.Param("id"))
	if err != nil {
		return err
	}
	r, err := a.cat.Event(c.Request().Context(), id)
	return a.cached(c, r, err, "event_not_found")
}

func (a *App) userEvents(c echo.Context) error {
	id, err := catalog.ParseUserID(c.Param("id"))
	if err != nil {
		return err
	}
	r, err := a.cat.UserEvents(c.Request().Context(), id)
	return a.cached(c, r, err, "user_not_found")
}

// createEvent is POST /events, the strict contract: 201 with the event's
// record as stored upstream.
func (a *App) createEvent(c echo.Context) error {
	return a.create(c, catalog.DecodeNewEvent, func(ev catalog.Created) (int, []byte) {
		return http.StatusCreated, ev.Record
	})
}

// create reads a JSON create request, decodes it with decode and creates
// the event; render gives the success answer's status and body.
func (a *App) create(c echo.Context, decode func([]byte) (catalog.NewEvent, error), render func(catalog.Created) (int, []byte)) error {
	req := c.Request()
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" && !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		return newError(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json, not %q", ct)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return err
	}
	if err := catalog.CheckUTF8(body); err != nil {
		return err
	}
	in, err := decode(body)
	if err != nil {
		return err
	}
	if key, sent, err := idempotencyKey(req); err != nil {
		return err
	} else if sent {
		return a.createOnce(c, key, body, in, render)
	}
	ev, err := a.cat.CreateEvent(req.Context(), in)
	if err != nil {
		return err
	}
	status, out := encodeAnswer(ev, render)
	c.Response().Header().Set(echo.HeaderLocation, "/events/"+url.PathEscape(ev.Key))
	return c.Blob(status, echo.MIMEApplicationJSON, out)
}

func (a *App) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (a *App) readyz(c echo.Context) error {
	if a.draining.Load() {
		return newError(http.StatusServiceUnavailable, "draining", "this worker is shutting down")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), time.Second)
	defer cancel()
	if err := a.deps.Ready(ctx); err != nil {
		return newError(http.StatusServiceUnavailable, "upstream_unreachable", "the Event API is unreachable: %v", err)
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// circuitStatus answers with every worker's breakers when the worker runs
// under a supervisor, else with this worker's alone, in the same shape.
func (a *App) circuitStatus(c echo.Context) error {
	if a.deps.Cluster != nil {
		st, err := a.deps.Cluster(c.Request().Context())
		if err == nil {
			return c.JSON(http.StatusOK, st)
		}
		a.log.WarnContext(c.Request().Context(), "cluster status unavailable; answering for this worker", "err", err)
	}
	workers := []control.WorkerBreakers{{
		Slot:          a.deps.Slot,
		PID:           a.deps.PID,
		State:         "ready",
		LastHeartbeat: time.Now(),
		Breakers:      BreakerStats(a.deps.Breakers()),
	}}
	return c.JSON(http.StatusOK, control.ClusterStatus{Workers: workers, Summary: control.Summarize(workers)})
}

// BreakerStats converts the client's breaker status to the control
// protocol's vocabulary.
func BreakerStats(in []upstream.BreakerStatus) []control.Breaker {
	out := make([]control.Breaker, len(in))
	for i, b := range in {
		out[i] = control.Breaker{
			Name:             b.Name,
			State:            b.State,
			FailuresInWindow: b.FailuresInWindow,
			Opens:            uint64(b.Opens),
			RetryAfterMs:     b.RetryAfter.Milliseconds(),
		}
	}
	return out
}
