package config

import (
	"flag"
	"fmt"
	"io"
	"reflect"

	"github.com/amexd/amexd/internal/settings"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = settings.EnvPrefix

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
		set[f.Key] = v
		return f.Set(&scratch, v) // reports bad syntax at parse time
	})
	if err := fs.Parse(s.Args); err != nil {
		return Config{}, "", err
	}
	if fs.NArg() > 0 {
		return Config{}, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := Default()
	path, _ := settings.LookupEnv(s.Env, EnvPrefix+"CONFIG")
	if *file != "" {
		path = *file
	}
	if path != "" {
		if err := decodeFile(path, &cfg); err != nil {
			return Config{}, path, err
		}
	}
	if err := settings.ApplyEnv(&cfg, fields, s.Env); err != nil {
		return Config{}, path, err
	}
	for _, f := range fields {
		if v, ok := set[f.Key]; ok {
			if err := f.Set(&cfg, v); err != nil {
				return Config{}, path, fmt.Errorf("-%s: %w", f.Key, err)
			}
		}
	}
	cfg.adoptLegacyRedis()
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
		fs.Var(flagValue{f: f, set: onSet}, f.Key, usage(f))
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
func (v flagValue) IsBoolFlag() bool   { return v.f.Type.Kind() == reflect.Bool }

// DecodeFile reads a YAML configuration file over the defaults and validates
// the result. It rejects unknown keys, so a misspelt key is an error.
func DecodeFile(path string) (Config, error) {
	cfg := Default()
	if err := decodeFile(path, &cfg); err != nil {
		return Config{}, err
	}
	cfg.adoptLegacyRedis()
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration in %s:\n%w", path, err)
	}
	return cfg, nil
}

// field is one leaf of Config that the environment or a flag can set.
type field = settings.Field

// keys lists every key that an environment variable or a flag can set,
// sorted.
func keys() []field { return settings.Fields(reflect.TypeOf(Config{})) }

func usage(f field) string {
	return fmt.Sprintf("%s (%s, env %s)", f.Key, placeholder(f.Type), f.Env())
}

func decodeFile(path string, cfg *Config) error { return settings.DecodeFile(path, cfg, true) }

func decodeYAML(name string, data []byte, cfg *Config) error {
	return settings.DecodeYAML(name, data, cfg, true)
}

var bytesType = reflect.TypeOf(Bytes(0))
