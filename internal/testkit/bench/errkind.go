package bench

import "strings"

// ErrorKind names a class of transport failure, as reported in the
// "errors" columns. HTTP error statuses are not errors here: they are
// counted by status code.
type ErrorKind string

// The error kinds a report distinguishes.
const (
	ErrRefused ErrorKind = "refused"
	ErrReset   ErrorKind = "reset"
	ErrTimeout ErrorKind = "timeout"
	ErrOther   ErrorKind = "other"
)

// AllErrorKinds lists every kind in report order.
func AllErrorKinds() []ErrorKind {
	return []ErrorKind{ErrRefused, ErrReset, ErrTimeout, ErrOther}
}

// Classify maps a vegeta result's error text to its kind. vegeta keeps only
// the error's text, so matching on the wording of net and net/http errors is
// the one way left. An EOF counts as a reset: the server closed a connection
// that had a request in flight.
func Classify(msg string) ErrorKind {
	switch {
	case strings.Contains(msg, "connection refused"):
		return ErrRefused
	case strings.Contains(msg, "connection reset"),
		strings.Contains(msg, "broken pipe"),
		strings.HasSuffix(msg, "EOF"):
		return ErrReset
	case strings.Contains(msg, "Timeout exceeded"),
		strings.Contains(msg, "deadline exceeded"),
		strings.Contains(msg, "i/o timeout"):
		return ErrTimeout
	default:
		return ErrOther
	}
}
