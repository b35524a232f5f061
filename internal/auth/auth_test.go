package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const secret = "0123456789abcdef0123456789abcdef-test"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func hsConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.Enabled = true
	c.HS256SecretFile = writeFile(t, "jwt.secret", secret+"\n")
	return c
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyHS256(t *testing.T) {
	v, err := NewVerifier(hsConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if v.Method() != "HS256" {
		t.Errorf("method %q", v.Method())
	}
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	good := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "ana", "exp": exp, "roles": []string{"events:read", "events:write"}}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		token string
		want  error // nil = accepted
		why   error
	}{
		{"good", sign(t, jwt.SigningMethodHS256, []byte(secret), good(nil)), nil, nil},
		{"roles as a string", sign(t, jwt.SigningMethodHS256, []byte(secret), good(jwt.MapClaims{"roles": "a events:write"})), nil, nil},
		{"empty", "", ErrUnauthenticated, nil},
		{"garbage", "not.a.jwt", ErrUnauthenticated, jwt.ErrTokenMalformed},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), good(nil)), ErrUnauthenticated, jwt.ErrTokenSignatureInvalid},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(secret), good(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()})), ErrUnauthenticated, jwt.ErrTokenExpired},
		{"no expiry", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"roles": []string{"events:write"}}), ErrUnauthenticated, jwt.ErrTokenRequiredClaimMissing},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, []byte(secret), good(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()})), ErrUnauthenticated, jwt.ErrTokenNotValidYet},
		{"HS512", sign(t, jwt.SigningMethodHS512, []byte(secret), good(nil)), ErrUnauthenticated, jwt.ErrTokenSignatureInvalid},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good(nil)), ErrUnauthenticated, nil},
		{"no role", sign(t, jwt.SigningMethodHS256, []byte(secret), good(jwt.MapClaims{"roles": []string{"events:read"}})), ErrForbidden, nil},
		{"no roles claim", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp}), ErrForbidden, nil},
		{"roles of the wrong type", sign(t, jwt.SigningMethodHS256, []byte(secret), good(jwt.MapClaims{"roles": 7})), ErrForbidden, nil},
		{"role as a prefix", sign(t, jwt.SigningMethodHS256, []byte(secret), good(jwt.MapClaims{"roles": "events:writer"})), ErrForbidden, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if tc.why != nil && !errors.Is(err, tc.why) {
				t.Errorf("Verify: %v, want it to wrap %v", err, tc.why)
			}
			if err != nil && tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Error("the error contains the token")
			}
		})
	}
}

func TestIssuerAndAudience(t *testing.T) {
	c := hsConfig(t)
	c.Issuer, c.Audience = "https://id.example", "amexd"
	v, err := NewVerifier(c)
	if err != nil {
		t.Fatal(err)
	}
	minted, err := Mint(c, Token{Subject: "dev", TTL: time.Minute}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sub, err := v.Verify(minted); err != nil || sub != "dev" {
		t.Fatalf("minted token: %q, %v", sub, err)
	}
	for name, claims := range map[string]jwt.MapClaims{
		"other issuer":   {"iss": "https://evil.example", "aud": "amexd"},
		"other audience": {"iss": "https://id.example", "aud": "other"},
		"no issuer":      {"aud": "amexd"},
	} {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		claims["roles"] = []string{"events:write"}
		if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, []byte(secret), claims)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: %v, want ErrUnauthenticated", name, err)
		}
	}
}

func pemFile(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
}

func TestPublicKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "roles": []string{"events:write"}}
	}
	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		method jwt.SigningMethod
		sign   any
	}{
		{"RS256", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"EdDSA", edPub, jwt.SigningMethodEdDSA, edKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Enabled = true
			c.PublicKeyFile = pemFile(t, tc.pub)
			v, err := NewVerifier(c)
			if err != nil {
				t.Fatal(err)
			}
			if v.Method() != tc.name {
				t.Errorf("method %q, want %q", v.Method(), tc.name)
			}
			if _, err := v.Verify(sign(t, tc.method, tc.sign, claims())); err != nil {
				t.Errorf("good token: %v", err)
			}
			// The public key's bytes used as an HMAC secret: the classic
			// algorithm confusion.
			pemBytes, _ := os.ReadFile(c.PublicKeyFile)
			if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, pemBytes, claims())); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("HS256 token signed with the public key: %v, want ErrUnauthenticated", err)
			}
			if _, err := Mint(c, Token{TTL: time.Minute}, time.Now()); err == nil {
				t.Error("minted with a public key")
			}
		})
	}
}

func TestKeyLoadingErrors(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"short secret", func(c *Config) { c.HS256SecretFile = writeFile(t, "s", "short\n") }, "auth.hs256_secret_file"},
		{"missing secret file", func(c *Config) { c.HS256SecretFile = "/nonexistent/jwt.secret" }, "auth.hs256_secret_file"},
		{"unset env", func(c *Config) { c.HS256SecretEnv = "AMEXD_TEST_UNSET_SECRET" }, "auth.hs256_secret_env AMEXD_TEST_UNSET_SECRET"},
		{"not PEM", func(c *Config) { c.PublicKeyFile = writeFile(t, "k", "hello") }, "no PEM block"},
		{"private key block", func(c *Config) {
			c.PublicKeyFile = writeFile(t, "k", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, "not a public key"},
		{"ECDSA key", func(c *Config) { c.PublicKeyFile = pemFile(t, &ecKey.PublicKey) }, "not RSA or Ed25519"},
		{"two keys", func(c *Config) { c.HS256SecretFile, c.PublicKeyFile = "a", "b" }, "cannot both be set"},
		{"no key", func(c *Config) { c.HS256SecretEnv = "" }, "auth.enabled"},
		{"no role", func(c *Config) { c.Role = "" }, "auth.role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Enabled = true
			tc.edit(&c)
			_, err := NewVerifier(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewVerifier: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSecretFromEnvironment(t *testing.T) {
	t.Setenv("AMEXD_TEST_JWT_SECRET", secret)
	c := DefaultConfig()
	c.Enabled = true
	c.HS256SecretEnv = "AMEXD_TEST_JWT_SECRET"
	v, err := NewVerifier(c)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Mint(c, Token{Roles: []string{"events:read"}, TTL: time.Minute}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); !errors.Is(err, ErrForbidden) {
		t.Errorf("token minted without the role: %v, want ErrForbidden", err)
	}
	expired, err := Mint(c, Token{TTL: time.Minute}, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(expired); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("token minted an hour ago for a minute: %v, want expired", err)
	}
	if _, err := Mint(c, Token{}, time.Now()); err == nil {
		t.Error("minted a token without a lifetime")
	}
}
