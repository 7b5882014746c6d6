package payload

import (
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// zones are the zone names RFC 5322 section 4.3 defines, plus a few that
// senders in the regions pophook serves put there.
var zones = map[string]int{
	"UT": 0, "UTC": 0, "GMT": 0, "Z": 0,
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
	"JST": 9, "KST": 9, "HKT": 8, "SGT": 8, "AWST": 8, "CET": 1, "CEST": 2, "MET": 1, "MEST": 2,
	"EET": 2, "EEST": 3, "WET": 0, "WEST": 1, "BST": 1, "MSK": 3, "AEST": 10, "AEDT": 11, "NZST": 12,
}

var (
	commentRE    = regexp.MustCompile(`\([^()]*\)`)
	zoneRE       = regexp.MustCompile(`\s([A-Za-z][A-Za-z0-9]{0,5}|[+-]\d{4})$`)
	colonSpaceRE = regexp.MustCompile(`\s*:\s*`)
)

// parseDate reads a Date value tolerantly and returns it as RFC 3339 with
// the sender's offset. A date without a usable zone is read as UTC and
// reported; a value that is no date at all gives "" and a problem.
func parseDate(v string) (string, string) {
	s := strings.Join(strings.Fields(commentRE.ReplaceAllString(v, "")), " ")
	s = colonSpaceRE.ReplaceAllString(s, ":")
	if s == "" {
		return "", "empty date"
	}
	if t, err := mail.ParseDate(s); err == nil {
		if name, off := t.Zone(); off == 0 && name != "" && name != "UTC" && !strings.HasPrefix(name, "+") && !strings.HasPrefix(name, "-") {
			if h, ok := zones[strings.ToUpper(name)]; ok {
				t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.FixedZone("", h*3600))
			} else {
				t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
			}
		}
		return format(t), ""
	}
	// Strip a leading day name and whatever zone the value has, then try
	// the layouts senders use.
	if i := strings.IndexByte(s, ','); i >= 0 && i < 12 {
		s = strings.TrimSpace(s[i+1:])
	}
	zone := ""
	if m := zoneRE.FindStringSubmatch(s); m != nil {
		zone = m[1]
		s = strings.TrimSpace(s[:len(s)-len(m[0])])
	}
	loc, zoneOK := zoneLocation(zone)
	for _, layout := range []string{
		"2 Jan 2006 15:04:05", "2 Jan 2006 15:04", "2 Jan 06 15:04:05", "2 Jan 06 15:04",
		"Mon Jan 2 15:04:05 2006", "Jan 2 15:04:05 2006", "Jan 2 2006 15:04:05",
		"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006/01/02 15:04:05",
		"2-Jan-2006 15:04:05", "02.01.2006 15:04:05", "2 January 2006 15:04:05",
		"Mon, 2 Jan 2006 15:04:05", "Monday, 2 Jan 2006 15:04:05", "Mon Jan 2 15:04:05 MST 2006",
	} {
		t, err := time.ParseInLocation(layout, s, loc)
		if err != nil {
			continue
		}
		if !zoneOK {
			return format(t), "date " + strconv.Quote(clip(v, 60)) + " has no valid time zone; read as UTC"
		}
		return format(t), ""
	}
	if t, err := time.Parse(time.RFC3339, strings.TrimSpace(v)); err == nil {
		return format(t), ""
	}
	return "", "could not parse date " + strconv.Quote(clip(v, 60))
}

func zoneLocation(z string) (*time.Location, bool) {
	if z == "" {
		return time.UTC, false
	}
	if z[0] == '+' || z[0] == '-' {
		h, _ := strconv.Atoi(z[1:3])
		m, _ := strconv.Atoi(z[3:5])
		off := h*3600 + m*60
		if z[0] == '-' {
			off = -off
		}
		return time.FixedZone("", off), true
	}
	if h, ok := zones[strings.ToUpper(z)]; ok {
		return time.FixedZone("", h*3600), true
	}
	return time.UTC, false
}

func format(t time.Time) string { return t.Format(time.RFC3339) }
