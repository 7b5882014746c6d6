package smtp

import (
	"context"
	"fmt"
	"strings"
)

// Check connects, starts TLS, logs in and quits: what a delivery does
// before MAIL FROM.
func (s *Sink) Check(ctx context.Context, _ bool) (string, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return "", err
	}
	defer c.c.Close()
	var parts []string
	if st, ok := c.c.TLSConnectionState(); ok {
		parts = append(parts, "TLS "+tlsVersion(st.Version))
	} else {
		parts = append(parts, "no TLS")
	}
	if s.o.Username != "" {
		parts = append(parts, "logged in as "+s.o.Username)
	}
	for _, ext := range []string{"8BITMIME", "SMTPUTF8", "SIZE"} {
		if ok, arg := c.c.Extension(ext); ok {
			parts = append(parts, strings.TrimSpace(ext+" "+arg))
		}
	}
	c.c.Quit()
	return fmt.Sprintf("%s answers: %s", s.addr, strings.Join(parts, ", ")), nil
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0304:
		return "1.3"
	case 0x0303:
		return "1.2"
	}
	return fmt.Sprintf("0x%04x", v)
}
