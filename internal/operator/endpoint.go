package operator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// Endpoint is one operator request: its method and path, the type of its
// body (In, None for none) and of its answer (Out).
type Endpoint[In, Out any] struct {
	Method string
	Path   string
	// Answers lists the statuses whose body is an Out; empty means 200.
	Answers []int
}

// Accepts reports whether a reply with status code carries an Out.
func (e Endpoint[In, Out]) Accepts(code int) bool {
	if len(e.Answers) == 0 {
		return code == http.StatusOK
	}
	return slices.Contains(e.Answers, code)
}

// String is "METHOD /path".
func (e Endpoint[In, Out]) String() string { return e.Method + " " + e.Path }

// Error is an error answer: the status and the daemon's message. On the
// server side it also carries the cause, for errors.Is.
type Error struct {
	Code    int
	Message string
	cause   error
}

func (e *Error) Error() string { return e.Message }

func (e *Error) Unwrap() error { return e.cause }

// WithStatus makes err answer with status code instead of 500.
func WithStatus(code int, err error) error {
	return &Error{Code: code, Message: err.Error(), cause: err}
}

// statusCoder is an answer that chooses its own status, like Health.
type statusCoder interface{ StatusCode() int }

// Handle registers h for e on mux. The request's JSON body, if any, is
// decoded into In (a bad one answers 400); h may read query parameters from
// r. Its answer goes out as indented JSON, with status 200 unless Out has a
// StatusCode method; its error as {"error": message}, with the status of
// an *Error in its chain, else 500.
func Handle[In, Out any](mux *http.ServeMux, e Endpoint[In, Out], h func(r *http.Request, in In) (Out, error)) {
	mux.HandleFunc(e.String(), func(w http.ResponseWriter, r *http.Request) {
		var in In
		if _, none := any(in).(None); !none && r.ContentLength != 0 {
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				WriteError(w, WithStatus(http.StatusBadRequest, fmt.Errorf("%s: body: %w", e, err)))
				return
			}
		}
		out, err := h(r, in)
		if err != nil {
			WriteError(w, err)
			return
		}
		code := http.StatusOK
		if sc, ok := any(out).(statusCoder); ok {
			code = sc.StatusCode()
		}
		writeJSON(w, code, out)
	})
}

// WriteError writes err as {"error": message} with its status (see Handle).
func WriteError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if e, ok := errors.AsType[*Error](err); ok {
		code = e.Code
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
