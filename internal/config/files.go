package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CheckFiles reports the files the configuration names that this process
// could not write, each error naming the key and the path: a worker that
// cannot open its access log would exit at once, and its successors after
// it, so the supervisor refuses such a configuration before it starts one.
// It asks access(2), which answers for this process's user and changes
// nothing on disk. Load leaves it out, since amexctl reads the daemon's
// configuration as another user; the daemon calls it at start and Reload
// calls it.
func (c Config) CheckFiles() error {
	if !c.Log.Access || c.Log.AccessFile == "" {
		return nil
	}
	if err := writable(c.Log.AccessFile); err != nil {
		return fmt.Errorf("log.access_file: %s: %w", c.Log.AccessFile, err)
	}
	return nil
}

// writable says whether path can be opened for appending, created if
// missing.
func writable(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if unix.Access(filepath.Dir(path), unix.W_OK|unix.X_OK) != nil {
			return errors.New("directory does not exist or is not writable")
		}
		return nil
	case err != nil:
		return err
	case st.IsDir():
		return errors.New("is a directory")
	case unix.Access(path, unix.W_OK) != nil:
		return errors.New("file is not writable")
	}
	return nil
}
