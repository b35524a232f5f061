// Package auth verifies the bearer tokens (JWTs) that protect amexd's writes
// and mints development tokens. A token must be signed with the configured
// key (an HS256 secret, or an RSA or Ed25519 public key for RS256 or EdDSA),
// carry an expiry, match the configured issuer and audience when those are
// set, and list the required role in its roles claim. It knows nothing of
// HTTP; the worker maps its errors to 401 and 403.
package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinSecretBytes is the shortest HS256 secret accepted: as long as the
// SHA-256 output, so the secret is not the weak point.
const MinSecretBytes = 32

// Config selects the verification key and the claims a token must carry.
// The key is PublicKeyFile when set, else HS256SecretFile when set, else the
// environment variable named by HS256SecretEnv.
type Config struct {
	// Enabled requires a valid token on writes (and on reads with
	// ProtectReads).
	Enabled bool `yaml:"enabled"`
	// HS256SecretFile holds the shared secret; surrounding whitespace,
	// such as a trailing newline, is ignored.
	HS256SecretFile string `yaml:"hs256_secret_file"`
	// HS256SecretEnv names the environment variable holding the secret
	// when no file is set.
	HS256SecretEnv string `yaml:"hs256_secret_env"`
	// PublicKeyFile is a PEM RSA (RS256) or Ed25519 (EdDSA) public key.
	PublicKeyFile string `yaml:"public_key_file"`
	// Role is the role a token must hold.
	Role string `yaml:"role"`
	// RolesClaim names the claim listing the token's roles: an array of
	// strings, or one string of space-separated roles.
	RolesClaim string `yaml:"roles_claim"`
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	// ProtectReads requires a token, with the same role, on data reads too.
	ProtectReads bool `yaml:"protect_reads"`
}

// DefaultConfig is authentication off, with the names production uses.
func DefaultConfig() Config {
	return Config{
		HS256SecretEnv: "JWT_SECRET",
		Role:           "events:write",
		RolesClaim:     "roles",
	}
}

// Validate checks the configuration without reading any file; each error
// names its key.
func (c Config) Validate() error {
	var errs []error
	if c.Role == "" {
		errs = append(errs, errors.New(`auth.role: "" must not be empty`))
	}
	if c.RolesClaim == "" {
		errs = append(errs, errors.New(`auth.roles_claim: "" must not be empty`))
	}
	if c.PublicKeyFile != "" && c.HS256SecretFile != "" {
		errs = append(errs, fmt.Errorf("auth.public_key_file: %q and auth.hs256_secret_file cannot both be set", c.PublicKeyFile))
	}
	if c.Enabled && c.PublicKeyFile == "" && c.HS256SecretFile == "" && c.HS256SecretEnv == "" {
		errs = append(errs, errors.New("auth.enabled: true needs auth.public_key_file, auth.hs256_secret_file or auth.hs256_secret_env"))
	}
	return errors.Join(errs...)
}

// Errors a verification wraps: ErrUnauthenticated for a token that is
// missing, malformed, wrongly signed, expired or for someone else;
// ErrForbidden for a good token without the role.
var (
	ErrUnauthenticated = errors.New("auth: not authenticated")
	ErrForbidden       = errors.New("auth: role missing")
)

// key is a verification key and the one algorithm it is used with.
type key struct {
	method string
	verify any
	// secret is set for HS256 only, where the same key signs.
	secret []byte
}

func loadKey(c Config) (key, error) {
	switch {
	case c.PublicKeyFile != "":
		pemBytes, err := os.ReadFile(c.PublicKeyFile)
		if err != nil {
			return key{}, fmt.Errorf("auth.public_key_file: %w", err)
		}
		k, err := parsePublicKey(pemBytes)
		if err != nil {
			return key{}, fmt.Errorf("auth.public_key_file %s: %w", c.PublicKeyFile, err)
		}
		return k, nil
	case c.HS256SecretFile != "":
		b, err := os.ReadFile(c.HS256SecretFile)
		if err != nil {
			return key{}, fmt.Errorf("auth.hs256_secret_file: %w", err)
		}
		k, err := hmacKey(b)
		if err != nil {
			return key{}, fmt.Errorf("auth.hs256_secret_file %s: %w", c.HS256SecretFile, err)
		}
		return k, nil
	case c.HS256SecretEnv != "":
		k, err := hmacKey([]byte(os.Getenv(c.HS256SecretEnv)))
		if err != nil {
			return key{}, fmt.Errorf("auth.hs256_secret_env %s: %w", c.HS256SecretEnv, err)
		}
		return k, nil
	}
	return key{}, errors.New("auth: no key configured")
}

func hmacKey(raw []byte) (key, error) {
	secret := []byte(strings.TrimSpace(string(raw)))
	if len(secret) < MinSecretBytes {
		return key{}, fmt.Errorf("secret has %d bytes, want at least %d", len(secret), MinSecretBytes)
	}
	return key{method: jwt.SigningMethodHS256.Alg(), verify: secret, secret: secret}, nil
}

func parsePublicKey(pemBytes []byte) (key, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return key{}, errors.New("no PEM block")
	}
	var (
		pub any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return key{}, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return key{}, fmt.Errorf("parse public key: %w", err)
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return key{method: jwt.SigningMethodRS256.Alg(), verify: pub}, nil
	case ed25519.PublicKey:
		return key{method: jwt.SigningMethodEdDSA.Alg(), verify: pub}, nil
	default:
		return key{}, fmt.Errorf("public key type %T is not RSA or Ed25519", pub)
	}
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	key        key
	parser     *jwt.Parser
	role       string
	rolesClaim string
}

// NewVerifier loads the key c selects (reading its file or environment
// variable now) and returns a Verifier for c's claims. It fails for a
// missing or unreadable key, an HS256 secret shorter than MinSecretBytes,
// or a public key that is neither RSA nor Ed25519.
func NewVerifier(c Config) (*Verifier, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	k, err := loadKey(c)
	if err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{
		// Pinning the one algorithm of the key defeats alg=none and the
		// HS256-with-a-public-key confusion.
		jwt.WithValidMethods([]string{k.method}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(30 * time.Second),
	}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	return &Verifier{key: k, parser: jwt.NewParser(opts...), role: c.Role, rolesClaim: c.RolesClaim}, nil
}

// Method is the one signing algorithm the Verifier accepts, such as "HS256".
func (v *Verifier) Method() string { return v.key.method }

// Verify checks token's signature and claims and that it holds the role,
// and returns its subject (possibly empty). Its errors wrap
// ErrUnauthenticated or ErrForbidden, and jwt's reason (such as
// jwt.ErrTokenExpired) for an unauthenticated token; they never contain the
// token.
func (v *Verifier) Verify(token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return v.key.verify, nil }); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	sub, _ := claims.GetSubject()
	if !slices.Contains(roles(claims[v.rolesClaim]), v.role) {
		return sub, fmt.Errorf("%w: token lacks role %q", ErrForbidden, v.role)
	}
	return sub, nil
}

// roles reads a roles claim: an array of strings, or one string of
// space-separated roles. Anything else holds no role.
func roles(claim any) []string {
	switch c := claim.(type) {
	case string:
		return strings.Fields(c)
	case []any:
		out := make([]string, 0, len(c))
		for _, r := range c {
			if s, ok := r.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Token describes a token to mint.
type Token struct {
	Subject string
	// Roles default to the configured role alone.
	Roles []string
	// TTL is the token's lifetime; it must be positive.
	TTL time.Duration
}

// Mint signs a development token with the HS256 secret c selects, valid
// from now for t.TTL, with c's issuer and audience when set. It fails when
// c selects a public key, which cannot sign.
func Mint(c Config, t Token, now time.Time) (string, error) {
	if t.TTL <= 0 {
		return "", fmt.Errorf("auth: mint: TTL %v must be positive", t.TTL)
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	k, err := loadKey(c)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	if k.secret == nil {
		return "", fmt.Errorf("auth: mint: the %s key in auth.public_key_file only verifies; sign with its private key instead", k.method)
	}
	rs := t.Roles
	if len(rs) == 0 {
		rs = []string{c.Role}
	}
	claims := jwt.MapClaims{
		"iat":        now.Unix(),
		"nbf":        now.Unix(),
		"exp":        now.Add(t.TTL).Unix(),
		c.RolesClaim: rs,
	}
	if t.Subject != "" {
		claims["sub"] = t.Subject
	}
	if c.Issuer != "" {
		claims["iss"] = c.Issuer
	}
	if c.Audience != "" {
		claims["aud"] = c.Audience
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k.secret)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}
