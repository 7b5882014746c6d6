package maildir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

var _ interface {
	Check(context.Context, bool) (string, error)
} = (*Sink)(nil)

// Check tests that a message can be stored: a file can be made and removed
// in tmp/.
func (s *Sink) Check(ctx context.Context, _ bool) (string, error) {
	return Check(s.dir)
}

// Check tests dir without creating anything: an existing Maildir must let
// a file be made in its tmp/; a missing one must have a writable parent,
// so that pophook can create it at start.
func Check(dir string) (string, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		parent := filepath.Dir(dir)
		for {
			if _, err := os.Stat(parent); err == nil || filepath.Dir(parent) == parent {
				break
			}
			parent = filepath.Dir(parent)
		}
		if err := writable(parent); err != nil {
			return "", fmt.Errorf("maildir %s does not exist and cannot be created in %s%s: %w", dir, parent, hint(err), err)
		}
		return fmt.Sprintf("%s does not exist yet; pophook will create it", dir), nil
	}
	if err != nil {
		return "", fmt.Errorf("maildir %s%s: %w", dir, hint(err), err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("maildir %s is not a directory", dir)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err == nil && !fi.IsDir() {
			return "", fmt.Errorf("maildir %s: %s is not a directory", dir, sub)
		}
	}
	target := filepath.Join(dir, "tmp")
	if _, err := os.Stat(target); err != nil {
		target = dir
	}
	if err := writable(target); err != nil {
		return "", fmt.Errorf("maildir %s cannot be written%s: %w", dir, hint(err), err)
	}
	return fmt.Sprintf("%s is writable", dir), nil
}

// writable makes and removes a file in dir.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".pophook-check-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
