package ratelimit

import "testing"

func TestClientKey(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7"},
		{"::ffff:192.0.2.7", 64, "192.0.2.7"},
		{"2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", 64, "2001:db8:1:3::/64"},
		{"2001:db8:1:2::1", 48, "2001:db8:1::/48"},
		{"2001:db8::1", 128, "2001:db8::1/128"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"::1", 64, "::/64"},
		{"not-an-ip", 64, "not-an-ip"},
		{"192.0.2.07", 64, "192.0.2.07"},
		{"0.0.0.0", 64, "0.0.0.0"},
		{"255.255.255.255", 64, "255.255.255.255"},
	} {
		if got := ClientKey(tc.ip, tc.bits); got != tc.want {
			t.Errorf("ClientKey(%q, %d) = %q, want %q", tc.ip, tc.bits, got, tc.want)
		}
	}
}
