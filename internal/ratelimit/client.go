package ratelimit

import "net/netip"

// ClientKey is the rate-limit key of the client at ip: an IPv4 address as
// it is, an IPv6 address as its prefix of v6Bits bits ("2001:db8:1:2::/64"),
// so that a host holding a whole prefix gets one budget, not one per
// address. An IPv4 address mapped into IPv6 counts as IPv4, and a zone is
// dropped. Text that is not an IP address is returned as it is.
func ClientKey(ip string, v6Bits int) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if addr.Is4() {
		// ParseAddr takes IPv4 only in its one dotted-decimal form, so ip
		// already reads as addr.String() would write it, without its
		// allocation: every request passes here.
		return ip
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String()
	}
	p, err := addr.Prefix(v6Bits)
	if err != nil {
		return addr.String()
	}
	return p.String()
}
