package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/amexd/amexd/internal/catalog"
	"github.com/amexd/amexd/internal/upstream"
)

// apiError is an answer in the one error shape every route uses.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// toAPIError maps an error from a handler, Echo or the catalog to the answer
// the client gets. Only an error nothing here recognises is a 500.
func toAPIError(err error) *apiError {
	var (
		ae      *apiError
		he      *echo.HTTPError
		inv     *catalog.InvalidError
		unavail *upstream.UnavailableError
		maxErr  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &inv):
		status := http.StatusBadRequest
		if inv.Unprocessable {
			status = http.StatusUnprocessableEntity
		}
		return &apiError{Status: status, Code: inv.Code, Message: inv.Message}
	case errors.As(err, &maxErr):
		return newError(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes", maxErr.Limit)
	case errors.As(err, &unavail):
		code, msg := "upstream_unavailable", fmt.Sprintf("the Event API is unavailable (%s)", unavail.Op)
		if errors.Is(err, upstream.ErrBreakerOpen) {
			code, msg = "circuit_open", fmt.Sprintf("the circuit for %s is open; retry later", unavail.Op)
		}
		return &apiError{Status: http.StatusServiceUnavailable, Code: code, Message: msg, RetryAfter: unavail.RetryAfter}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Code: "upstream_timeout", Message: "the Event API did not answer in time"}
	case errors.As(err, &he):
		return fromEcho(he)
	}
	return newError(http.StatusInternalServerError, "internal", "internal error")
}

func fromEcho(he *echo.HTTPError) *apiError {
	msg := http.StatusText(he.Code)
	if m, ok := he.Message.(string); ok && m != "" {
		msg = m
	}
	code := map[int]string{
		http.StatusNotFound:              "not_found",
		http.StatusMethodNotAllowed:      "method_not_allowed",
		http.StatusRequestEntityTooLarge: "body_too_large",
		http.StatusBadRequest:            "bad_request",
		http.StatusUnsupportedMediaType:  "unsupported_media_type",
		http.StatusTooManyRequests:       "rate_limited",
		http.StatusServiceUnavailable:    "unavailable",
	}[he.Code]
	if code == "" {
		code = "http_" + strconv.Itoa(he.Code)
	}
	return &apiError{Status: he.Code, Code: code, Message: msg}
}

// retryAfterSeconds rounds a wait up to whole seconds, at least one, as
// Retry-After requires.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// statusClientClosedRequest is the status recorded for a request whose client
// went away before its answer was ready; nginx's 499, outside the 5xx that
// count against the service.
const statusClientClosedRequest = 499

// clientGone reports whether err is the request's own context ending: the
// client closed the connection (or half-closed it) before the answer.
func clientGone(c echo.Context, err error) bool {
	return errors.Is(err, context.Canceled) && errors.Is(c.Request().Context().Err(), context.Canceled)
}

// handleError is Echo's error handler: every error becomes the JSON shape
// with the request ID; a HEAD request gets the status alone.
func (a *App) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	if clientGone(c, err) {
		a.log.LogAttrs(c.Request().Context(), slog.LevelInfo, "client disconnected",
			slog.String("request_id", requestID(c)), slog.String("path", c.Request().URL.Path),
			slog.Int("status", statusClientClosedRequest))
		c.Response().WriteHeader(statusClientClosedRequest)
		return
	}
	ae := toAPIError(err)
	// Routing errors have the one shape on every path; the others follow
	// an original path's conventions there.
	original := isOriginalPath(c.Path())
	switch req := c.Request(); ae.Code {
	case "not_found":
		ae.Message = fmt.Sprintf("no route for %s %s", req.Method, req.URL.Path)
		original = false
	case "method_not_allowed":
		ae.Message = fmt.Sprintf("%s is not allowed on %s", req.Method, req.URL.Path)
		original = false
	}
	if ae.Status >= 500 && ae.Code == "internal" {
		a.log.ErrorContext(c.Request().Context(), "request failed", "err", err,
			"request_id", requestID(c), "path", c.Request().URL.Path)
	}
	if ae.RetryAfter > 0 || ae.Status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", retryAfterSeconds(ae.RetryAfter))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	detail := errorDetail{Code: ae.Code, Message: ae.Message, RequestID: requestID(c)}
	if original {
		_ = c.JSON(ae.Status, originalError{Error: detail, Message: ae.Message})
		return
	}
	_ = c.JSON(ae.Status, errorBody{Error: detail})
}
