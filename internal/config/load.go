package config

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

// Source records where a configuration came from, so that a reload can
// read it again the same way.
type Source struct {
	// File is the YAML file given with -config or AMEXD_CONFIG; empty when
	// only the built-in defaults apply.
	File string
	// Args are the command-line flags, without the program name.
	Args []string
	// Env is the environment, as os.Environ returns it.
	Env []string
}

// Load builds a Config from defaults, file, environment and flags, in that
// order, and validates it. Output of -h goes to out.
func Load(args, env []string, out io.Writer) (Config, Source, error) {
	src := Source{Args: args, Env: env}
	cfg, file, err := src.load(out)
	src.File = file
	return cfg, src, err
}

// Reload reads the configuration again from the same source: the file is
// re-read, the environment and flags are the ones the process started with.
// As the daemon's configuration, it must also pass CheckFiles.
func (s Source) Reload() (Config, error) {
	cfg, _, err := s.load(io.Discard)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.CheckFiles(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// load parses the flags once and returns the configuration and the file it
// read, if any.
func (s Source) load(out io.Writer) (Config, string, error) {
	fields := keys()
	set := map[string]string{}
	var scratch Config
	fs, file := newFlagSet(out, fields, func(f field, v string) error {
		set[f.key] = v
		return f.set(&scratch, v) // reports bad syntax at parse time
	})
	if err := fs.Parse(s.Args); err != nil {
		return Config{}, "", err
	}
	if fs.NArg() > 0 {
		return Config{}, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := Default()
	path := envValue(s.Env, EnvPrefix+"CONFIG")
	if *file != "" {
		path = *file
	}
	if path != "" {
		if err := decodeFile(path, &cfg); err != nil {
			return Config{}, path, err
		}
	}
	for _, f := range fields {
		if v, ok := lookupEnv(s.Env, f.env()); ok {
			if err := f.set(&cfg, v); err != nil {
				return Config{}, path, fmt.Errorf("%s: %w", f.env(), err)
			}
		}
	}
	for _, f := range fields {
		if v, ok := set[f.key]; ok {
			if err := f.set(&cfg, v); err != nil {
				return Config{}, path, fmt.Errorf("-%s: %w", f.key, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, path, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, path, nil
}

func newFlagSet(out io.Writer, fields []field, onSet func(field, string) error) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("amexd", flag.ContinueOnError)
	fs.SetOutput(out)
	file := fs.String("config", "", "YAML configuration `file` (also AMEXD_CONFIG)")
	for _, f := range fields {
		fs.Var(flagValue{f: f, set: onSet}, f.key, f.usage())
	}
	fs.Usage = func() { printUsage(out, fields) }
	return fs, file
}

// flagValue lets the flag package set one field; booleans may be given
// without a value, as -breaker.propagate.
type flagValue struct {
	f   field
	set func(field, string) error
}

func (v flagValue) String() string     { return "" }
func (v flagValue) Set(s string) error { return v.set(v.f, s) }
func (v flagValue) IsBoolFlag() bool   { return v.f.typ.Kind() == reflect.Bool }

// DecodeFile reads a YAML configuration file over the defaults and validates
// the result. It rejects unknown keys, so a misspelt key is an error.
func DecodeFile(path string) (Config, error) {
	cfg := Default()
	if err := decodeFile(path, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration in %s:\n%w", path, err)
	}
	return cfg, nil
}

func decodeFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return decodeYAML(path, data, cfg)
}

func decodeYAML(name string, data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse config %s: %w", name, err)
	}
	return nil
}

// field is one leaf of Config, reachable by its index path.
type field struct {
	key   string
	index []int
	typ   reflect.Type
}

func (f field) env() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.key, ".", "_"))
}

func (f field) usage() string {
	return fmt.Sprintf("%s (%s, env %s)", f.key, placeholder(f.typ), f.env())
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	bytesType    = reflect.TypeOf(Bytes(0))
)

// keys lists every key that an environment variable or a flag can set,
// sorted. Lists of structures are settable only in the file.
func keys() []field {
	var out []field
	walk(reflect.TypeOf(Config{}), "", nil, &out)
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

func walk(t reflect.Type, prefix string, index []int, out *[]field) {
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
			*out = append(*out, field{key: key, index: idx, typ: sf.Type})
		}
	}
}

func settable(t reflect.Type) bool {
	if t == durationType || t == bytesType {
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

func (f field) set(cfg *Config, raw string) error {
	v := reflect.ValueOf(cfg).Elem().FieldByIndex(f.index)
	raw = strings.TrimSpace(raw)
	switch {
	case f.typ == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration (e.g. 500ms, 30s)", f.key, raw)
		}
		v.SetInt(int64(d))
		return nil
	case f.typ == bytesType:
		b, err := ParseBytes(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
		v.SetInt(int64(b))
		return nil
	}
	switch f.typ.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%s: %q is not a boolean", f.key, raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", f.key, raw)
		}
		v.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.key, raw)
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

func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

func envValue(env []string, name string) string {
	v, _ := lookupEnv(env, name)
	return v
}
