package state

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// filled is a closed ledger with some entries; it returns the file's
// path and bytes.
func filled(t *testing.T) (dir, path string, good []byte) {
	t.Helper()
	dir = t.TempDir()
	l, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := l.Account(AccountID("pop.example.com", "alice"))
	for i := range 300 {
		e := &Entry{UIDL: strings.Repeat("u", 40) + string(rune('a'+i%26)) + strings.Repeat("x", i%50), FirstSeen: time.Now(), Size: int64(i)}
		e.Sink("hook").DeliveredAt = time.Now()
		if err := a.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	path = filepath.Join(dir, FileName)
	good, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return dir, path, good
}

// A damaged ledger is refused with the file named and what to do, and
// left exactly as it was: never taken for an empty one, never a panic.
func TestDamagedLedgerRefused(t *testing.T) {
	for name, damage := range map[string]func([]byte) []byte{
		"empty":     func([]byte) []byte { return nil },
		"truncated": func(b []byte) []byte { return b[:len(b)/4] }, // the file is twice its pages here
		"garbage meta pages": func(b []byte) []byte {
			for i := 0; i < 8192 && i < len(b); i++ {
				b[i] ^= 0x5a
			}
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir, path, good := filled(t)
			bad := damage(bytes.Clone(good))
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Open(dir, time.Second)
			if err == nil {
				l.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "restore it from a backup") {
				t.Errorf("refusal: %v", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, bad) {
				t.Error("the damaged file was changed")
			}
		})
	}
}

// Damage found by a transaction stops every later one, so that nothing
// writes over it, and opening an up-to-date ledger writes nothing.
func TestDamageFoundLaterStopsWrites(t *testing.T) {
	dir, path, good := filled(t)
	l, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if after, _ := os.ReadFile(path); !bytes.Equal(after, good) {
		t.Fatal("opening the ledger wrote to it")
	}
	a := l.Account(AccountID("pop.example.com", "alice"))
	l.update(func(tx *bolt.Tx) error { // a record that does not decode
		return tx.Bucket(bucketAccounts).Bucket(a.id).Bucket(bucketMessages).Put([]byte("bad"), []byte{entryFormat, 99})
	})
	if _, err := a.Get([]string{"bad"}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("reading the damaged record: %v", err)
	}
	if err := a.Put(&Entry{UIDL: "new"}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a write after the damage was found: %v", err)
	}
	if l.Err() == nil {
		t.Error("Err is nil after damage was found")
	}
}
