package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// keyNames is every dotted name a configuration error may start with: each
// leaf key and each section, with the fields of list items (such as
// ratelimit.routes.rate) included.
func keyNames() map[string]bool {
	names := map[string]bool{}
	var walkType func(t reflect.Type, prefix string)
	walkType = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			names[key] = true
			ft := t.Field(i).Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Config{}) {
				walkType(ft, key)
			}
		}
	}
	walkType(reflect.TypeOf(Config{}), "")
	return names
}

var (
	listIndex = regexp.MustCompile(`\[\d+\]`)
	errorKey  = regexp.MustCompile(`^([a-z0-9_.\[\]]+):? `)
)

// FuzzDecodeYAML feeds arbitrary bytes to the decoder DecodeFile uses. It
// must not panic; a document it accepts must validate, or fail with errors
// that each start with the key of the field at fault.
func FuzzDecodeYAML(f *testing.F) {
	for _, path := range []string{"../../configs/amexd.yaml", "../../configs/production.yaml"} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"listen: 3000\n", "workers: -1\n", "ratelimit:\n  routes: [{method: GET, path: x, rate: 1}]\n",
		"auth: {enabled: true, hs256_secret_env: \"\"}\n", "cache: {users: {fresh: 0s}}\n",
		"a: &a [*a, *a]\n", "log: [1, 2]\n", "tls: {cert_file: x}\n", "---\n...\n", "upstream: {url: \"::\"}\n",
	} {
		f.Add([]byte(s))
	}
	names := keyNames()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Default()
		if err := decodeYAML("fuzz.yaml", data, &cfg); err != nil {
			if !strings.Contains(err.Error(), "parse config fuzz.yaml") {
				t.Fatalf("decode error %q does not name the file", err)
			}
			return
		}
		err := cfg.Validate()
		if err == nil {
			return
		}
		for line := range strings.SplitSeq(err.Error(), "\n") {
			m := errorKey.FindStringSubmatch(line)
			if m == nil || !names[listIndex.ReplaceAllString(m[1], "")] {
				t.Fatalf("validation error line %q does not start with a configuration key", line)
			}
		}
	})
}
