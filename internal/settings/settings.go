// Package settings reads a typed structure of settings the way amexd's
// configuration is read: a YAML file over the defaults, then one
// environment variable per key (AMEXD_ and the key, dots as underscores).
// Keys are the structure's yaml tags joined by dots, as ratelimit.rate.
// It knows no particular structure, so a client that needs a few of the
// daemon's settings reads them without linking the rest.
package settings

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = "AMEXD_"

// Field is one leaf of a settings structure that the environment or a flag
// can set, reachable by its index path.
type Field struct {
	Key   string
	Index []int
	Type  reflect.Type
}

// Env is the environment variable that sets f.
func (f Field) Env() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Key, ".", "_"))
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	flagValue    = reflect.TypeOf((*flag.Value)(nil)).Elem()
)

// Fields lists, sorted by key, every key of struct type t that an
// environment variable or a flag can set: strings, booleans, integers,
// numbers, durations, lists of strings and types whose pointer is a
// flag.Value (which parse their own text). Lists of
// structures are settable only in the file.
func Fields(t reflect.Type) []Field {
	var out []Field
	walk(t, "", nil, &out)
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func walk(t reflect.Type, prefix string, index []int, out *[]Field) {
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !sf.IsExported() {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		idx := append(append([]int(nil), index...), i)
		switch {
		case sf.Type.Kind() == reflect.Struct:
			walk(sf.Type, key, idx, out)
		case settable(sf.Type):
			*out = append(*out, Field{Key: key, Index: idx, Type: sf.Type})
		}
	}
}

func settable(t reflect.Type) bool {
	if t == durationType || reflect.PointerTo(t).Implements(flagValue) {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// Set parses raw into f of the structure dst points to.
func (f Field) Set(dst any, raw string) error {
	v := reflect.ValueOf(dst).Elem().FieldByIndex(f.Index)
	raw = strings.TrimSpace(raw)
	if u, ok := v.Addr().Interface().(flag.Value); ok {
		if err := u.Set(raw); err != nil {
			return fmt.Errorf("%s: %w", f.Key, err)
		}
		return nil
	}
	if f.Type == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration (e.g. 500ms, 30s)", f.Key, raw)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch f.Type.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%s: %q is not a boolean", f.Key, raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", f.Key, raw)
		}
		v.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.Key, raw)
		}
		v.SetFloat(x)
	case reflect.Slice:
		var items []string
		for item := range strings.SplitSeq(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		v.Set(reflect.ValueOf(items))
	}
	return nil
}

// DecodeYAML decodes data, the file name, over the structure dst points
// to. When strict, a key dst has no field for is an error.
func DecodeYAML(name string, data []byte, dst any, strict bool) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(strict)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse config %s: %w", name, err)
	}
	return nil
}

// DecodeFile is DecodeYAML of the file at path.
func DecodeFile(path string, dst any, strict bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return DecodeYAML(path, data, dst, strict)
}

// ApplyEnv sets every field of fields whose variable env holds.
func ApplyEnv(dst any, fields []Field, env []string) error {
	for _, f := range fields {
		if v, ok := LookupEnv(env, f.Env()); ok {
			if err := f.Set(dst, v); err != nil {
				return fmt.Errorf("%s: %w", f.Env(), err)
			}
		}
	}
	return nil
}

// LookupEnv is name's value in env (KEY=value entries, the last one
// winning), and whether it is there.
func LookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// Read fills the structure dst points to, already holding the defaults,
// from the file at path (when not empty; file defaults to the file named
// by AMEXD_CONFIG in env) and then from env. Keys of the file dst has no
// field for are ignored unless strict. It returns the file it read.
func Read(dst any, path string, env []string, strict bool) (string, error) {
	if path == "" {
		path, _ = LookupEnv(env, EnvPrefix+"CONFIG")
	}
	if path != "" {
		if err := DecodeFile(path, dst, strict); err != nil {
			return path, err
		}
	}
	return path, ApplyEnv(dst, Fields(reflect.TypeOf(dst).Elem()), env)
}
