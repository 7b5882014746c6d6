//go:build linux

package bench

import (
	"strings"
	"testing"
)

// TestPopCheck checks the floors' session checker on sessions written
// in pieces of every size.
func TestPopCheck(t *testing.T) {
	msg := "Subject: x\r\n\r\n..dot-stuffed\r\nbody\r\n.\r\n"
	whole := "+OK ready\r\n+OK\r\n+OK 2 messages\r\n+OK 40 octets\r\n" + msg + "+OK 40 octets\r\n" + msg + "+OK bye\r\n"
	for _, tc := range []struct {
		name    string
		session string
		want    int64
		ok      bool
	}{
		{"whole", whole, 40, true},
		{"too few bytes", whole, 1000, false},
		{"cut off", whole[:len(whole)-30], 0, false},
		{"refused", strings.Replace(whole, "+OK 2 messages", "-ERR no", 1), 0, false},
		{"RETR refused", strings.Replace(whole, "+OK 40 octets\r\n"+msg+"+OK bye", "-ERR gone\r\n+OK bye", 1), 0, false},
	} {
		for _, step := range []int{1, 2, 3, 7, len(tc.session)} {
			pc := &popCheck{pre: 3, retrs: 2}
			for s := tc.session; s != ""; {
				k := min(step, len(s))
				pc.Write([]byte(s[:k]))
				s = s[k:]
			}
			if err := pc.verify(2, tc.want); (err == nil) != tc.ok {
				t.Errorf("%s, in pieces of %d: verify = %v, want ok %v", tc.name, step, err, tc.ok)
			}
		}
	}
}
