package catalog

import (
	"errors"
	"testing"
)

func TestDecodeOriginalEvent(t *testing.T) {
	for _, tc := range []struct {
		body    string
		want    NewEvent
		code    string // "" = decodes and validates
		field   string
		message string // checked when set
	}{
		{body: `{"name":"hello","userId":"3"}`, want: NewEvent{Name: "hello", UserID: 3}},
		{body: "{\n    \"name\": \"hello\",\n    \"userId\": \"3\"\n}", want: NewEvent{Name: "hello", UserID: 3}},
		{body: `{"name":"hello","userId":3}`, want: NewEvent{Name: "hello", UserID: 3}},
		{body: `{"name":"hello","userId":" 3 "}`, want: NewEvent{Name: "hello", UserID: 3}},
		{body: `{"id":1733000000000,"name":"x","userId":"3","venue":{"a":1}}`, want: NewEvent{Name: "x", UserID: 3}},
		{body: `{"id":"event-1","name":"x","userId":2,"details":"kept"}`, want: NewEvent{Name: "x", UserID: 2, Details: "kept"}},
		{body: `{"name":"x","userId":"three"}`, code: "invalid_field", field: "userId"},
		{body: `{"name":"x","userId":1.5}`, code: "invalid_field", field: "userId"},
		{body: `{"name":"x","userId":true}`, code: "invalid_field", field: "userId",
			message: `field "userId" must be an integer or a string of digits, not true or false`},
		{body: `{"name":"x","userId":"0"}`, code: "invalid_field", field: "userId"},
		{body: `{"name":"x"}`, code: "invalid_field", field: "userId"},
		{body: `{"name":5,"userId":1}`, code: "invalid_field", field: "name", message: `field "name" must be a string, not a number`},
		{body: `{"userId":1}`, code: "invalid_field", field: "name"},
		{body: `{"name":"x","userId":1,"details":[]}`, code: "invalid_field", field: "details"},
		{body: `{"name":`, code: "malformed_json"},
		{body: `[1]`, code: "malformed_json"},
		{body: `{"name":"x","userId":1} {}`, code: "malformed_json"},
	} {
		ev, err := DecodeOriginalEvent([]byte(tc.body))
		if err == nil {
			err = ev.Validate()
		}
		var inv *InvalidError
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.body, err)
		case tc.code == "" && ev != tc.want:
			t.Errorf("%s: decoded %+v, want %+v", tc.body, ev, tc.want)
		case tc.code == "":
		case !errors.As(err, &inv):
			t.Errorf("%s: error %v, want *InvalidError %s", tc.body, err, tc.code)
		case inv.Code != tc.code || inv.Field != tc.field:
			t.Errorf("%s: %s/%s (%s), want %s/%s", tc.body, inv.Code, inv.Field, inv.Message, tc.code, tc.field)
		case tc.message != "" && inv.Message != tc.message:
			t.Errorf("%s: message %q, want %q", tc.body, inv.Message, tc.message)
		}
	}
}

// TestTypeErrorsReadAsEnglish: a wrong type is named as a person would.
func TestTypeErrorsReadAsEnglish(t *testing.T) {
	for body, want := range map[string]string{
		`{"name":"x","userId":"1"}`:            `field "userId" must be an integer, not a string`,
		`{"name":"x","userId":1.5}`:            `field "userId" must be an integer, not 1.5`,
		`{"name":"x","userId":true}`:           `field "userId" must be an integer, not true or false`,
		`{"name":["x"],"userId":1}`:            `field "name" must be a string, not an array`,
		`{"name":"x","userId":1,"details":{}}`: `field "details" must be a string, not an object`,
	} {
		_, err := DecodeNewEvent([]byte(body))
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Message != want {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
