package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/utils"
	"golang.org/x/sys/unix"
)

// On-disk layout of one network's reservations, under dataDir/<network>/:
//
//	lock                   flock(2) target; serialises every change to the network
//	ips/<address>          symlink whose target is the owner key "<containerID>:<ifname>"
//	owners/<key>           symlink whose target is the owner's addresses, comma separated
//	cursor.<n>             symlink to the address last handed out from range set n
//
// Each record is a symbolic link because creating one is a single atomic
// system call that carries its content and fails with EEXIST when the name is
// taken: a process killed at any instant leaves a record either whole or
// absent, never torn, and an address can be claimed only once. Links are only
// ever read with readlink, never followed, and every path is resolved through
// an os.Root so that a link planted in dataDir cannot lead outside it.
//
// Records are not fsynced. A reservation only matters while its container's
// network namespace exists, and a power loss that could drop an unsynced
// record also destroys every namespace on the node; a process crash (the case
// the runtime actually produces) never loses a completed system call.
const (
	lockName   = "lock"
	ipsDir     = "ips"
	ownersDir  = "owners"
	cursorName = "cursor."
	// keySep separates container ID and interface name in an owner key. CNI
	// forbids ':' in both, so a key can always be split back unambiguously.
	keySep = ":"
	// maxNameLen is the longest file name Linux file systems hold (NAME_MAX).
	maxNameLen = 255
)

// lockTimeout bounds how long an operation waits for another process holding
// the network's lock; past it the caller gets ErrBusy and the runtime retries.
var lockTimeout = 30 * time.Second

// ErrBusy reports that the network's reservation lock could not be taken in
// time. It is transient: CNI callers map it to "try again later".
var ErrBusy = errors.New("reservation store is locked by another process")

// ErrCorrupt reports a record that vethroute cannot have written. The store
// refuses to guess (guessing could hand one address out twice); see
// docs/reliability.md for how an operator recovers.
var ErrCorrupt = errors.New(`reservation store is corrupt (see "Repairing the store" in vethroute's docs/reliability.md)`)

// Owner identifies one attachment: the reservation key the CNI spec implies.
type Owner struct {
	ContainerID string
	IfName      string
}

// Validate rejects identifiers that could escape a path or break a key.
func (o Owner) Validate() error {
	if err := utils.ValidateContainerID(o.ContainerID); err != nil {
		return fmt.Errorf("container ID %q: %s", o.ContainerID, err.Msg)
	}
	if err := utils.ValidateInterfaceName(o.IfName); err != nil {
		return fmt.Errorf("interface name %q: %s", o.IfName, err.Msg)
	}
	// CNI's check lets a NUL byte through, and no length bound on the
	// container ID; the key must still be a file name.
	if strings.ContainsRune(o.IfName, 0) {
		return fmt.Errorf("interface name %q contains a NUL byte", o.IfName)
	}
	if len(o.key()) > maxNameLen {
		return fmt.Errorf("container ID of %d bytes makes an owner key longer than a file name can be (%d bytes)", len(o.ContainerID), maxNameLen)
	}
	return nil
}

func (o Owner) key() string { return o.ContainerID + keySep + o.IfName }

// String returns the owner as "containerID:ifname".
func (o Owner) String() string { return o.key() }

func parseOwner(key string) (Owner, error) {
	id, ifname, ok := strings.Cut(key, keySep)
	o := Owner{ContainerID: id, IfName: ifname}
	if !ok {
		return o, fmt.Errorf("%w: owner key %q has no %q", ErrCorrupt, key, keySep)
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("%w: owner key %q: %v", ErrCorrupt, key, err)
	}
	return o, nil
}

// store is one network's directory, opened so that nothing below it can
// resolve outside of it.
type store struct {
	root *os.Root
	lock *os.File
}

// openStore creates (0700) and opens dataDir/network.
func openStore(dataDir, network string) (*store, error) {
	if err := utils.ValidateNetworkName(network); err != nil {
		return nil, fmt.Errorf("network name %q: %s", network, err.Msg)
	}
	if dataDir == "" {
		return nil, errors.New("dataDir is empty")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create dataDir %s: %w", dataDir, err)
	}
	top, err := os.OpenRoot(dataDir)
	if err != nil {
		return nil, fmt.Errorf("open dataDir %s: %w", dataDir, err)
	}
	defer top.Close()
	if err := top.Mkdir(network, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s/%s: %w", dataDir, network, err)
	}
	if err := checkKind(top, network, dataDir, true); err != nil {
		return nil, err
	}
	root, err := top.OpenRoot(network)
	if err != nil {
		return nil, fmt.Errorf("open %s/%s: %w", dataDir, network, err)
	}
	for _, d := range []string{ipsDir, ownersDir} {
		if err := root.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			root.Close()
			return nil, fmt.Errorf("create %s/%s/%s: %w", dataDir, network, d, err)
		}
	}
	for _, e := range []struct {
		name string
		dir  bool
	}{{ipsDir, true}, {ownersDir, true}, {lockName, false}} {
		if err := checkKind(root, e.name, dataDir+"/"+network, e.dir); err != nil {
			root.Close()
			return nil, err
		}
	}
	lock, err := root.OpenFile(lockName, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if errors.Is(err, syscall.EROFS) {
		// A read-only dataDir still serves what only reads (CHECK,
		// STATUS): flock(2) takes an exclusive lock on a read-only
		// descriptor too, and every write fails with EROFS on its own,
		// which callers report as an I/O failure.
		lock, err = root.OpenFile(lockName, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("open lock file %s/%s/%s: %w", dataDir, network, lockName, err)
	}
	return &store{root: root, lock: lock}, nil
}

// checkKind reports, as ErrCorrupt, an entry of the store that exists but
// is not what vethroute creates there (say a symlink planted in place of a
// directory or of the lock file). os.Root would refuse to follow it anyway,
// but only with a bare "path escapes from parent"; this names the entry.
func checkKind(r *os.Root, name, where string, dir bool) error {
	fi, err := r.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("stat %s/%s: %w", where, name, err)
	case dir && fi.IsDir(), !dir && fi.Mode().IsRegular():
		return nil
	}
	want := "a regular file"
	if dir {
		want = "a directory"
	}
	return fmt.Errorf("%w: %s/%s is not %s (mode %v); vethroute never follows it", ErrCorrupt, where, name, want, fi.Mode())
}

func (s *store) close() error {
	lerr := s.lock.Close()
	rerr := s.root.Close()
	return errors.Join(lerr, rerr)
}

// withLock runs f holding the network's exclusive flock. The kernel drops the
// lock when its holder dies, so a killed plugin never leaves it held.
func (s *store) withLock(f func() error) error {
	fd := int(s.lock.Fd())
	deadline := time.Now().Add(lockTimeout)
	wait := 100 * time.Microsecond
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", s.root.Name(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock %s after %s: %w", s.root.Name(), lockTimeout, ErrBusy)
		}
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Millisecond)
	}
	defer unix.Flock(fd, unix.LOCK_UN) //nolint:errcheck // closing the fd unlocks too
	return f()
}

// readRecord returns a record's content, or ok=false when it does not exist.
func (s *store) readRecord(name string) (string, bool, error) {
	v, err := s.root.Readlink(name)
	switch {
	case err == nil:
		return v, true, nil
	case errors.Is(err, fs.ErrNotExist):
		return "", false, nil
	case errors.Is(err, syscall.EINVAL):
		return "", false, fmt.Errorf("%w: %s is not a vethroute record (not a symlink)", ErrCorrupt, name)
	default:
		return "", false, fmt.Errorf("read %s: %w", name, err)
	}
}

// createRecord atomically creates a record; it fails with fs.ErrExist when
// the name is taken, which is what makes a claim exclusive.
func (s *store) createRecord(name, content string) error {
	return s.root.Symlink(content, name)
}

// replaceRecord atomically swaps a record's content (used for hints only).
// Its temporary name lies beside name at the network's top level, never in
// ips/ or owners/, whose every entry is a record: any suffix is a valid
// interface name, so no name there can be told apart as a leftover.
func (s *store) replaceRecord(name, content string) error {
	tmp := name + ".tmp"
	_ = s.root.Remove(tmp)
	if err := s.root.Symlink(content, tmp); err != nil {
		return err
	}
	return s.root.Rename(tmp, name)
}

func (s *store) removeRecord(name string) error {
	err := s.root.Remove(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// list returns the record names of a directory.
func (s *store) list(dir string) ([]string, error) {
	f, err := s.root.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return names, nil
}
