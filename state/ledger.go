// Package state is pophook's ledger: for every account, what each message
// on the server has been through (fetched, delivered to which sink,
// rejected, deleted). It lives in one bbolt file, ledger.db, under the data
// directory; every commit is fsynced before it returns, which is what lets
// the worker send DELE only for messages the ledger has durably recorded.
package state

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pophook/pophook/internal/atomicfile"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code writes. Older files are migrated
// on open; newer ones are refused rather than misread.
const SchemaVersion = 2

// migrations[v] upgrades a file from schema v to v+1.
var migrations = map[int]func(tx *bolt.Tx) error{
	1: rewriteEntries, // JSON entries to the compact form (codec.go)
}

// rewriteEntries stores every entry again in the current form.
func rewriteEntries(tx *bolt.Tx) error {
	return tx.Bucket(bucketAccounts).ForEachBucket(func(id []byte) error {
		msgs := tx.Bucket(bucketAccounts).Bucket(id).Bucket(bucketMessages)
		if msgs == nil {
			return nil
		}
		if err := touched(tx.Bucket(bucketAccounts).Bucket(id)); err != nil {
			return err
		}
		type kv struct{ k, v []byte }
		var all []kv
		err := msgs.ForEach(func(k, v []byte) error {
			e := &Entry{}
			if err := decodeEntry(v, e); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			all = append(all, kv{append([]byte(nil), k...), encodeEntry(e)})
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range all {
			if err := msgs.Put(r.k, r.v); err != nil {
				return err
			}
		}
		return nil
	})
}

var (
	// ErrInUse means another process holds the ledger open.
	ErrInUse = errors.New("ledger is in use by another pophook")
	// ErrCorrupt means the file cannot be read as a ledger. It is never
	// replaced by an empty one: that would re-send every message kept on
	// the servers.
	ErrCorrupt = errors.New("ledger is corrupt or unreadable")
)

var (
	bucketMeta     = []byte("meta")
	bucketAccounts = []byte("accounts")
	keySchema      = []byte("schema")
	keySalt        = []byte("salt")
	keyAccountMeta = []byte("meta")
	bucketMessages = []byte("messages")
	keyIdle        = []byte("idle")    // see IdleMark
	keyVersion     = []byte("version") // see Version
)

// Ledger is an open ledger file.
type Ledger struct {
	db   *bolt.DB
	path string
	salt []byte // keys Fingerprint
	// failed holds the refusal once damage was found: no transaction runs
	// after that, so that nothing writes over a damaged file.
	failed atomic.Pointer[error]

	// owed is the id of a PutBatch transaction that no later write
	// transaction has followed yet (0 when none): see PutBatch.
	owedMu sync.Mutex
	owed   int
}

// Err returns the refusal when the ledger was found damaged, else nil.
func (l *Ledger) Err() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// FileName is the ledger's name inside the data directory.
const FileName = "ledger.db"

// Open opens (or creates) the ledger in dataDir. A second process gets
// ErrInUse after timeout instead of waiting for ever.
func Open(dataDir string, timeout time.Duration) (*Ledger, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger: data directory: %w%s", err, accessHint(err))
	}
	path := filepath.Join(dataDir, FileName)
	// bbolt makes a new database of an empty file: for a ledger that was
	// emptied (a failed copy, a full disk during a restore) that would
	// mean every message kept on the servers sent again.
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Size() == 0:
		return nil, corrupt(path, errors.New("the file is empty"))
	case errors.Is(err, fs.ErrNotExist):
		if err := create(dataDir, path, timeout); err != nil {
			return nil, err
		}
	}
	db, err := openBolt(path, timeout)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%s: %w (waited %s): stop the other one (pophook ledger works through a running daemon), or give this one its own POPHOOK_DATA_DIR", path, ErrInUse, timeout)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		// Not corrupt: it cannot be opened for writing.
		return nil, fmt.Errorf("%s: cannot open the ledger: %w%s", path, err, accessHint(err))
	case err != nil:
		return nil, corrupt(path, err)
	}
	l := &Ledger{db: db, path: path}
	if err := l.checkSize(); err != nil {
		db.Close()
		return nil, corrupt(path, err)
	}
	// A write transaction rewrites pages even when it changes nothing, so
	// an up-to-date file is only read: opening a damaged ledger to refuse
	// it must not write to it.
	current := false
	err = l.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || tx.Bucket(bucketAccounts) == nil || string(meta.Get(keySchema)) != strconv.Itoa(SchemaVersion) || len(meta.Get(keySalt)) != 32 {
			return nil
		}
		l.salt, current = append([]byte(nil), meta.Get(keySalt)...), true
		return nil
	})
	if err == nil && !current {
		err = l.update(l.migrate)
		if err == nil {
			err = l.update(l.loadSalt)
		}
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return l, nil
}

// create makes a new ledger under a temporary name and links it into
// place complete. bbolt creates a new file and only then writes its
// first pages: a process killed in between (kill -9 at the first start)
// would leave an empty ledger.db, which Open rightly refuses, since an
// emptied ledger must not pass for a new one. A link never replaces a
// ledger another process created meanwhile. Temporary files left by a
// killed creation are removed once they are a minute old.
func create(dir, path string, timeout time.Duration) error {
	olds, _ := filepath.Glob(path + ".new-*")
	for _, old := range olds {
		if fi, err := os.Stat(old); err == nil && time.Since(fi.ModTime()) > time.Minute {
			os.Remove(old)
		}
	}
	f, err := os.CreateTemp(dir, FileName+".new-*")
	if err != nil {
		return fmt.Errorf("ledger: creating %s: %w%s", path, err, accessHint(err))
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)
	db, err := openBolt(tmp, timeout)
	if err != nil {
		return fmt.Errorf("ledger: creating %s: %w", path, err)
	}
	l := &Ledger{db: db, path: tmp}
	err = l.update(l.migrate)
	if err == nil {
		err = l.update(l.loadSalt)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ledger: creating %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("ledger: creating %s: %w%s", path, err, accessHint(err))
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("ledger: creating %s: syncing %s: %w", path, dir, err)
	}
	return nil
}

// openBolt opens the file; bbolt panics on some damage (a truncated file,
// a garbled freelist), which becomes an error here.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%v", r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
}

// checkSize refuses a file shorter than its own pages say: a truncated
// ledger, whose missing pages bbolt would otherwise read past the end of
// the file.
func (l *Ledger) checkSize() error {
	fi, err := os.Stat(l.path)
	if err != nil {
		return err
	}
	return l.view(func(tx *bolt.Tx) error {
		if want := tx.Size(); fi.Size() < want {
			return fmt.Errorf("the file has %d bytes, its pages need %d: it was cut short", fi.Size(), want)
		}
		return nil
	})
}

// corrupt is the refusal of a damaged ledger: it names the file and what
// to do, and never replaces it.
func corrupt(path string, err error) error {
	return fmt.Errorf("%s: %w: %v. pophook will not use it, nor replace it: restore it from a backup; "+
		"or, to start afresh, move it aside, knowing that every message still on the servers is then sent again", path, ErrCorrupt, err)
}

// loadSalt reads the ledger's random key for Fingerprint, making it the
// first time.
func (l *Ledger) loadSalt(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if salt := meta.Get(keySalt); len(salt) == 32 {
		l.salt = append([]byte(nil), salt...)
		return nil
	}
	l.salt = make([]byte, 32)
	rand.Read(l.salt)
	return meta.Put(keySalt, l.salt)
}

// Fingerprint condenses configuration (a sink's settings, a credential)
// into a short token to store beside a record, so that a later run can
// tell whether that configuration has changed. It is keyed with a random
// secret of this ledger, so that a fingerprint of a password stored here
// cannot be checked against guesses by someone who has only this value.
func (l *Ledger) Fingerprint(parts ...string) string {
	mac := hmac.New(sha256.New, l.salt)
	for _, p := range parts {
		mac.Write([]byte(p))
		mac.Write([]byte{0})
	}
	return hex.EncodeToString(mac.Sum(nil)[:12])
}

// accessHint says what to do about a data dir pophook cannot write.
func accessHint(err error) string {
	switch {
	case errors.Is(err, syscall.EROFS):
		return " (the data dir is on a read-only file system: give POPHOOK_DATA_DIR a writable volume)"
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf(" (the data dir must be writable by the user pophook runs as, uid %d: fix its owner or POPHOOK_DATA_DIR)", os.Getuid())
	}
	return ""
}

// Path is the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// Close closes the file.
func (l *Ledger) Close() error {
	if l.Err() == nil && !l.db.IsReadOnly() {
		if err := l.Settle(); err != nil {
			l.db.Close()
			return err
		}
	}
	return l.db.Close()
}

func (l *Ledger) migrate(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketAccounts); err != nil {
		return err
	}
	v := 0
	if raw := meta.Get(keySchema); raw != nil {
		if v, err = strconv.Atoi(string(raw)); err != nil {
			return fmt.Errorf("%w: schema version %q", ErrCorrupt, raw)
		}
	} else if tx.Bucket(bucketAccounts).Stats().KeyN == 0 {
		v = SchemaVersion // a new file
	}
	if v > SchemaVersion {
		return fmt.Errorf("ledger %s has schema %d, this pophook understands up to %d: upgrade pophook", l.path, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		m, ok := migrations[v]
		if !ok {
			return fmt.Errorf("%w: no migration from schema %d", ErrCorrupt, v)
		}
		if err := m(tx); err != nil {
			return fmt.Errorf("ledger migration from schema %d: %w", v, err)
		}
	}
	return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
}

// update and view run fn in a transaction. bbolt panics on some kinds of
// page corruption; that becomes ErrCorrupt here instead of a crash.
func (l *Ledger) update(fn func(*bolt.Tx) error) error {
	var id int
	err := l.guard(func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			id = tx.ID()
			return fn(tx)
		})
	})
	if err == nil {
		l.owedMu.Lock()
		if l.owed != 0 && id > l.owed {
			l.owed = 0
		}
		l.owedMu.Unlock()
	}
	return err
}

func (l *Ledger) view(fn func(*bolt.Tx) error) error {
	return l.guard(func() error { return l.db.View(fn) })
}

// guard runs a transaction unless the ledger was found damaged, and marks
// it so when this one finds damage.
func (l *Ledger) guard(tx func() error) (err error) {
	if err := l.Err(); err != nil {
		return err
	}
	defer func() {
		if errors.Is(err, ErrCorrupt) {
			err = corrupt(l.path, errors.New(strings.TrimPrefix(err.Error(), ErrCorrupt.Error()+": ")))
			l.failed.CompareAndSwap(nil, &err)
			err = l.Err()
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(&err)
	return tx()
}

func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	}
}

// AccountID names an account in the ledger by what identifies its mailbox,
// the server and the user, not by its name in the configuration, so that
// renaming an account does not send its mailbox again. The port is left
// out: moving from 110 to 995 is the same mailbox.
func AccountID(host, user string) string {
	return strings.ToLower(strings.TrimSuffix(host, ".")) + "\x00" + user
}

// AccountMeta is what the ledger knows about an account as a whole.
type AccountMeta struct {
	// Initialized is set after the first complete scan of the mailbox;
	// SKIP_EXISTING acts only before it.
	Initialized time.Time `json:"initialized,omitzero"`
	// Login holds a refused login's back-off, or the server's
	// LOGIN-DELAY, kept here so that `pophook once` run every minute from
	// cron honours it as the daemon does.
	Login LoginState `json:"login,omitzero"`
	// NoPipelining records a server that advertises PIPELINING but drops
	// pipelined commands; it is used lock-step from then on.
	NoPipelining bool `json:"no_pipelining,omitempty"`
}

// LoginState is the wait before the next login to an account.
type LoginState struct {
	NotBefore time.Time     `json:"not_before,omitzero"`
	Wait      time.Duration `json:"wait,omitempty"`     // how long NotBefore was set ahead; a longer wait means the clock went back
	Failures  int           `json:"failures,omitempty"` // refused logins in a row
	Reason    string        `json:"reason,omitempty"`   // what the server said last
	// Credential fingerprints the credential refused (see Fingerprint):
	// changing the password ends the back-off at once.
	Credential string `json:"credential,omitempty"`
}

// Entry is the ledger's record of one message.
type Entry struct {
	// UIDL is the server's unique id; Occurrence counts earlier messages
	// with the same UIDL in the same listing (servers that derive UIDLs
	// from content list identical messages under one id).
	UIDL       string `json:"uidl"`
	Occurrence int    `json:"occurrence,omitempty"`
	// Generation counts how often this UIDL has been delivered and deleted
	// before and then shown up again: a new message under an old id.
	Generation int `json:"generation,omitempty"`

	FirstSeen    time.Time `json:"first_seen"`
	MissingSince time.Time `json:"missing_since,omitzero"` // not listed by the server since then
	Size         int64     `json:"size"`                   // from LIST until fetched, then as fetched
	SHA256       string    `json:"sha256,omitempty"`
	Key          string    `json:"key,omitempty"` // idempotency key, set once fetched

	Sinks map[string]*SinkState `json:"sinks,omitempty"`

	Skipped  bool `json:"skipped,omitempty"`   // recorded by SKIP_EXISTING: never sent, never deleted
	TooLarge bool `json:"too_large,omitempty"` // over MAX_MESSAGE_SIZE: left on the server
	// SizeLimit is the MAX_MESSAGE_SIZE a RETR exceeded although LIST
	// gave a smaller size; the message is not fetched again while the
	// limit is no higher.
	SizeLimit int64 `json:"size_limit,omitempty"`
	// Suspect says why the message is never deleted automatically: RETR
	// gave a size far from what LIST said, as when a server substitutes
	// a notice for the message. It was delivered as served.
	Suspect   string    `json:"suspect,omitempty"`
	DeletedAt time.Time `json:"deleted_at,omitzero"` // DELE confirmed by a successful QUIT
}

// SinkState is one sink's record for one message.
type SinkState struct {
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Permanent   bool      `json:"permanent,omitempty"` // the last failure was a rejection of the message
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Config fingerprints the sink's configuration when it rejected the
	// message: a changed configuration clears the rejection.
	Config string `json:"config,omitempty"`
}

// Delivered reports whether every named sink has the message.
func (e *Entry) Delivered(sinks []string) bool {
	for _, s := range sinks {
		if st := e.Sinks[s]; st == nil || st.DeliveredAt.IsZero() {
			return false
		}
	}
	return true
}

// Sink returns the state for sink, creating it.
func (e *Entry) Sink(name string) *SinkState {
	if e.Sinks == nil {
		e.Sinks = map[string]*SinkState{}
	}
	st := e.Sinks[name]
	if st == nil {
		st = &SinkState{}
		e.Sinks[name] = st
	}
	return st
}

// ID is the entry's key in the ledger: the UIDL, and the occurrence when
// the server lists the same UIDL more than once.
func (e *Entry) ID() string { return EntryID(e.UIDL, e.Occurrence) }

// EntryID builds the key for the occurrence-th message listed under uidl.
func EntryID(uidl string, occurrence int) string {
	if occurrence == 0 {
		return uidl
	}
	// A space cannot occur in a UIDL (RFC 1939: 0x21 to 0x7E).
	return uidl + " " + strconv.Itoa(occurrence)
}

// Account is a view of one account's records.
type Account struct {
	l  *Ledger
	id []byte
}

// Account returns the view for the account id (see AccountID).
func (l *Ledger) Account(id string) *Account { return &Account{l: l, id: []byte(id)} }

func (a *Account) bucket(tx *bolt.Tx, create bool) (*bolt.Bucket, error) {
	accounts := tx.Bucket(bucketAccounts)
	if accounts == nil {
		return nil, fmt.Errorf("%w: no accounts bucket", ErrCorrupt)
	}
	if !create {
		return accounts.Bucket(a.id), nil
	}
	b, err := accounts.CreateBucketIfNotExists(a.id)
	if err != nil {
		return nil, err
	}
	_, err = b.CreateBucketIfNotExists(bucketMessages)
	return b, err
}

// Meta returns the account's metadata (zero for an account never seen).
func (a *Account) Meta() (AccountMeta, error) {
	var m AccountMeta
	err := a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		return decode(b.Get(keyAccountMeta), &m)
	})
	return m, err
}

// SetMeta stores the account's metadata.
func (a *Account) SetMeta(m AccountMeta) error {
	return a.l.update(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, true)
		if err != nil {
			return err
		}
		return put(b, keyAccountMeta, m)
	})
}

// Get returns the entries for the given ids; ids without a record are
// absent from the map.
func (a *Account) Get(ids []string) (map[string]*Entry, error) {
	var want map[string]bool
	if len(ids) > walkAbove {
		want = make(map[string]bool, len(ids))
		for _, id := range ids {
			want[id] = true
		}
	}
	return a.GetListed(ids, want)
}

// walkAbove is the number of ids above which Get reads the whole bucket
// in key order rather than search the tree for each id.
const walkAbove = 1000

// GetListed is Get for a caller that already holds the ids as a set
// (listed, which may be nil for a few ids): a listing of 100,000 messages
// then costs one map, not two.
func (a *Account) GetListed(ids []string, listed map[string]bool) (map[string]*Entry, error) {
	out := make(map[string]*Entry, len(ids))
	err := a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		msgs := b.Bucket(bucketMessages)
		var names sinkNames
		decode := func(id string, raw []byte) error {
			e := &Entry{}
			if err := decodeEntryNames(raw, e, &names); err != nil {
				return fmt.Errorf("entry %q: %w", id, err)
			}
			out[id] = e
			return nil
		}
		// Most of a large listing is on record (a poll that finds little
		// new): one pass over the bucket in key order is then cheaper than
		// a tree search per id.
		if len(ids) > walkAbove && listed != nil {
			return msgs.ForEach(func(k, v []byte) error {
				if !listed[string(k)] {
					return nil
				}
				return decode(string(k), v)
			})
		}
		for _, id := range ids {
			if raw := msgs.Get([]byte(id)); raw != nil {
				if err := decode(id, raw); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}

// ErrStopped is returned by All when told to stop.
var ErrStopped = errors.New("stopped")

// All returns every entry of the account by id. It reads the whole
// bucket in one pass, for a caller that will look most of them up (a
// poll of a large mailbox) and wants to start before it knows which;
// stop, checked as it goes, ends it early with ErrStopped.
func (a *Account) All(stop *atomic.Bool) (map[string]*Entry, error) {
	out := map[string]*Entry{}
	err := a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		var names sinkNames
		return b.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			if stop != nil && stop.Load() {
				return ErrStopped
			}
			e := &Entry{}
			if err := decodeEntryNames(v, e, &names); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			out[string(k)] = e
			return nil
		})
	})
	return out, err
}

// Put commits entries durably: when Put returns nil they survive a crash.
func (a *Account) Put(entries ...*Entry) error {
	return a.l.update(func(tx *bolt.Tx) error { return a.put(tx, nil, entries) })
}

// PutMeta is Put that stores the account's metadata in the same
// transaction.
func (a *Account) PutMeta(m AccountMeta, entries ...*Entry) error {
	return a.l.update(func(tx *bolt.Tx) error { return a.put(tx, &m, entries) })
}

// put stores entries, and m unless nil.
func (a *Account) put(tx *bolt.Tx, m *AccountMeta, entries []*Entry) error {
	b, err := a.bucket(tx, true)
	if err != nil {
		return err
	}
	if m != nil {
		if err := put(b, keyAccountMeta, *m); err != nil {
			return err
		}
	}
	if err := touched(b); err != nil {
		return err
	}
	msgs := b.Bucket(bucketMessages)
	for _, e := range entries {
		if err := msgs.Put([]byte(e.ID()), encodeEntry(e)); err != nil {
			return err
		}
	}
	return nil
}

// PutBatch is Put for the results of several deliveries at once. bbolt
// keeps two meta pages and, when the newest is damaged, opens the file at
// the transaction before it, which lacks the whole batch. So a batch is
// owed a second transaction on top of it: any later write of any account
// pays the debt, and Settle (called at the end of a run, and by Close)
// commits an empty one if none came. Once paid, both meta pages point at
// trees that hold the batch, and one damaged page costs no recorded
// delivery.
func (a *Account) PutBatch(entries ...*Entry) error { return a.putBatch(nil, entries) }

// PutBatchMeta is PutBatch that stores the account's metadata in the same
// transaction.
func (a *Account) PutBatchMeta(m AccountMeta, entries ...*Entry) error {
	return a.putBatch(&m, entries)
}

func (a *Account) putBatch(m *AccountMeta, entries []*Entry) error {
	var id int
	err := a.l.update(func(tx *bolt.Tx) error {
		id = tx.ID()
		return a.put(tx, m, entries)
	})
	if err != nil {
		return err
	}
	a.l.owedMu.Lock()
	// (A later transaction that committed in the meantime leaves the debt
	// in place: one empty commit too many, never one too few.)
	a.l.owed = max(a.l.owed, id)
	a.l.owedMu.Unlock()
	return nil
}

// Settle pays the transaction a PutBatch is owed (see there), if no later
// write has.
func (l *Ledger) Settle() error {
	l.owedMu.Lock()
	owed := l.owed != 0
	l.owedMu.Unlock()
	if !owed {
		return nil
	}
	return l.update(func(*bolt.Tx) error { return nil })
}

// Each calls fn for every entry of the account in key order.
func (a *Account) Each(fn func(*Entry) error) error {
	return a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		return b.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			e := &Entry{}
			if err := decodeEntry(v, e); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			return fn(e)
		})
	})
}

// Prune ages the entries whose message has left the server: those not in
// listed are marked missing, and removed once missing for longer than
// grace; entries listed again lose the mark. It returns how many were
// removed. The grace period keeps a record through a server's bad day (an
// empty or partial listing) so that nothing is sent twice.
//
// A first pass only reads; when nothing is to change, as at most polls,
// nothing is written (a write transaction costs an fsync).
func (a *Account) Prune(listed map[string]bool, now time.Time, grace time.Duration) (int, error) {
	action := pruneAction(listed, now, grace)
	var todo [][]byte
	err := a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		return b.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			ms, err := missingSince(v)
			if err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			if action(k, &Entry{MissingSince: ms}) != 0 {
				todo = append(todo, append([]byte(nil), k...))
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	return a.prune(todo, action)
}

// PruneKnown does what Prune does for an account whose every entry the
// caller read at the start of its run (All), without reading them all
// again: the candidates come from known, and each is read again and
// decided afresh before anything is written. Only entries known lists
// are considered, which is all of them as long as what the run added
// since is listed (a run records entries only for listed messages).
func (a *Account) PruneKnown(known map[string]*Entry, listed map[string]bool, now time.Time, grace time.Duration) (int, error) {
	action := pruneAction(listed, now, grace)
	var todo [][]byte
	for k, e := range known {
		if action([]byte(k), &Entry{MissingSince: e.MissingSince}) != 0 {
			todo = append(todo, []byte(k))
		}
	}
	slices.SortFunc(todo, bytes.Compare)
	return a.prune(todo, action)
}

// pruneAction says what a prune does with one entry: 0 nothing, 1 store
// e as changed, 2 delete it.
func pruneAction(listed map[string]bool, now time.Time, grace time.Duration) func(k []byte, e *Entry) int {
	return func(k []byte, e *Entry) int {
		switch {
		case listed[string(k)]:
			if !e.MissingSince.IsZero() {
				e.MissingSince = time.Time{}
				return 1
			}
		case e.MissingSince.IsZero():
			e.MissingSince = now
			return 1
		case now.Sub(e.MissingSince) > grace:
			return 2
		}
		return 0
	}
}

// prune applies action to the entries todo names, each read again in the
// writing transaction (it may have changed since it was chosen).
func (a *Account) prune(todo [][]byte, action func(k []byte, e *Entry) int) (int, error) {
	if len(todo) == 0 {
		return 0, nil
	}
	removed := 0
	err := a.l.update(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, true)
		if err != nil {
			return err
		}
		if err := touched(b); err != nil {
			return err
		}
		msgs := b.Bucket(bucketMessages)
		for _, k := range todo {
			v := msgs.Get(k)
			if v == nil {
				continue
			}
			e := &Entry{}
			if err := decodeEntry(v, e); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			switch action(k, e) {
			case 1:
				err = msgs.Put(k, encodeEntry(e))
			case 2:
				err = msgs.Delete(k)
				removed++
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return removed, nil
}

// touched notes, in the transaction that changes an account's entries,
// that they changed: the version goes up and the idle mark goes. Every
// write of an entry calls it.
func touched(b *bolt.Bucket) error {
	v := binary.BigEndian.AppendUint64(nil, entriesVersion(b)+1)
	if err := b.Put(keyVersion, v); err != nil {
		return err
	}
	return b.Delete(keyIdle)
}

func entriesVersion(b *bolt.Bucket) uint64 {
	if raw := b.Get(keyVersion); len(raw) == 8 {
		return binary.BigEndian.Uint64(raw)
	}
	return 0
}

// IdleMark is what a poll recorded when its complete listing needed
// nothing done: the digest of that listing (and of everything else the
// decision rested on), and the span of time [Since, Until) over which
// the same listing needs nothing done either. Any change to the
// account's entries removes it.
type IdleMark struct {
	Digest       []byte
	Since, Until time.Time
	Listed       int // messages in that listing
}

// Idle returns the account's idle mark (a zero mark when there is none)
// and the version of its entries, which counts their changes: read
// before the entries, it lets SetIdleMark tell whether they changed
// since.
func (a *Account) Idle() (m IdleMark, version uint64, err error) {
	err = a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		version = entriesVersion(b)
		raw := b.Get(keyIdle)
		if len(raw) != 24+sha256.Size {
			return nil // none, or not one this version wrote: no mark
		}
		m.Since = time.Unix(0, int64(binary.BigEndian.Uint64(raw)))
		m.Until = time.Unix(0, int64(binary.BigEndian.Uint64(raw[8:])))
		m.Listed = int(binary.BigEndian.Uint64(raw[16:]))
		m.Digest = append([]byte(nil), raw[24:]...)
		return nil
	})
	return m, version, err
}

// SetIdleMark stores m, unless the entries changed since version (from
// Idle, read before the entries the decision rested on): it reports
// whether it stored it.
func (a *Account) SetIdleMark(m IdleMark, since uint64) (bool, error) {
	if len(m.Digest) != sha256.Size {
		return false, fmt.Errorf("idle mark: digest of %d octets", len(m.Digest))
	}
	stored := false
	err := a.l.update(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, true)
		if err != nil || entriesVersion(b) != since {
			return err
		}
		raw := binary.BigEndian.AppendUint64(nil, uint64(m.Since.UnixNano()))
		raw = binary.BigEndian.AppendUint64(raw, uint64(m.Until.UnixNano()))
		raw = binary.BigEndian.AppendUint64(raw, uint64(max(m.Listed, 0)))
		stored = true
		return b.Put(keyIdle, append(raw, m.Digest...))
	})
	return stored && err == nil, err
}

// Accounts lists the ids of every account in the ledger.
func (l *Ledger) Accounts() ([]string, error) {
	var ids []string
	err := l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEachBucket(func(k []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	return ids, err
}

func put(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func decode(raw []byte, v any) error {
	if raw == nil {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

// Family returns, for each of uidls, the entries of every occurrence on
// record under it (ids "uidl" and "uidl N"), in key order. It
// is for the rare listing where one UIDL names several messages, and for
// Find.
func (a *Account) Family(uidls []string) (map[string][]*Entry, error) {
	out := make(map[string][]*Entry, len(uidls))
	err := a.l.view(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil || b == nil {
			return err
		}
		msgs := b.Bucket(bucketMessages)
		c := msgs.Cursor()
		add := func(u string, k, v []byte) error {
			e := &Entry{}
			if err := decodeEntry(v, e); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			out[u] = append(out[u], e)
			return nil
		}
		for _, u := range uidls {
			if v := msgs.Get([]byte(u)); v != nil {
				if err := add(u, []byte(u), v); err != nil {
					return err
				}
			}
			// (A hostile UIDL such as "u\x01" sorts between "u" and
			// "u 1": seek to the numbered ones directly.)
			prefix := []byte(u + " ")
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if err := add(u, k, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}

// Find returns the entries of every message listed under uidl (all its
// occurrences and generations on record).
func (a *Account) Find(uidl string) ([]*Entry, error) {
	fam, err := a.Family([]string{uidl})
	return fam[uidl], err
}

// Update changes the entry id in one transaction: fn gets the stored entry
// (or nil) and returns the one to store, or nil to delete it.
func (a *Account) Update(id string, fn func(*Entry) *Entry) error {
	return a.l.update(func(tx *bolt.Tx) error {
		b, err := a.bucket(tx, false)
		if err != nil {
			return err
		}
		if b == nil {
			_, err := a.bucket(tx, true) // so fn sees an empty account
			if err != nil {
				return err
			}
			b = tx.Bucket(bucketAccounts).Bucket(a.id)
		}
		if err := touched(b); err != nil {
			return err
		}
		msgs := b.Bucket(bucketMessages)
		var cur *Entry
		if raw := msgs.Get([]byte(id)); raw != nil {
			cur = &Entry{}
			if err := decodeEntry(raw, cur); err != nil {
				return fmt.Errorf("entry %q: %w", id, err)
			}
		}
		next := fn(cur)
		if next == nil {
			if cur == nil {
				return nil
			}
			return msgs.Delete([]byte(id))
		}
		return msgs.Put([]byte(id), encodeEntry(next))
	})
}

// Counts sums up an account's records.
type Counts struct {
	Delivered int `json:"delivered"` // to every sink, still on the server (kept)
	Deleted   int `json:"deleted"`   // delivered and deleted; kept until pruned
	Pending   int `json:"pending"`   // not yet delivered to every sink
	Failing   int `json:"failing"`   // pending after a failure that is not a rejection
	Rejected  int `json:"rejected"`  // a sink rejected it
	TooLarge  int `json:"too_large"` // over MAX_MESSAGE_SIZE
	Skipped   int `json:"skipped"`   // recorded by SKIP_EXISTING
	Suspect   int `json:"suspect"`   // delivered as sent, never deleted automatically
	Entries   int `json:"entries"`   // every record
}

// Count sums up the account's records for the given sinks (the account's
// sinks now; nil takes the sinks each entry has a record of).
func (a *Account) Count(sinks []string) (Counts, error) {
	var c Counts
	err := a.Each(func(e *Entry) error {
		c.Entries++
		want := sinks
		if want == nil {
			for s := range e.Sinks {
				want = append(want, s)
			}
		}
		rejected, failing := false, false
		for _, st := range e.Sinks {
			rejected = rejected || st.Permanent
			failing = failing || (st.DeliveredAt.IsZero() && st.LastError != "" && !st.Permanent)
		}
		switch {
		case e.Skipped:
			c.Skipped++
		case !e.DeletedAt.IsZero():
			c.Deleted++
		case e.TooLarge:
			c.TooLarge++
		case len(want) > 0 && e.Delivered(want):
			c.Delivered++
		default:
			c.Pending++
			if rejected {
				c.Rejected++
			} else if failing {
				c.Failing++
			}
		}
		if e.Suspect != "" {
			c.Suspect++
		}
		return nil
	})
	return c, err
}
