package config

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/atomicfile"
)

// maxBackup bounds the existing file the agent copies before replacing it.
const maxBackup = 64 << 20

// Placer places config files. It holds no mutable state; safe for
// concurrent use on different slots.
type Placer struct {
	Policy Policy
	// Systemctl is the absolute path of systemctl ("" = looked up in
	// execx.SearchDirs when a unit reload is needed).
	Systemctl     string
	ReloadTimeout time.Duration // 0 = 60 s
	// Crashpoint, when set, is called between the steps of an activation
	// (the crash tests kill the process there); production leaves it nil.
	Crashpoint func(name string)
}

func (p *Placer) crashpoint(name string) {
	if p.Crashpoint != nil {
		p.Crashpoint(name)
	}
}

// meta describes a backup; it is written last, so its presence means the
// backup is complete and the destination may since have been replaced.
type meta struct {
	Existed bool        `json:"existed"`
	Mode    fs.FileMode `json:"mode,omitempty"`
	UID     int         `json:"uid"`
	GID     int         `json:"gid"`
}

// Check re-validates the signed profile against policy and the filesystem.
func (p *Placer) Check(a *statefile.Artifact) error { return p.Policy.Check(a.Config) }

// Activate backs up what is at the destination into next.Backup, places
// next's staged file and runs its reload.
func (p *Placer) Activate(ctx context.Context, next, _ *statefile.Artifact) error {
	if err := p.Check(next); err != nil {
		return err
	}
	if next.Backup == "" {
		return fmt.Errorf("config %s: no backup location", next.Name)
	}
	dest := next.Config.Destination
	if err := backup(dest, next.Backup); err != nil {
		return err
	}
	p.crashpoint("config:backed-up")
	mode, _ := artifact.ParseMode(next.Config.Mode)
	m, _ := readMeta(next.Backup)
	src, err := os.Open(next.File)
	if err != nil {
		return fmt.Errorf("config %s: staged file: %w", next.Name, err)
	}
	defer src.Close()
	owner := [2]int{-1, -1}
	if m != nil && m.Existed {
		owner = [2]int{m.UID, m.GID}
	}
	if err := place(dest, src, fs.FileMode(mode), owner, p.Policy.checkRealDir); err != nil {
		return err
	}
	p.crashpoint("config:placed")
	return p.reload(ctx, next.Config.Reload)
}

// Undo restores the destination from next.Backup and reloads again. When
// the backup never completed, the destination was never touched and Undo
// only cleans temp files.
func (p *Placer) Undo(ctx context.Context, next, _ *statefile.Artifact) error {
	if next.Config == nil {
		return fmt.Errorf("config %s: no delivery profile to undo", next.Name)
	}
	dest := next.Config.Destination
	cleanTemps(dest)
	m, err := readMeta(next.Backup)
	if err != nil {
		return err
	}
	if m == nil {
		return nil
	}
	if err := restore(dest, next.Backup, m, p.Policy.checkRealDir); err != nil {
		return err
	}
	return p.reload(ctx, next.Config.Reload)
}

// Remove puts back what the destination held before Meshanics managed it
// (original backup), or removes the file when nothing was there.
func (p *Placer) Remove(ctx context.Context, cur *statefile.Artifact, original string) error {
	if cur.Config == nil {
		return fmt.Errorf("config %s: no delivery profile", cur.Name)
	}
	m := &meta{}
	if original != "" {
		got, err := readMeta(original)
		if err != nil {
			return err
		}
		if got != nil {
			m = got
		}
	}
	if err := restore(cur.Config.Destination, original, m, p.Policy.checkRealDir); err != nil {
		return err
	}
	return p.reload(ctx, cur.Config.Reload)
}

func (p *Placer) reload(ctx context.Context, r *artifact.Reload) error {
	if err := p.Policy.checkReload(r); err != nil {
		return err
	}
	timeout := p.ReloadTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	var cmd execx.Cmd
	switch {
	case r == nil || (r.SystemdUnit == "" && len(r.Exec) == 0):
		return nil
	case r.SystemdUnit != "":
		bin := p.Systemctl
		if bin == "" {
			var err error
			if bin, err = execx.Find("systemctl"); err != nil {
				return fmt.Errorf("reload %s: %w", r.SystemdUnit, err)
			}
		}
		cmd = execx.Cmd{Path: bin, Args: []string{"reload-or-restart", "--", r.SystemdUnit}, Timeout: timeout}
	default:
		cmd = execx.Cmd{Path: r.Exec[0], Args: r.Exec[1:], Timeout: timeout}
	}
	if _, err := execx.Run(ctx, cmd); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}

// backup copies dest (if any) into dir/content and then writes dir/meta.json.
// A complete earlier backup is kept: after the rename it would copy the new
// file instead of the old one.
func backup(dest, dir string) error {
	if m, err := readMeta(dir); err != nil || m != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	m := meta{}
	f, err := os.OpenFile(dest, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("backup %s: %w", dest, err)
	default:
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("backup %s: %w", dest, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() > maxBackup {
			return fmt.Errorf("backup %s: not a regular file of at most %d bytes", dest, maxBackup)
		}
		m = meta{Existed: true, Mode: fi.Mode().Perm()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			m.UID, m.GID = int(st.Uid), int(st.Gid)
		}
		err = atomicfile.WriteFrom(filepath.Join(dir, "content"), func(w io.Writer) error {
			_, err := io.Copy(w, io.LimitReader(f, maxBackup))
			return err
		}, 0o600)
		if err != nil {
			return fmt.Errorf("backup %s: %w", dest, err)
		}
	}
	if err := statefile.SaveJSON(filepath.Join(dir, "meta.json"), m); err != nil {
		return err
	}
	// The backup directory itself must survive a power loss before the
	// destination is replaced: without it Undo would find nothing to restore.
	for _, d := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} {
		if err := atomicfile.SyncDir(d); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	return nil
}

func readMeta(dir string) (*meta, error) {
	if dir == "" {
		return nil, nil
	}
	m := &meta{}
	ok, err := statefile.LoadJSON(filepath.Join(dir, "meta.json"), m)
	if err != nil || !ok {
		return nil, err
	}
	return m, nil
}

// restore puts the backup in dir back at dest (or removes dest when there
// was nothing), through the directory actually opened, which checkDir must
// accept: a directory swapped for a symlink since the apply never leads a
// rollback to write or delete outside the allowlist.
func restore(dest, dir string, m *meta, checkDir func(string) error) error {
	if !m.Existed {
		return remove(dest, checkDir)
	}
	src, err := os.Open(filepath.Join(dir, "content"))
	if err != nil {
		return fmt.Errorf("restore %s: %w", dest, err)
	}
	defer src.Close()
	return place(dest, src, m.Mode, [2]int{m.UID, m.GID}, checkDir)
}

// remove deletes dest inside its opened directory, if present.
func remove(dest string, checkDir func(string) error) error {
	root, err := os.OpenRoot(filepath.Dir(dest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", dest, err)
	}
	defer root.Close()
	if checkDir != nil {
		if err := checkDir(openedDir(root)); err != nil {
			return err
		}
	}
	if err := root.Remove(filepath.Base(dest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore %s: %w", dest, err)
	}
	d, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("restore %s: %w", dest, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("restore %s: sync dir: %w", dest, err)
	}
	return nil
}

// place writes src to a temp file in dest's directory (opened as an
// os.Root, so no symlink can lead the write elsewhere), sets mode and
// owner, fsyncs and renames it over dest, then fsyncs the directory.
func place(dest string, src io.Reader, mode fs.FileMode, owner [2]int, checkDir func(string) error) error {
	root, err := os.OpenRoot(filepath.Dir(dest))
	if err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	defer root.Close()
	if checkDir != nil {
		// The directory actually opened, whatever happened to the path
		// since Check, must still be inside the allowlist.
		if err := checkDir(openedDir(root)); err != nil {
			return err
		}
	}
	base := filepath.Base(dest)
	if fi, err := root.Lstat(base); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("place %s: destination is not a regular file", dest)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := ".meshanics-tmp-" + hex.EncodeToString(rnd[:]) + "-" + base
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			root.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, src); err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	if owner[0] >= 0 {
		if err := f.Chown(owner[0], owner[1]); err != nil {
			return fmt.Errorf("place %s: %w", dest, err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	if err := root.Rename(tmp, base); err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	done = true
	return atomicfile.SyncDir(filepath.Dir(dest))
}

// openedDir is the real path of the directory root holds ("" if unknown,
// which no allowlist accepts).
func openedDir(root *os.Root) string {
	d, err := root.Open(".")
	if err != nil {
		return ""
	}
	defer d.Close()
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", d.Fd()))
	if err != nil {
		return ""
	}
	return real
}

// cleanTemps removes temp files a crash left beside dest.
func cleanTemps(dest string) {
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(dest), ".meshanics-tmp-*-"+filepath.Base(dest)))
	for _, p := range m {
		os.Remove(p)
	}
}
