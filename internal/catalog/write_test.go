package catalog

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeAndValidate(t *testing.T) {
	for _, tc := range []struct {
		body  string
		code  string // "" = valid
		field string
	}{
		{`{"name":"Launch","userId":1}`, "", ""},
		{`{"name":"  Launch  ","userId":1,"details":"d"}`, "", ""},
		{`{"name":"` + strings.Repeat("é", MaxNameLen) + `","userId":1}`, "", ""},
		{`{"name":"` + strings.Repeat("a", MaxNameLen+1) + `","userId":1}`, "invalid_field", "name"},
		{`{"name":"   ","userId":1}`, "invalid_field", "name"},
		{`{"userId":1}`, "invalid_field", "name"},
		{`{"name":"x"}`, "invalid_field", "userId"},
		{`{"name":"x","userId":0}`, "invalid_field", "userId"},
		{`{"name":"x","userId":-3}`, "invalid_field", "userId"},
		{`{"name":"x","userId":"1"}`, "invalid_field", "userId"},
		{`{"name":"x","userId":1.5}`, "invalid_field", "userId"},
		{`{"name":1,"userId":1}`, "invalid_field", "name"},
		{`{"name":"x","userId":1,"admin":true}`, "unknown_field", "admin"},
		{`{"name":"x","userId":1,"details":"` + strings.Repeat("d", MaxDetailsLen+1) + `"}`, "invalid_field", "details"},
		{`{"name":"x","userId":1}{"name":"y","userId":1}`, "malformed_json", ""},
		{`{"name":`, "malformed_json", ""},
		{``, "malformed_json", ""},
		{`[1,2]`, "malformed_json", ""},
		{`null`, "invalid_field", "name"},
		{`"text"`, "malformed_json", ""},
	} {
		ev, err := DecodeNewEvent([]byte(tc.body))
		if err == nil {
			err = ev.Validate()
		}
		var inv *InvalidError
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%.60s: unexpected error %v", tc.body, err)
		case tc.code == "":
			if ev.Name != strings.TrimSpace(ev.Name) {
				t.Errorf("%.60s: name not trimmed: %q", tc.body, ev.Name)
			}
		case !errors.As(err, &inv):
			t.Errorf("%.60s: error %v, want *InvalidError %s", tc.body, err, tc.code)
		case inv.Code != tc.code || inv.Field != tc.field:
			t.Errorf("%.60s: %s/%s (%s), want %s/%s", tc.body, inv.Code, inv.Field, inv.Message, tc.code, tc.field)
		}
	}
}

func TestCheckUTF8(t *testing.T) {
	for _, tc := range []struct {
		body  string
		field string // "-" = valid
	}{
		{`{"name":"café 🙂","userId":1}`, "-"},
		{"{\"name\":\"\xff\xfe\",\"userId\":1}", "name"},
		{"{\"name\":\"x\",\"details\":\"caf\xe9\"}", "details"},
		{"{\"na\xffme\":\"x\"}", ""},
		{"\xff", ""},
		{`{"name":"\ud800","userId":1}`, "name"},
		{`{"name":"x","details":"a\udc00b"}`, "details"},
		{`{"name":"\ud83d x"}`, "name"},
		{`{"name":"\ud83d\u0041"}`, "name"},
		{`{"name":"\ud83d\ude00 \u00e9 \\ud800","userId":1}`, "-"},
	} {
		err := CheckUTF8([]byte(tc.body))
		var inv *InvalidError
		switch {
		case tc.field == "-" && err != nil:
			t.Errorf("%q: unexpected error %v", tc.body, err)
		case tc.field == "-":
		case !errors.As(err, &inv) || inv.Code != "invalid_field" || inv.Field != tc.field:
			t.Errorf("%q: error %v, want invalid_field on %q", tc.body, err, tc.field)
		}
	}
}

func TestParseIDs(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		// Keys are kept as given: the upstream finds events by them.
		{"3", "3"}, {"event-3", "event-3"}, {"1733071234567", "1733071234567"}, {"Event-x_1", "Event-x_1"},
		{"", ""}, {"a b", ""}, {"tab\t", ""}, {"é", ""}, {strings.Repeat("9", 129), ""},
	} {
		got, err := ParseEventID(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("ParseEventID(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"1", 1}, {"2147483647", 2147483647}, {"0", 0}, {"-1", 0}, {"abc", 0}, {"1e3", 0}, {"2147483648", 0}, {"", 0},
	} {
		got, err := ParseUserID(tc.in)
		if got != tc.want || (err == nil) != (tc.want != 0) {
			t.Errorf("ParseUserID(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func FuzzNewEvent(f *testing.F) {
	for _, s := range []string{`{"name":"x","userId":1}`, `{"name":"  a ","userId":2,"details":"d"}`, `{"name":`, `[]`, `{"userId":"1"}`, `{"a":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := DecodeNewEvent(body)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Code == "" || inv.Message == "" {
				t.Fatalf("decode error %v is not a described *InvalidError", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("validate error %v is not an *InvalidError", err)
			}
			return
		}
		if ev.Name == "" || ev.UserID <= 0 || utf8.RuneCountInString(ev.Name) > MaxNameLen || ev.Name != strings.TrimSpace(ev.Name) {
			t.Fatalf("accepted an invalid event %+v", ev)
		}
	})
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"3", "event-3", "event-", "x", "-1", "event-007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseEventID(s)
		if err != nil {
			if id != "" {
				t.Fatalf("ParseEventID(%q) returned %q with an error", s, id)
			}
			return
		}
		again, err := ParseEventID(id)
		if err != nil || again != id || id != s {
			t.Fatalf("key %q of %q is not kept as given (%q, %v)", id, s, again, err)
		}
	})
}

func FuzzParseUserID(f *testing.F) {
	for _, s := range []string{"1", "0", "abc", "99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseUserID(s)
		if (err == nil) != (n > 0) {
			t.Fatalf("ParseUserID(%q) = %d, %v", s, n, err)
		}
	})
}
