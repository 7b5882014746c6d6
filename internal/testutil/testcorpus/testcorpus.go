// Package testcorpus gives tests the corpus of real-world mail kept in
// testdata/corpus at the repository root (MIT licence, see its LICENSE).
// Every file in it must pass through pophook without loss.
package testcorpus

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// File is one corpus message.
type File struct {
	Name string // path relative to the corpus root
	Data []byte
}

// Dir returns the corpus directory: PHTEST_CORPUS if set, else
// testdata/corpus in the module root. It is part of the repository, so a
// missing corpus fails the test rather than skipping it.
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("PHTEST_CORPUS"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			corpus := filepath.Join(d, "testdata", "corpus")
			if _, err := os.Stat(corpus); err != nil {
				t.Fatalf("mail corpus: %v (it belongs to the repository; set PHTEST_CORPUS to use another)", err)
			}
			return corpus
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	t.Fatal("mail corpus: no go.mod above the working directory")
	return ""
}

// Files returns every regular file of the corpus except dotfiles, sorted
// by name.
func Files(t testing.TB) []File {
	t.Helper()
	root := Dir(t)
	var out []File
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		out = append(out, File{Name: rel, Data: data})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no files in %s", root)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CRLF returns data with every bare LF turned into CRLF, the form POP3
// servers serve; a final line without a line ending gets CRLF added.
func CRLF(data []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(data) + len(data)/20 + 2)
	for i, c := range data {
		if c == '\n' && (i == 0 || data[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(c)
	}
	if n := b.Len(); n > 0 && b.Bytes()[n-1] != '\n' {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
