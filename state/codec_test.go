package state

import (
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func randomEntry(rng *rand.Rand) *Entry {
	str := func() string {
		if rng.IntN(3) == 0 {
			return ""
		}
		b := make([]byte, rng.IntN(80))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	tm := func() time.Time {
		switch rng.IntN(4) {
		case 0:
			return time.Time{}
		case 1:
			return time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC)
		case 2:
			return time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
		}
		return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
	}
	e := &Entry{UIDL: str(), Occurrence: rng.IntN(3), Generation: rng.IntN(3) - 1, FirstSeen: tm(), MissingSince: tm(),
		Size: rng.Int64() - rng.Int64(), SHA256: str(), Key: str(), Skipped: rng.IntN(2) == 0, TooLarge: rng.IntN(2) == 0,
		SizeLimit: rng.Int64N(1 << 40), Suspect: str(), DeletedAt: tm()}
	for range rng.IntN(4) {
		st := e.Sink(str())
		*st = SinkState{DeliveredAt: tm(), Attempts: rng.IntN(100), LastError: str(), Permanent: rng.IntN(2) == 0,
			NextAttempt: tm(), Config: str()}
	}
	return e
}

// Every entry survives the compact form exactly.
func TestEntryRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		e := randomEntry(rng)
		raw := encodeEntry(e)
		got := &Entry{}
		if err := decodeEntry(raw, got); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !reflect.DeepEqual(e, got) {
			t.Fatalf("entry %d:\n got %+v\nwant %+v", i, got, e)
		}
		// Cut anywhere, it is refused, never misread.
		if n := rng.IntN(len(raw)); n > 0 {
			if err := decodeEntry(raw[:n], &Entry{}); err == nil {
				t.Fatalf("entry %d cut to %d of %d bytes decoded", i, n, len(raw))
			}
		}
	}
}

// A schema 1 ledger (JSON entries) opens, reads the same, and is stored
// in the compact form from then on.
func TestMigrateFromJSON(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Entry{UIDL: "u1", FirstSeen: time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC), Size: 1234, Key: "ph1_x",
		Sinks: map[string]*SinkState{"hook": {DeliveredAt: time.Date(2026, 11, 1, 8, 0, 1, 5, time.UTC)}}}
	id := AccountID("pop.example.com", "alice")
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(bucketMeta)
		meta.Put(keySchema, []byte("1"))
		acct, _ := tx.CreateBucket(bucketAccounts)
		b, _ := acct.CreateBucket([]byte(id))
		msgs, _ := b.CreateBucket(bucketMessages)
		raw, _ := json.Marshal(want)
		return msgs.Put([]byte("u1"), raw)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Account(id).Get([]string{"u1"})
	if err != nil || !reflect.DeepEqual(got["u1"], want) {
		t.Fatalf("after migration: %+v %v", got["u1"], err)
	}
	l.view(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketAccounts).Bucket([]byte(id)).Bucket(bucketMessages).Get([]byte("u1"))
		if raw[0] != entryFormat {
			t.Errorf("entry still stored as %q", raw)
		}
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != "2" {
			t.Errorf("schema %s", v)
		}
		return nil
	})
	l.Close()
}

func FuzzDecodeEntry(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		f.Add(encodeEntry(randomEntry(rng)))
	}
	f.Add([]byte(`{"uidl":"x"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e := &Entry{}
		ms, msErr := missingSince(raw)
		if err := decodeEntry(raw, e); err == nil && (msErr != nil || !ms.Equal(e.MissingSince)) {
			t.Fatalf("missingSince %v %v, decode %v", ms, msErr, e.MissingSince)
		}
		if decodeEntry(raw, &Entry{}) != nil || len(raw) == 0 || raw[0] != entryFormat {
			return
		}
		// What decodes encodes back to the same entry.
		again := &Entry{}
		if err := decodeEntry(encodeEntry(e), again); err != nil || !reflect.DeepEqual(e, again) {
			t.Fatalf("re-encoding changed the entry: %v\n%+v\n%+v", err, e, again)
		}
	})
}

// missingSince reads what a full decode reads.
func TestMissingSince(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 5000 {
		e := randomEntry(rng)
		got, err := missingSince(encodeEntry(e))
		if err != nil || !got.Equal(e.MissingSince) {
			t.Fatalf("entry %d: %v %v, want %v", i, got, err, e.MissingSince)
		}
	}
}
