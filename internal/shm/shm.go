// Package shm holds the sealed memfd files that amexd's processes share:
// the supervisor creates one (Create) and passes it to every worker, which
// maps it (Map). The rate-limit and idempotency tables live in them.
package shm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Create makes a memfd of size bytes called name, seals its size so that no
// process can shrink it under the others' mappings, and maps it read-write
// and shared. The file has close-on-exec set: pass it to a child explicitly
// (exec.Cmd.ExtraFiles), which clears the flag there. The caller owns both
// results: Unmap the memory and Close the file when done.
func Create(name string, size int64) (*os.File, []byte, error) {
	if size <= 0 {
		return nil, nil, fmt.Errorf("shm: create %s: size %d is not positive", name, size)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, nil, fmt.Errorf("shm: create %s: memfd_create: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	mem, err := sealAndMap(f, size)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("shm: create %s: %w", name, err)
	}
	return f, mem, nil
}

func sealAndMap(f *os.File, size int64) ([]byte, error) {
	if err := f.Truncate(size); err != nil {
		return nil, fmt.Errorf("size %d: %w", size, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return mapBytes(f, size)
}

// Map maps the whole of f read-write and shared, when its size is within
// [minSize, maxSize]; the size checks come first, so that a wrong file is
// refused before it is mapped. The caller keeps f: the mapping stays valid
// after f is closed, until Unmap.
func Map(f *os.File, minSize, maxSize int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch size := st.Size(); {
	case size < minSize:
		return nil, fmt.Errorf("%d bytes is too small (at least %d)", size, minSize)
	case size > maxSize:
		return nil, fmt.Errorf("%d bytes is too large (at most %d)", size, maxSize)
	default:
		return mapBytes(f, size)
	}
}

func mapBytes(f *os.File, size int64) ([]byte, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return mem, nil
}

// Unmap releases a mapping made by Create or Map.
func Unmap(mem []byte) error { return unix.Munmap(mem) }
