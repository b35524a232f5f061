package worker

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/amexd/amexd/internal/catalog"
)

// The original API's paths, kept so that its clients work unchanged.
const (
	pathGetUsers        = "/getUsers"
	pathGetEvents       = "/getEvents"
	pathGetEventsByUser = "/getEventsByUserId/:id"
	pathAddEvent        = "/addEvent"
)

// isOriginalPath reports whether route (Echo's matched route) is one of the
// original API's, whose answers follow the original's conventions.
func isOriginalPath(route string) bool {
	switch route {
	case pathGetUsers, pathGetEvents, pathGetEventsByUser, pathAddEvent:
		return true
	}
	return false
}

// originalError is an error answer on an original path: the usual error
// object, with the original's "success": false and top-level "message", so
// that the original's clients read it as the failure it is.
type originalError struct {
	Success bool        `json:"success"`
	Error   errorDetail `json:"error"`
	Message string      `json:"message"`
}

// addEventOriginal is POST /addEvent as the original service answered it:
// 200 with {"success": true}, here with the stored record's fields beside
// it so that its clients can read the event's id. It takes the original's
// lenient body (userId as a number or a decimal string, extra fields
// ignored) but never the client's id, and refuses an unknown user as POST
// /events does.
func (a *App) addEventOriginal(c echo.Context) error {
	return a.create(c, catalog.DecodeOriginalEvent, func(ev catalog.Created) (int, []byte) {
		return http.StatusOK, withSuccess(ev.Record)
	})
}

// withSuccess puts "success": true first in a JSON object.
func withSuccess(record []byte) []byte {
	const prefix = `{"success":true`
	if len(record) <= 2 {
		return []byte(prefix + "}")
	}
	out := make([]byte, 0, len(prefix)+len(record))
	out = append(out, prefix...)
	out = append(out, ',')
	return append(out, record[1:]...)
}
