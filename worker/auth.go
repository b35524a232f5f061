package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/amexd/amexd/internal/auth"
)

// authentication builds the token check cfg asks for. With authentication
// off it logs the one warning that says so and checks nothing.
func authentication(cfg auth.Config, log *slog.Logger) (echo.MiddlewareFunc, error) {
	if !cfg.Enabled {
		log.Warn("writes are not authenticated; set auth.enabled (see configs/production.yaml)")
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }, nil
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		return nil, fmt.Errorf("worker: authentication: %w", err)
	}
	return requireToken(v, cfg.ProtectReads), nil
}

// protectedRoute reports whether a matched route needs a token: the writes
// always, the data reads when protectReads is set. Health probes, circuit
// status, the OpenAPI document and unmatched paths stay public.
func protectedRoute(method, route string, protectReads bool) bool {
	switch method + " " + route {
	case "POST /events", "POST /addEvent":
		return true
	case "GET /users", "GET /users/:id", "GET /events", "GET /events/:id", "GET /events/user/:id",
		"GET /getUsers", "GET /getEvents", "GET /getEventsByUserId/:id":
		return protectReads
	}
	return false
}

// requireToken answers 401 for a protected route's request without a valid
// bearer token and 403 for one whose token lacks the role, both with a
// WWW-Authenticate challenge (RFC 6750). It never logs or echoes the token.
func requireToken(v *auth.Verifier, protectReads bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if !protectedRoute(req.Method, c.Path(), protectReads) {
				return next(c)
			}
			token, ok := bearerToken(req.Header.Get(echo.HeaderAuthorization))
			h := c.Response().Header()
			if !ok {
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="amexd"`)
				return newError(http.StatusUnauthorized, "unauthorized", "a bearer token is required")
			}
			sub, err := v.Verify(token)
			switch {
			case err == nil:
				c.Set(subjectKey, sub)
				return next(c)
			case errors.Is(err, auth.ErrForbidden):
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="amexd", error="insufficient_scope"`)
				return newError(http.StatusForbidden, "forbidden", "the token does not grant this operation")
			}
			h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="amexd", error="invalid_token"`)
			return newError(http.StatusUnauthorized, "unauthorized", "%s", tokenProblem(err))
		}
	}
}

// bearerToken takes the token from an Authorization header; the scheme is
// case-insensitive.
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// tokenProblem says what is wrong with a token in words fit for the client:
// the kind of problem, not the token or the key.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature is not valid"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token was not issued for this service"
	}
	return "the token is not valid"
}
