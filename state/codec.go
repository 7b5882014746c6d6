package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Entries are stored in a compact binary form: an idle poll of a mailbox
// that keeps 100,000 messages looks every one of them up, and decoding
// JSON made that the largest cost of the poll. A record starts with
// entryFormat; then tagged fields, each a tag (uvarint) and a value of
// the tag's type, ending with tag 0; zero values are left out. Schema 1
// stored JSON, which starts with '{' and is still read (see migrate).
//
// A new field gets a new tag. A reader that meets a tag it does not know
// refuses the record as corrupt, so adding one needs a schema version.
const entryFormat = 0x01

// Entry tags.
const (
	tagEnd = iota
	tagUIDL
	tagOccurrence
	tagGeneration
	tagFirstSeen
	tagMissingSince
	tagSize
	tagSHA256
	tagKey
	tagSink // a sink's name, then its own tagged fields up to tagEnd
	tagSkipped
	tagTooLarge
	tagSizeLimit
	tagSuspect
	tagDeletedAt
)

// SinkState tags.
const (
	sinkDeliveredAt = iota + 1
	sinkAttempts
	sinkLastError
	sinkPermanent
	sinkNextAttempt
	sinkConfig
)

var errRecord = errors.New("malformed record")

func encodeEntry(e *Entry) []byte {
	b := make([]byte, 0, 192)
	b = append(b, entryFormat)
	b = appendString(b, tagUIDL, e.UIDL)
	b = appendInt(b, tagOccurrence, int64(e.Occurrence))
	b = appendInt(b, tagGeneration, int64(e.Generation))
	b = appendTime(b, tagFirstSeen, e.FirstSeen)
	b = appendTime(b, tagMissingSince, e.MissingSince)
	b = appendInt(b, tagSize, e.Size)
	b = appendString(b, tagSHA256, e.SHA256)
	b = appendString(b, tagKey, e.Key)
	for _, name := range slices.Sorted(maps.Keys(e.Sinks)) {
		st := e.Sinks[name]
		if st == nil {
			continue
		}
		b = binary.AppendUvarint(b, tagSink)
		b = appendRaw(b, name)
		b = appendTime(b, sinkDeliveredAt, st.DeliveredAt)
		b = appendInt(b, sinkAttempts, int64(st.Attempts))
		b = appendString(b, sinkLastError, st.LastError)
		b = appendBool(b, sinkPermanent, st.Permanent)
		b = appendTime(b, sinkNextAttempt, st.NextAttempt)
		b = appendString(b, sinkConfig, st.Config)
		b = binary.AppendUvarint(b, tagEnd)
	}
	b = appendBool(b, tagSkipped, e.Skipped)
	b = appendBool(b, tagTooLarge, e.TooLarge)
	b = appendInt(b, tagSizeLimit, e.SizeLimit)
	b = appendString(b, tagSuspect, e.Suspect)
	b = appendTime(b, tagDeletedAt, e.DeletedAt)
	return binary.AppendUvarint(b, tagEnd)
}

func appendRaw(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendString(b []byte, tag uint64, s string) []byte {
	if s == "" {
		return b
	}
	return appendRaw(binary.AppendUvarint(b, tag), s)
}

func appendInt(b []byte, tag uint64, v int64) []byte {
	if v == 0 {
		return b
	}
	return binary.AppendVarint(binary.AppendUvarint(b, tag), v)
}

func appendBool(b []byte, tag uint64, v bool) []byte {
	if !v {
		return b
	}
	return binary.AppendUvarint(b, tag)
}

// appendTime stores seconds and nanoseconds apart, so that every time a
// time.Time can hold survives (UnixNano overflows outside 1678-2262).
func appendTime(b []byte, tag uint64, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = binary.AppendVarint(binary.AppendUvarint(b, tag), t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// decoder reads a record; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.varint()
	if int64(int(v)) != v {
		d.err = errRecord
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errRecord
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= 1e9 {
		d.err = errRecord
	}
	if d.err != nil {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *decoder) skip() {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errRecord
	}
	if d.err == nil {
		d.b = d.b[n:]
	}
}

// missingSince reads only an entry's MissingSince, allocating nothing: the
// prune pass over every entry needs no more.
func missingSince(raw []byte) (time.Time, error) {
	if len(raw) == 0 || raw[0] != entryFormat {
		e := &Entry{}
		err := decodeEntry(raw, e)
		return e.MissingSince, err
	}
	// The whole record is read, as decodeEntry reads it: a record it
	// refuses is refused here too, and a repeated field counts as it does
	// there, by its last value.
	d := &decoder{b: raw[1:]}
	var since time.Time
	for d.err == nil {
		switch tag := d.uvarint(); tag {
		case tagEnd:
			if d.err == nil && len(d.b) != 0 {
				d.err = errRecord
			}
			if d.err != nil {
				break
			}
			return since, nil
		case tagMissingSince:
			since = d.time()
		case tagUIDL, tagSHA256, tagKey, tagSuspect:
			d.skip()
		case tagOccurrence, tagGeneration, tagSize, tagSizeLimit:
			d.varint()
		case tagFirstSeen, tagDeletedAt:
			d.time()
		case tagSink:
			d.skip()
			d.sink(&SinkState{})
		case tagSkipped, tagTooLarge:
		default:
			d.err = fmt.Errorf("unknown field %d", tag)
		}
	}
	return time.Time{}, fmt.Errorf("%w: %w", ErrCorrupt, d.err)
}

func decodeEntry(raw []byte, e *Entry) error { return decodeEntryNames(raw, e, nil) }

// sinkNames interns sink names across the entries of one read: an account
// has a handful of sinks and many entries.
type sinkNames []string

func (n *sinkNames) intern(b []byte) string {
	if n == nil {
		return string(b)
	}
	for _, s := range *n {
		if s == string(b) {
			return s
		}
	}
	s := string(b)
	if len(*n) < 16 {
		*n = append(*n, s)
	}
	return s
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errRecord
	}
	if d.err != nil {
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func decodeEntryNames(raw []byte, e *Entry, names *sinkNames) error {
	if len(raw) > 0 && raw[0] == '{' {
		return decode(raw, e) // schema 1
	}
	if len(raw) == 0 || raw[0] != entryFormat {
		return fmt.Errorf("%w: unknown record format", ErrCorrupt)
	}
	d := &decoder{b: raw[1:]}
	for d.err == nil {
		switch tag := d.uvarint(); tag {
		case tagEnd:
			if d.err == nil && len(d.b) != 0 {
				d.err = errRecord
			}
			if d.err != nil {
				return fmt.Errorf("%w: %w", ErrCorrupt, d.err)
			}
			return nil
		case tagUIDL:
			e.UIDL = d.string()
		case tagOccurrence:
			e.Occurrence = d.int()
		case tagGeneration:
			e.Generation = d.int()
		case tagFirstSeen:
			e.FirstSeen = d.time()
		case tagMissingSince:
			e.MissingSince = d.time()
		case tagSize:
			e.Size = d.varint()
		case tagSHA256:
			e.SHA256 = d.string()
		case tagKey:
			e.Key = d.string()
		case tagSink:
			name := names.intern(d.bytes())
			st := &SinkState{}
			d.sink(st)
			if e.Sinks == nil {
				e.Sinks = map[string]*SinkState{}
			}
			e.Sinks[name] = st
		case tagSkipped:
			e.Skipped = true
		case tagTooLarge:
			e.TooLarge = true
		case tagSizeLimit:
			e.SizeLimit = d.varint()
		case tagSuspect:
			e.Suspect = d.string()
		case tagDeletedAt:
			e.DeletedAt = d.time()
		default:
			d.err = fmt.Errorf("unknown field %d", tag)
		}
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, d.err)
}

func (d *decoder) sink(st *SinkState) {
	for d.err == nil {
		switch tag := d.uvarint(); tag {
		case tagEnd:
			return
		case sinkDeliveredAt:
			st.DeliveredAt = d.time()
		case sinkAttempts:
			st.Attempts = d.int()
		case sinkLastError:
			st.LastError = d.string()
		case sinkPermanent:
			st.Permanent = true
		case sinkNextAttempt:
			st.NextAttempt = d.time()
		case sinkConfig:
			st.Config = d.string()
		default:
			d.err = fmt.Errorf("unknown sink field %d", tag)
		}
	}
}
