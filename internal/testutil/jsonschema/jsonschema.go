// Package jsonschema checks a decoded JSON value against the subset of
// JSON Schema 2020-12 that docs/webhook.schema.json uses: enough for the
// tests to hold pophook's payloads and the documented example to the
// published schema without a dependency. A keyword it does not know is an
// error, so the schema cannot grow past what is checked unnoticed.
// docs/receiver's TestValidatorHasTeeth shows it refuses broken payloads.
package jsonschema

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Validator holds a schema document; $ref resolves into its $defs.
type Validator struct{ root map[string]any }

// New returns a validator for the decoded schema document root.
func New(root map[string]any) Validator { return Validator{root: root} }

// Load reads and decodes the schema document at path.
func Load(path string) (Validator, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Validator{}, err
	}
	var root map[string]any
	if err := json.Unmarshal(b, &root); err != nil {
		return Validator{}, fmt.Errorf("%s: %w", path, err)
	}
	return New(root), nil
}

// Validate returns what in value breaks the schema, one line each, with
// the JSON path ("$.data.from"); none when it matches.
func (v Validator) Validate(value any) []string { return v.validate(v.root, value, "$") }

var (
	annotations = map[string]bool{"$schema": true, "$id": true, "$defs": true, "title": true, "description": true, "contentMediaType": true}
	patterns    sync.Map // pattern -> *regexp.Regexp
)

func (v Validator) validate(schema map[string]any, value any, path string) (errs []string) {
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	for keyword, arg := range schema {
		switch keyword {
		case "$ref":
			ref := strings.TrimPrefix(arg.(string), "#/$defs/")
			def, ok := v.root["$defs"].(map[string]any)[ref].(map[string]any)
			if !ok {
				fail("unresolved $ref %v", arg)
				continue
			}
			errs = append(errs, v.validate(def, value, path)...)
		case "type":
			if !hasType(value, arg.(string)) {
				fail("%v is not of type %s", clipAny(value), arg)
			}
		case "const":
			if value != arg {
				fail("%v is not %v", clipAny(value), arg)
			}
		case "enum":
			if !slices.Contains(arg.([]any), value) {
				fail("%v is not one of %v", clipAny(value), arg)
			}
		case "required":
			if obj, ok := value.(map[string]any); ok {
				for _, name := range arg.([]any) {
					if _, ok := obj[name.(string)]; !ok {
						fail("%s missing", name)
					}
				}
			}
		case "properties":
			if obj, ok := value.(map[string]any); ok {
				for name, sub := range arg.(map[string]any) {
					if pv, ok := obj[name]; ok {
						errs = append(errs, v.validate(sub.(map[string]any), pv, path+"."+name)...)
					}
				}
			}
		case "additionalProperties":
			if arg != false {
				fail("additionalProperties other than false not supported")
			}
			known := schema["properties"].(map[string]any)
			if obj, ok := value.(map[string]any); ok {
				for name := range obj {
					if _, ok := known[name]; !ok {
						fail("unexpected property %s", name)
					}
				}
			}
		case "items":
			if arr, ok := value.([]any); ok {
				for i, item := range arr {
					errs = append(errs, v.validate(arg.(map[string]any), item, fmt.Sprintf("%s[%d]", path, i))...)
				}
			}
		case "anyOf":
			var all []string
			for _, sub := range arg.([]any) {
				e := v.validate(sub.(map[string]any), value, path)
				if len(e) == 0 {
					all = nil
					break
				}
				all = append(all, e...)
			}
			if all != nil {
				fail("matches none of anyOf: %s", strings.Join(all, "; "))
			}
		case "pattern":
			re, _ := patterns.Load(arg)
			if re == nil {
				re = regexp.MustCompile(arg.(string))
				patterns.Store(arg, re)
			}
			if s, ok := value.(string); ok && !re.(*regexp.Regexp).MatchString(s) {
				fail("%q does not match %s", clip(s, 80), arg)
			}
		case "minLength":
			if s, ok := value.(string); ok && float64(utf8.RuneCountInString(s)) < arg.(float64) {
				fail("%q shorter than %v", s, arg)
			}
		case "minimum":
			if n, ok := value.(float64); ok && n < arg.(float64) {
				fail("%v below %v", n, arg)
			}
		case "format":
			if arg != "date-time" {
				fail("format %v not supported", arg)
			} else if s, ok := value.(string); ok {
				if _, err := time.Parse(time.RFC3339, s); err != nil {
					fail("%q is not a date-time", s)
				}
			}
		case "contentEncoding":
			if arg != "base64" {
				fail("contentEncoding %v not supported", arg)
			} else if s, ok := value.(string); ok {
				if _, err := base64.StdEncoding.DecodeString(s); err != nil {
					fail("not base64: %v", err)
				}
			}
		default:
			if !annotations[keyword] {
				fail("schema keyword %q not supported by this test", keyword)
			}
		}
	}
	return errs
}

func hasType(value any, typ string) bool {
	switch typ {
	case "object":
		_, ok := value.(map[string]any)
		return ok
	case "array":
		_, ok := value.([]any)
		return ok
	case "string":
		_, ok := value.(string)
		return ok
	case "integer":
		n, ok := value.(float64)
		return ok && n == float64(int64(n))
	case "boolean":
		_, ok := value.(bool)
		return ok
	case "null":
		return value == nil
	}
	return false
}

func clipAny(v any) string { return clip(fmt.Sprint(v), 80) }

// clip cuts s to at most n bytes on a rune boundary, for readable errors.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
