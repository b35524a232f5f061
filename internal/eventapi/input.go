package eventapi

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// addEventBody is addEvent's request as the original mock took it: id and
// userId each a number or a string, any other field ignored.
type addEventBody struct {
	ID      json.RawMessage `json:"id"`
	Name    string          `json:"name"`
	UserID  json.RawMessage `json:"userId"`
	Details string          `json:"details"`
}

// event converts the body to an Event. An id of amexd's form ("event-N")
// is kept, and so is a positive integer N, given as a number or a string
// of digits (as the original service's Date.now()), which becomes
// "event-N"; any other id is the caller's own and is replaced by a fresh
// one, so that IDs stay unique. userId may be an integer or a string of
// digits.
func (b addEventBody) event() (Event, error) {
	id, err := eventIDFrom(b.ID)
	if err != nil {
		return Event{}, err
	}
	user, err := userIDFrom(b.UserID)
	if err != nil {
		return Event{}, err
	}
	return Event{ID: id, Name: b.Name, UserID: user, Details: b.Details}, nil
}

// eventIDFrom returns the stored form of a supplied id, or "" for a fresh one.
func eventIDFrom(raw json.RawMessage) (string, error) {
	text, isString, err := scalar(raw, "id")
	switch {
	case err != nil || text == "":
		return "", err
	case isString && strings.HasPrefix(text, eventIDPrefix):
		return text, nil // checked by create, which refuses a bad N
	}
	if n, ok := parsePositive(text); ok {
		return eventIDPrefix + strconv.FormatInt(n, 10), nil
	}
	return "", nil
}

// userIDFrom reads userId, a JSON integer or a string of digits; absent is
// 0, which create refuses.
func userIDFrom(raw json.RawMessage) (int, error) {
	text, _, err := scalar(raw, "userId")
	if err != nil || text == "" {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(text))
	if err != nil {
		return 0, fmt.Errorf("userId must be an integer or a string of digits, got %s", raw)
	}
	return n, nil
}

// scalar returns the text of a JSON string or number, "" when absent or
// null, and an error for any other value.
func scalar(raw json.RawMessage, field string) (text string, isString bool, err error) {
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", false, nil
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &text); err != nil {
			return "", false, fmt.Errorf("%s: %w", field, err)
		}
		return text, true, nil
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		return string(raw), false, nil
	}
	return "", false, fmt.Errorf("%s must be a number or a string, got %s", field, raw)
}
