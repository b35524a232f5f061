package worker

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/amexd/amexd/internal/catalog"
	"github.com/amexd/amexd/internal/idempotency"
)

// Idempotency-Key support (IETF draft-ietf-httpapi-idempotency-key-header)
// for the create routes.
const (
	headerIdempotencyKey = "Idempotency-Key"
	// headerReplayed marks an answer replayed from an earlier request.
	headerReplayed    = "Idempotent-Replayed"
	maxIdempotencyKey = 255
	// settleTimeout bounds recording an outcome after the client left.
	settleTimeout = 5 * time.Second
)

// subjectKey is where the authentication middleware leaves the token's
// subject, which scopes Idempotency-Keys to their client.
const subjectKey = "auth.subject"

// idempotencyKey returns the request's Idempotency-Key and whether it sent
// one. The draft makes the value a structured-field string ("…"); the bare
// form most clients send is taken too.
func idempotencyKey(req *http.Request) (string, bool, error) {
	values, sent := req.Header[headerIdempotencyKey]
	if !sent {
		return "", false, nil
	}
	key := strings.TrimSpace(values[0])
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	ok := len(values) == 1 && key != "" && len(key) <= maxIdempotencyKey
	for i := 0; ok && i < len(key); i++ {
		ok = key[i] > ' ' && key[i] < 0x7f && key[i] != '"' && key[i] != '\\'
	}
	if !ok {
		return "", true, newError(http.StatusBadRequest, "invalid_idempotency_key",
			"Idempotency-Key must be one value of 1 to %d visible ASCII characters", maxIdempotencyKey)
	}
	return key, true, nil
}

// createOnce creates the event of a request that carries an
// Idempotency-Key: its first request creates, a retry with the same body
// gets the first answer without a second upstream call, whichever worker
// or machine it reaches. A retry while the first is in flight gets 409; the
// key with another body, 422. A request refused before the write (a bad
// body, an unknown user) does not keep the key; one that failed upstream
// keeps its event ID, so that its retry is replayed upstream rather than
// duplicated.
func (a *App) createOnce(c echo.Context, key string, body []byte, in catalog.NewEvent, render func(catalog.Created) (int, []byte)) error {
	if err := in.Validate(); err != nil {
		return err
	}
	req := c.Request()
	ctx := req.Context()
	scoped, _ := c.Get(subjectKey).(string)
	scoped += "\x00" + key
	fp := idempotency.FingerprintOf([]byte(req.Method), []byte(c.Path()), body)
	fresh := a.cat.NewEventID()
	claim, err := a.idem.Begin(ctx, scoped, fp, fresh)
	if err != nil {
		a.log.WarnContext(ctx, "idempotency store unavailable", "err", err, "request_id", requestID(c))
		return &apiError{Status: http.StatusServiceUnavailable, Code: "idempotency_unavailable",
			Message: "the Idempotency-Key store cannot take this request now; retry later", RetryAfter: time.Second}
	}
	switch claim.Outcome {
	case idempotency.Replay:
		h := c.Response().Header()
		h.Set(echo.HeaderLocation, "/events/"+url.PathEscape(claim.Ref))
		h.Set(headerReplayed, "true")
		return c.Blob(claim.Answer.Status, echo.MIMEApplicationJSON, claim.Answer.Body)
	case idempotency.InFlight:
		return &apiError{Status: http.StatusConflict, Code: "idempotency_key_in_use",
			Message: "a request with this Idempotency-Key is still in progress; retry once it has finished", RetryAfter: time.Second}
	case idempotency.Mismatch:
		return newError(http.StatusUnprocessableEntity, "idempotency_key_reused",
			"this Idempotency-Key was already used for a different request")
	}
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	create := a.cat.CreateEventAs
	if claim.Ref != fresh {
		create = a.cat.CreateEventAgain // an earlier attempt may have stored it
	}
	ev, err := create(ctx, in, claim.Ref)
	if err != nil {
		retry := toAPIError(err).Status >= http.StatusInternalServerError
		if aerr := a.idem.Abandon(settle, scoped, claim, retry); aerr != nil {
			a.log.WarnContext(ctx, "release Idempotency-Key", "err", aerr, "request_id", requestID(c))
		}
		return err
	}
	status, out := encodeAnswer(ev, render)
	if err := a.idem.Complete(settle, scoped, claim, idempotency.Answer{Status: status, Body: out}); err != nil {
		// The event exists; a retry now runs again under its ID, which
		// the upstream replays.
		a.log.WarnContext(ctx, "record Idempotency-Key answer", "err", err, "event", ev.Key, "request_id", requestID(c))
	}
	c.Response().Header().Set(echo.HeaderLocation, "/events/"+url.PathEscape(ev.Key))
	return c.Blob(status, echo.MIMEApplicationJSON, out)
}

// encodeAnswer renders a created event's answer as the bytes sent, which
// are also those a replay sends.
func encodeAnswer(ev catalog.Created, render func(catalog.Created) (int, []byte)) (int, []byte) {
	status, body := render(ev)
	return status, append(body[:len(body):len(body)], '\n')
}
