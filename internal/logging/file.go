package logging

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// File is a log file that follows rotation: before each write it checks
// that its path still names the file it holds open and, when logrotate has
// moved it away (or removed it), opens the path anew, so the first write
// after a rotation goes to the new file and no signal is needed. Writes append (O_APPEND), so the workers of
// one amexd can share the path.
type File struct {
	path string
	mu   sync.Mutex
	f    *os.File
	ino  uint64
}

// OpenFile opens path for appending, creating it (mode 0640) if needed.
func OpenFile(path string) (*File, error) {
	lf := &File{path: path}
	if err := lf.reopen(); err != nil {
		return nil, err
	}
	return lf, nil
}

func (lf *File) reopen() error {
	f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log file: %w", err)
	}
	if lf.f != nil {
		lf.f.Close()
	}
	lf.f, lf.ino = f, inode(st)
	return nil
}

func inode(st os.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}

// Write appends p, first reopening the path if it names another file now.
func (lf *File) Write(p []byte) (int, error) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if st, err := os.Stat(lf.path); err != nil || inode(st) != lf.ino {
		if err := lf.reopen(); err != nil {
			// Keep writing to the old file rather than losing the lines.
			n, werr := lf.f.Write(p)
			if werr != nil {
				return n, werr
			}
			return n, err
		}
	}
	return lf.f.Write(p)
}

// Close closes the file.
func (lf *File) Close() error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	return lf.f.Close()
}
