package settings

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type size int64

func (s *size) Set(v string) error {
	if v != "1K" {
		return os.ErrInvalid
	}
	*s = 1024
	return nil
}

func (s size) String() string { return "" }

type sample struct {
	Control struct {
		Socket string        `yaml:"socket"`
		Wait   time.Duration `yaml:"wait"`
	} `yaml:"control"`
	Roles []string `yaml:"roles"`
	Size  size     `yaml:"size"`
}

func TestReadFileThenEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "amexd.yaml")
	if err := os.WriteFile(file, []byte("control: {socket: /a.sock, wait: 1s}\nother: {key: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var s sample
	got, err := Read(&s, "", []string{"AMEXD_CONFIG=" + file, "AMEXD_CONTROL_WAIT=2s", "AMEXD_ROLES=a, b", "AMEXD_SIZE=1K"}, false)
	if err != nil || got != file {
		t.Fatalf("Read = %q, %v; want the file from AMEXD_CONFIG", got, err)
	}
	if s.Control.Socket != "/a.sock" || s.Control.Wait != 2*time.Second || strings.Join(s.Roles, "|") != "a|b" || s.Size != 1024 {
		t.Errorf("read %+v; want the file's socket, the environment's wait, roles and size", s)
	}
	if _, err := Read(&sample{}, file, nil, true); err == nil || !strings.Contains(err.Error(), "parse config "+file) {
		t.Errorf("strict Read of a file with an unknown section = %v, want an error naming the file", err)
	}
	if _, err := Read(&sample{}, "", []string{"AMEXD_CONTROL_WAIT=soon"}, false); err == nil || !strings.HasPrefix(err.Error(), "AMEXD_CONTROL_WAIT: control.wait:") {
		t.Errorf("Read with a bad duration = %v, want an error naming the variable and the key", err)
	}
}

func TestFields(t *testing.T) {
	var keys []string
	for _, f := range Fields(reflect.TypeOf(sample{})) {
		keys = append(keys, f.Key+"="+f.Env())
	}
	want := "control.socket=AMEXD_CONTROL_SOCKET control.wait=AMEXD_CONTROL_WAIT roles=AMEXD_ROLES size=AMEXD_SIZE"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("Fields = %s, want %s", got, want)
	}
}
