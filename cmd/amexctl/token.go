package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/auth"
)

// tokenOptions are the flags of "amexctl token".
type tokenOptions struct {
	secretFile string
	role       string
	ttl        time.Duration
	sub        string
}

func tokenFlags(fs *flag.FlagSet, inv *invocation) {
	o := &inv.token
	fs.StringVar(&o.secretFile, "secret-file", "", "HS256 secret `file` (default: the configuration's auth key)")
	fs.StringVar(&o.role, "role", "", "comma-separated `roles` (default: auth.role)")
	fs.DurationVar(&o.ttl, "ttl", time.Hour, "token lifetime")
	fs.StringVar(&o.sub, "sub", "", "subject `name` (sub claim)")
}

// runToken mints a token the daemon configured like inv.cfg accepts: the
// issuer, audience and roles claim come from the configuration, the secret
// from --secret-file or else the configured key.
func runToken(_ context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "token", args) {
		return exitUsage
	}
	o := inv.token
	ac := inv.cfg.Auth
	if o.secretFile != "" {
		ac.HS256SecretFile, ac.PublicKeyFile = o.secretFile, ""
	}
	var roles []string
	for r := range strings.SplitSeq(o.role, ",") {
		if r = strings.TrimSpace(r); r != "" {
			roles = append(roles, r)
		}
	}
	tok, err := auth.Mint(ac, auth.Token{Subject: o.sub, Roles: roles, TTL: o.ttl}, time.Now())
	if err != nil {
		fmt.Fprintln(inv.stderr, "amexctl: token:", err)
		return exitFailed
	}
	return writeOut(inv, tok+"\n")
}
