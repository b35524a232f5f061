package bench

import (
	"strings"
	"testing"
)

func TestCheckTarget(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    string
		wantErr string
	}{
		{raw: "http://127.0.0.1:3000", want: "http://127.0.0.1:3000"},
		{raw: "http://127.0.0.1:3000/", want: "http://127.0.0.1:3000"},
		{raw: "http://127.1.2.3:8080/api/", want: "http://127.1.2.3:8080/api"},
		{raw: "http://localhost:3000", want: "http://localhost:3000"},
		{raw: "http://[::1]:3000", want: "http://[::1]:3000"},
		{raw: "http://10.0.0.5:3000", wantErr: "not a loopback address"},
		{raw: "http://example.com", wantErr: "not a loopback address"},
		{raw: "http://0.0.0.0:3000", wantErr: "not a loopback address"},
		{raw: "https://127.0.0.1:3000", wantErr: "scheme must be http"},
		{raw: "127.0.0.1:3000", wantErr: "target \"127.0.0.1:3000\""},
		{raw: "localhost:3000", wantErr: "scheme must be http"},
		{raw: "http://:3000", wantErr: "no host"},
	} {
		u, err := CheckTarget(tc.raw)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("CheckTarget(%q) = %v, %v; want error containing %q", tc.raw, u, err, tc.wantErr)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("CheckTarget(%q) = %v, %v; want %s", tc.raw, u, err, tc.want)
		}
	}
}
