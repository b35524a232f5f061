package catalog

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// originalEvent is a create request of the original API: the fields
// amexd reads, each kept raw so that its type can be checked by hand.
type originalEvent struct {
	Name    json.RawMessage `json:"name"`
	UserID  json.RawMessage `json:"userId"`
	Details json.RawMessage `json:"details"`
}

// DecodeOriginalEvent parses a create request of the original API
// (POST /addEvent) as leniently as the original service did: userId may
// be a number or a decimal string ("3"), and fields other than name, userId
// and details are accepted and ignored, a client-chosen id among them (the
// event's ID is always amexd's). The result is not yet validated.
func DecodeOriginalEvent(body []byte) (NewEvent, error) {
	var raw originalEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		if _, ok := err.(*json.UnmarshalTypeError); ok {
			return NewEvent{}, invalid("malformed_json", "", "request body must be a JSON object")
		}
		return NewEvent{}, invalid("malformed_json", "", "request body is not a JSON object: %v", err)
	}
	if dec.More() {
		return NewEvent{}, invalid("malformed_json", "", "request body holds more than one JSON value")
	}
	var ev NewEvent
	if err := optionalString(raw.Name, "name", &ev.Name); err != nil {
		return NewEvent{}, err
	}
	if err := optionalString(raw.Details, "details", &ev.Details); err != nil {
		return NewEvent{}, err
	}
	id, err := lenientUserID(raw.UserID)
	if err != nil {
		return NewEvent{}, err
	}
	ev.UserID = id
	return ev, nil
}

// optionalString decodes a string field that may be absent or null.
func optionalString(raw json.RawMessage, field string, dst *string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return invalid("invalid_field", field, "field %q must be a string, not %s", field, kindOf(raw))
	}
	return nil
}

// lenientUserID reads userId as a JSON integer or a string holding a
// decimal integer; absent or null is 0, which Validate refuses.
func lenientUserID(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, invalid("invalid_field", "userId", "field \"userId\" is not a valid JSON string")
		}
		text = strings.TrimSpace(text)
	} else if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, invalid("invalid_field", "userId", "field \"userId\" must be an integer or a string of digits, not %s", kindOf(raw))
	}
	n, err := strconv.ParseInt(text, 10, 32)
	if err != nil {
		return 0, invalid("invalid_field", "userId", "field \"userId\" must be an integer or a string of digits, not %s", truncate(string(raw)))
	}
	return int(n), nil
}

// kindOf names the kind of a raw JSON value, with its article.
func kindOf(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "true or false"
	}
	return "a number"
}
