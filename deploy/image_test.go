// Package deploy_test checks the container image recipe and the deployment
// files (compose, systemd, Kubernetes) against each other and against
// pophook itself, since no Docker engine is at hand to build the image:
//
//   - the Dockerfile's go build line is read from the Dockerfile and run
//     as it stands, on the build context .dockerignore leaves, so the
//     flags tested are the flags shipped;
//   - the binary must be static (no ELF interpreter, no DT_NEEDED),
//     stripped, and stamped with VERSION and COMMIT;
//   - it runs in an empty root holding only what the image adds to it
//     (the binary, the CA bundle, /tmp and the data dir), chrooted, as uid
//     65532: version, healthcheck against a /readyz, and the demo;
//   - the manifests parse, name only variables pophook knows, and their
//     configuration passes pophook's own configuration check.
//
// The chroot and the uid switch need root: without it those tests skip,
// and under CI=true they fail.
package deploy_test

import (
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	imageUID = 65532              // distroless's nonroot
	dataDir  = "/var/lib/pophook" // the image's VOLUME and POPHOOK_DATA_DIR

	// What the test passes as the VERSION and COMMIT build arguments.
	testVersion = "v0.0.0-imagetest"
	testCommit  = "0123456789ab"

	// Where distroless (Debian's ca-certificates) keeps the CA bundle, and
	// the first place Go's crypto/x509 looks on Linux.
	caBundle = "/etc/ssl/certs/ca-certificates.crt"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found above deploy/: %v", err)
	}
	return root
}

// requireRoot skips without root, and fails under CI=true, where a skip
// would hide a test that never ran.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "needs root: " + why
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: this must run, not skip)")
	}
	t.Skip(msg)
}

// ---------------------------------------------------------------- Dockerfile

type instruction struct {
	Line int
	Cmd  string // upper case: FROM, RUN, COPY...
	Args string // the rest, continuation lines joined
}

type stage struct {
	Base, Name, Platform string
	Instrs               []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Instrs {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// one returns the stage's only cmd instruction.
func (s stage) one(t *testing.T, cmd string) instruction {
	t.Helper()
	ins := s.all(cmd)
	if len(ins) != 1 {
		t.Fatalf("Dockerfile: stage %s has %d %s instructions, want 1", s.Base, len(ins), cmd)
	}
	return ins[0]
}

// parseDockerfile splits the Dockerfile into stages of instructions, the
// way Docker reads it: comment lines are dropped (also inside a
// continuation), a trailing backslash continues the line.
func parseDockerfile(t *testing.T, file string) []stage {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages []stage
		parts  []string
		start  int
	)
	flush := func() {
		text := strings.Join(parts, " ")
		parts = nil
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			st := stage{}
			fields := strings.Fields(in.Args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				if v, ok := strings.CutPrefix(fields[0], "--platform="); ok {
					st.Platform = v
				}
				fields = fields[1:]
			}
			switch {
			case len(fields) == 1:
				st.Base = fields[0]
			case len(fields) == 3 && strings.EqualFold(fields[1], "AS"):
				st.Base, st.Name = fields[0], fields[2]
			default:
				t.Fatalf("Dockerfile:%d: cannot read FROM %s", start, in.Args)
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			if in.Cmd == "ARG" {
				return // a global ARG before the first FROM
			}
			t.Fatalf("Dockerfile:%d: %s before FROM", start, in.Cmd)
		}
		stages[len(stages)-1].Instrs = append(stages[len(stages)-1].Instrs, in)
	}
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if parts == nil {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			parts = append(parts, strings.TrimSpace(body))
			continue
		}
		parts = append(parts, trimmed)
		flush()
	}
	if parts != nil {
		t.Fatalf("Dockerfile:%d: the last instruction ends with a backslash", start)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a builder and a final stage", len(stages))
	}
	return stages
}

// shellWords splits a RUN or ENV line into words as sh would, expanding
// $NAME and ${NAME} with lookup. Anything that would make the line more
// than one simple command (;, &&, |, redirections, $(...), backquotes,
// ${NAME:-default}) is refused, so that the build line stays something
// this test runs faithfully.
func shellWords(s string, lookup func(string) (string, error)) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	end := func() {
		if inWord {
			words = append(words, cur.String())
		}
		cur.Reset()
		inWord = false
	}
	expand := func(i int) (int, error) { // s[i] == '$'
		rest := s[i+1:]
		var name string
		switch {
		case strings.HasPrefix(rest, "{"):
			j := strings.IndexByte(rest, '}')
			if j < 0 {
				return 0, fmt.Errorf("unterminated ${ in %q", s)
			}
			name = rest[1:j]
			i += j + 2
		default:
			j := 0
			for j < len(rest) && (rest[j] == '_' || rest[j] >= 'A' && rest[j] <= 'Z' || rest[j] >= 'a' && rest[j] <= 'z' || j > 0 && rest[j] >= '0' && rest[j] <= '9') {
				j++
			}
			if j == 0 {
				return 0, fmt.Errorf("unsupported $ expression in %q", s)
			}
			name = rest[:j]
			i += j + 1
		}
		if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) {
			return 0, fmt.Errorf("unsupported expansion ${%s}", name)
		}
		v, err := lookup(name)
		if err != nil {
			return 0, err
		}
		cur.WriteString(v)
		inWord = true
		return i, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			end()
			i++
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(s) {
					return nil, fmt.Errorf(`unterminated " in %q`, s)
				}
				c := s[i]
				if c == '"' {
					i++
					break
				}
				switch {
				case c == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
					cur.WriteByte(s[i+1])
					i += 2
				case c == '$':
					var err error
					if i, err = expand(i); err != nil {
						return nil, err
					}
				case c == '`':
					return nil, fmt.Errorf("command substitution in %q", s)
				default:
					cur.WriteByte(c)
					i++
				}
			}
		case c == '$':
			var err error
			if i, err = expand(i); err != nil {
				return nil, err
			}
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			inWord = true
			i += 2
		case strings.IndexByte(";&|<>()`", c) >= 0:
			return nil, fmt.Errorf("%q is not one simple command (found %q)", s, c)
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	end()
	return words, nil
}

// recipe is what the test takes from the Dockerfile.
type recipe struct {
	Build, Final stage
	// The go build command with the test's VERSION and COMMIT and this
	// machine's GOOS and GOARCH for TARGETOS and TARGETARCH.
	Env    []string // NAME=value before the command
	Args   []string // after "go build"
	Out    string   // the -o path in the builder
	Ldflag string   // the -ldflags value
	// The final stage's ENV.
	ImageEnv []string
}

func readRecipe(t *testing.T) recipe {
	t.Helper()
	stages := parseDockerfile(t, filepath.Join(repoRoot(t), "Dockerfile"))
	r := recipe{Final: stages[len(stages)-1]}

	// The stage the binary is copied from is the builder.
	var from string
	for _, in := range r.Final.all("COPY") {
		f := strings.Fields(in.Args)
		if f[len(f)-1] == "/pophook" {
			for _, flag := range f {
				if v, ok := strings.CutPrefix(flag, "--from="); ok {
					from = v
				}
			}
		}
	}
	if from == "" {
		t.Fatal("Dockerfile: no COPY --from=... /pophook in the final stage")
	}
	for _, st := range stages {
		if st.Name == from {
			r.Build = st
		}
	}
	if r.Build.Base == "" {
		t.Fatalf("Dockerfile: no stage named %q", from)
	}

	// ARGs of the builder, with the values a build of this test gets.
	args := map[string]*string{}
	for _, in := range r.Build.all("ARG") {
		for _, a := range strings.Fields(in.Args) {
			name, def, ok := strings.Cut(a, "=")
			if ok {
				args[name] = &def
			} else {
				args[name] = nil
			}
		}
	}
	given := map[string]string{"VERSION": testVersion, "COMMIT": testCommit, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	for _, name := range []string{"VERSION", "COMMIT"} {
		if _, ok := args[name]; !ok {
			t.Errorf("Dockerfile: the build stage has no ARG %s", name)
		}
	}
	lookup := func(name string) (string, error) {
		if _, declared := args[name]; !declared {
			return "", fmt.Errorf("$%s is not an ARG of the build stage", name)
		}
		if v, ok := given[name]; ok {
			return v, nil
		}
		if args[name] != nil {
			return *args[name], nil
		}
		return "", nil
	}

	var builds []instruction
	for _, in := range r.Build.all("RUN") {
		if strings.Contains(in.Args, "go build") {
			builds = append(builds, in)
		}
	}
	if len(builds) != 1 {
		t.Fatalf("Dockerfile: %d RUN lines with go build in the build stage, want 1", len(builds))
	}
	line := builds[0].Args
	for strings.HasPrefix(line, "--") { // RUN --mount=... --network=...
		_, line, _ = strings.Cut(line, " ")
		line = strings.TrimSpace(line)
	}
	words, err := shellWords(line, lookup)
	if err != nil {
		t.Fatalf("Dockerfile:%d: %v", builds[0].Line, err)
	}
	i := 0
	for i < len(words) && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(words[i]) {
		r.Env = append(r.Env, words[i])
		i++
	}
	if len(words) < i+3 || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("Dockerfile:%d: want [NAME=value...] go build FLAGS... PACKAGE, got %q", builds[0].Line, words)
	}
	r.Args = words[i+2:]
	for j := 0; j < len(r.Args); j++ {
		switch a := r.Args[j]; {
		case a == "-o" && j+1 < len(r.Args):
			r.Out = r.Args[j+1]
		case strings.HasPrefix(a, "-o="):
			r.Out = a[3:]
		case (a == "-ldflags" || a == "--ldflags") && j+1 < len(r.Args):
			r.Ldflag = r.Args[j+1]
		case strings.HasPrefix(a, "-ldflags="):
			r.Ldflag = a[len("-ldflags="):]
		}
	}

	for _, in := range r.Final.all("ENV") {
		words, err := shellWords(in.Args, func(name string) (string, error) {
			return "", fmt.Errorf("$%s in ENV: not supported by this test", name)
		})
		if err != nil {
			t.Fatalf("Dockerfile:%d: %v", in.Line, err)
		}
		for _, w := range words {
			if !strings.Contains(w, "=") {
				t.Fatalf("Dockerfile:%d: write ENV as NAME=value", in.Line)
			}
			r.ImageEnv = append(r.ImageEnv, w)
		}
	}
	return r
}

func envValue(env []string, name string) (string, bool) {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func jsonArray(t *testing.T, in instruction, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Errorf("Dockerfile:%d: %s must be in exec form, a JSON array (there is no shell in the image): %v", in.Line, in.Cmd, err)
	}
	return out
}

// dotEnvExample returns the values .env.example sets, and the example
// values of its commented-out lines ("# NAME=value").
func dotEnvExample(t *testing.T) (set, examples map[string]string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	set, examples = map[string]string{}, map[string]string{}
	re := regexp.MustCompile(`^(#\s*)?(POPHOOK_[A-Z0-9_]+)=(.*)$`)
	for _, line := range strings.Split(string(data), "\n") {
		m := re.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		if m[1] == "" {
			set[m[2]] = m[3]
		} else {
			examples[m[2]] = m[3]
		}
	}
	return set, examples
}

// TestDockerfile checks what the image promises: a pinned Go builder, a
// static build stamped with VERSION and COMMIT, a non-root user, the data
// dir as a volume, the published port, and exec-form commands.
func TestDockerfile(t *testing.T) {
	r := readRecipe(t)

	// The builder: a Go release of go.mod's Go version, pinned.
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if !regexp.MustCompile(`^golang:` + regexp.QuoteMeta(string(m[1])) + `\.\d+(-[a-z0-9]+)?(@sha256:[0-9a-f]{64})?$`).MatchString(r.Build.Base) {
		t.Errorf("Dockerfile: builder %q: want golang:%s.PATCH, pinned to a Go release", r.Build.Base, m[1])
	}

	// The build line.
	if v, _ := envValue(r.Env, "CGO_ENABLED"); v != "0" {
		t.Errorf("Dockerfile: the go build line must set CGO_ENABLED=0, has %q", r.Env)
	}
	if !slices.Contains(r.Args, "-trimpath") {
		t.Errorf("Dockerfile: go build without -trimpath: %q", r.Args)
	}
	ld := strings.Fields(r.Ldflag)
	for _, want := range []string{"-s", "-w", "main.version=" + testVersion, "main.commit=" + testCommit} {
		if !slices.Contains(ld, want) {
			t.Errorf("Dockerfile: -ldflags %q lacks %s", r.Ldflag, want)
		}
	}
	if r.Out == "" {
		t.Error("Dockerfile: go build has no -o")
	}

	// The final stage.
	base := r.Final.Base
	switch {
	case regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot(@sha256:[0-9a-f]{64})?$`).MatchString(base):
		// CA bundle, tzdata, passwd with nonroot=65532, /tmp.
	case base == "scratch":
		var ca bool
		for _, in := range r.Final.all("COPY") {
			ca = ca || strings.Contains(in.Args, caBundle)
		}
		if !ca {
			t.Errorf("Dockerfile: a scratch image needs %s copied in for TLS", caBundle)
		}
	default:
		t.Errorf("Dockerfile: final stage %q: want gcr.io/distroless/static...:nonroot or scratch", base)
	}

	var binCopied, dataCopied bool
	for _, in := range r.Final.all("COPY") {
		f := strings.Fields(in.Args)
		dst := f[len(f)-1]
		if dst == "/pophook" {
			binCopied = slices.Contains(f, r.Out)
			if !binCopied {
				t.Errorf("Dockerfile:%d: /pophook is not copied from go build's -o %s", in.Line, r.Out)
			}
		}
		if path.Clean(dst) == dataDir {
			dataCopied = true
			if !slices.Contains(f, fmt.Sprintf("--chown=%d:%d", imageUID, imageUID)) {
				t.Errorf("Dockerfile:%d: %s must be given to %d:%d (--chown), or a new volume is not writable", in.Line, dataDir, imageUID, imageUID)
			}
		}
	}
	if !dataCopied {
		t.Errorf("Dockerfile: the final stage does not create %s", dataDir)
	}

	if u := r.Final.one(t, "USER").Args; u != fmt.Sprint(imageUID) && u != fmt.Sprintf("%d:%d", imageUID, imageUID) {
		t.Errorf("Dockerfile: USER %s, want %d:%d (numeric, so Kubernetes' runAsNonRoot can check it)", u, imageUID, imageUID)
	}
	if v := r.Final.one(t, "VOLUME"); v.Args != dataDir && v.Args != `["`+dataDir+`"]` {
		t.Errorf("Dockerfile: VOLUME %s, want %s", v.Args, dataDir)
	}
	if e := r.Final.one(t, "EXPOSE").Args; e != "8080" && e != "8080/tcp" {
		t.Errorf("Dockerfile: EXPOSE %s, want 8080", e)
	}
	example, _ := dotEnvExample(t)
	for name, want := range map[string]string{"POPHOOK_HTTP_ADDR": ":8080", "POPHOOK_DATA_DIR": dataDir} {
		if v, _ := envValue(r.ImageEnv, name); v != want {
			t.Errorf("Dockerfile: ENV %s=%q, want %q", name, v, want)
		}
		if example[name] != want {
			t.Errorf(".env.example sets %s=%q; the image and deploy/ use %q", name, example[name], want)
		}
	}

	ep := r.Final.one(t, "ENTRYPOINT")
	if got := jsonArray(t, ep, ep.Args); !slices.Equal(got, []string{"/pophook"}) {
		t.Errorf("Dockerfile: ENTRYPOINT %q, want [\"/pophook\"]", got)
	}
	cmd := r.Final.one(t, "CMD")
	if got := jsonArray(t, cmd, cmd.Args); !slices.Equal(got, []string{"run"}) {
		t.Errorf("Dockerfile: CMD %q, want [\"run\"]", got)
	}
	hc := r.Final.one(t, "HEALTHCHECK")
	_, hcCmd, ok := strings.Cut(" "+hc.Args, " CMD ")
	if !ok {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK without CMD", hc.Line)
	}
	if got := jsonArray(t, hc, hcCmd); !slices.Equal(got, []string{"/pophook", "healthcheck"}) {
		t.Errorf("Dockerfile: HEALTHCHECK CMD %q, want [\"/pophook\", \"healthcheck\"]", got)
	}
}

// ---------------------------------------------------------------- build context

type ignorePattern struct {
	text      string
	re        *regexp.Regexp
	exception bool // "!pattern"
}

// readDockerignore reads .dockerignore as BuildKit does (moby's
// patternmatcher): patterns are relative to the context root, "*" and "?"
// stay within a path element, "**" spans any number of them, a pattern
// matching a directory matches everything under it, the last matching
// pattern decides, and "!" takes a path back in. Character classes and
// escapes are refused rather than approximated.
func readDockerignore(t *testing.T) []ignorePattern {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var out []ignorePattern
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		p := strings.TrimSpace(line)
		if p == "" {
			continue
		}
		ip := ignorePattern{text: p}
		if rest, ok := strings.CutPrefix(p, "!"); ok {
			ip.exception, p = true, strings.TrimSpace(rest)
		}
		p = strings.TrimPrefix(path.Clean(p), "/")
		re := "^"
		for j := 0; j < len(p); j++ {
			switch c := p[j]; c {
			case '*':
				if j+1 < len(p) && p[j+1] == '*' {
					j++
					if j+1 < len(p) && p[j+1] == '/' {
						j++
					}
					if j+1 == len(p) {
						re += ".*"
					} else {
						re += "(.*/)?"
					}
				} else {
					re += "[^/]*"
				}
			case '?':
				re += "[^/]"
			case '[', '\\':
				t.Fatalf(".dockerignore:%d: %q: character classes and escapes are not supported by this test", i+1, line)
			default:
				re += regexp.QuoteMeta(string(c))
			}
		}
		ip.re = regexp.MustCompile(re + "$")
		out = append(out, ip)
	}
	return out
}

// ignored says whether the context leaves rel (slash-separated) out.
func ignored(patterns []ignorePattern, rel string) bool {
	var parents []string
	if dir := path.Dir(rel); dir != "." {
		parts := strings.Split(dir, "/")
		for i := range parts {
			parents = append(parents, strings.Join(parts[:i+1], "/"))
		}
	}
	matched := false
	for _, p := range patterns {
		if p.exception != matched {
			continue
		}
		m := p.re.MatchString(rel)
		for _, d := range parents {
			m = m || p.re.MatchString(d)
		}
		if m {
			matched = !p.exception
		}
	}
	return matched
}

// buildContext copies what `docker build .` would send into a new
// directory.
func buildContext(t *testing.T) string {
	t.Helper()
	src, dst := repoRoot(t), t.TempDir()
	patterns := readDockerignore(t)
	exceptions := slices.ContainsFunc(patterns, func(p ignorePattern) bool { return p.exception })
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignored(patterns, rel) {
			if d.IsDir() && !exceptions {
				return fs.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return copyFile(p, target, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestIgnoreFiles: configuration with secrets stays out of git and out of
// the image; the example stays in both.
func TestIgnoreFiles(t *testing.T) {
	patterns := readDockerignore(t)
	for _, p := range []string{".env", ".env.local", ".env.production", "deploy/.env", "cmd/pophook/.env.test", ".git/config", "pophook"} {
		if !ignored(patterns, p) {
			t.Errorf(".dockerignore: %s would be sent to the builder", p)
		}
	}
	for _, p := range []string{".env.example", "go.mod", "go.sum", "cmd/pophook/main.go"} {
		if ignored(patterns, p) {
			t.Errorf(".dockerignore: %s would be left out of the build context", p)
		}
	}

	t.Run("gitignore", func(t *testing.T) {
		if _, err := exec.LookPath("git"); err != nil {
			t.Skip("git is not installed")
		}
		root := repoRoot(t)
		if err := exec.Command("git", "-C", root, "rev-parse", "--is-inside-work-tree").Run(); err != nil {
			t.Skip("not a git work tree")
		}
		check := func(p string) bool {
			// --no-index: as if untracked, which is what matters for a new .env.
			err := exec.Command("git", "-C", root, "check-ignore", "-q", "--no-index", p).Run()
			var ee *exec.ExitError
			switch {
			case err == nil:
				return true
			case errors.As(err, &ee) && ee.ExitCode() == 1:
				return false
			}
			t.Fatalf("git check-ignore %s: %v", p, err)
			return false
		}
		for _, p := range []string{".env", ".env.local", ".env.production", "deploy/.env"} {
			if !check(p) {
				t.Errorf(".gitignore: %s is not ignored", p)
			}
		}
		if check(".env.example") {
			t.Error(".gitignore: .env.example is ignored")
		}
	})
}

// ---------------------------------------------------------------- the binary

// buildBinary runs the Dockerfile's go build line on the build context
// .dockerignore leaves, as the builder stage would (no .git, no GOFLAGS).
func buildBinary(t *testing.T, r recipe) string {
	t.Helper()
	ctx := buildContext(t)
	if _, err := os.Stat(filepath.Join(ctx, ".git")); err == nil {
		t.Fatal("the build context has .git")
	}
	bin := filepath.Join(t.TempDir(), "pophook")
	args := slices.Clone(r.Args)
	for i := range args {
		switch {
		case args[i] == "-o" && i+1 < len(args):
			args[i+1] = bin
		case strings.HasPrefix(args[i], "-o="):
			args[i] = "-o=" + bin
		}
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building like the Dockerfile needs the go command on PATH: %v", err)
	}
	cmd := exec.Command(gobin, append([]string{"build"}, args...)...)
	cmd.Dir = ctx // WORKDIR, where COPY . . put the context
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, r.Env...)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's go build, on the context .dockerignore leaves, failed: %v\n%s", err, out)
	}
	t.Logf("built like the Dockerfile in %v: go build %s (%s)", time.Since(start).Round(time.Millisecond), strings.Join(args, " "), strings.Join(r.Env, " "))
	return bin
}

// TestImage builds the binary as the Dockerfile does and runs it as the
// image would.
func TestImage(t *testing.T) {
	r := readRecipe(t)
	bin := buildBinary(t, r)

	t.Run("static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			switch p.Type {
			case elf.PT_INTERP:
				t.Error("the binary has a PT_INTERP program header: it is dynamically linked and will not start on distroless/static")
			case elf.PT_DYNAMIC:
				t.Error("the binary has a PT_DYNAMIC program header")
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			t.Fatal(err)
		}
		if len(libs) > 0 {
			t.Errorf("the binary needs shared libraries (DT_NEEDED): %q", libs)
		}
		if f.Section(".symtab") != nil {
			t.Error("the binary has a symbol table: -ldflags -s did not apply")
		}
		for _, s := range f.Sections {
			if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
				t.Errorf("the binary has DWARF (%s): -ldflags -w did not apply", s.Name)
				break
			}
		}

		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": runtime.GOOS, "GOARCH": runtime.GOARCH} {
			if settings[k] != want {
				t.Errorf("build setting %s=%q, want %q", k, settings[k], want)
			}
		}
		if rev, ok := settings["vcs.revision"]; ok {
			t.Errorf("the binary has vcs.revision %s although the context has no .git", rev)
		}
	})

	t.Run("root", func(t *testing.T) {
		requireRoot(t, "chroot(2) into the image's root and running as uid 65532")
		root := imageRoot(t, bin)
		// What `docker run` gives the process: the image's ENV, Docker's
		// PATH, and HOME=/ for a uid without a passwd entry here.
		env := append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}, r.ImageEnv...)

		t.Run("version", func(t *testing.T) {
			out, errOut, code := runInRoot(t, root, env, time.Minute, "version")
			if code != 0 {
				t.Fatalf("pophook version: exit %d\n%s%s", code, out, errOut)
			}
			want := fmt.Sprintf("pophook %s (commit %s, go", testVersion, testCommit)
			if !strings.HasPrefix(out, want) {
				t.Errorf("pophook version printed %q, want it to start with %q: VERSION and COMMIT must be stamped with -X main.version and -X main.commit", out, want)
			}
		})

		t.Run("healthcheck", func(t *testing.T) {
			var ready atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/readyz" {
					http.NotFound(w, r)
					return
				}
				if !ready.Load() {
					http.Error(w, "every account has failed since start", http.StatusServiceUnavailable)
					return
				}
				io.WriteString(w, "ready\n")
			}))
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
			// The image's form of the address, ":PORT", with a port of ours.
			env := append(slices.Clone(env), "POPHOOK_HTTP_ADDR=:"+port)

			ready.Store(true)
			out, errOut, code := runInRoot(t, root, env, time.Minute, "healthcheck")
			if code != 0 || strings.TrimSpace(out) != "ready" {
				t.Errorf("pophook healthcheck against a ready daemon: exit %d, stdout %q, stderr %q; want 0 and \"ready\"", code, out, errOut)
			}
			ready.Store(false)
			out, errOut, code = runInRoot(t, root, env, time.Minute, "healthcheck")
			if code != 1 || !strings.Contains(errOut, "not ready") {
				t.Errorf("pophook healthcheck against a daemon that is not ready: exit %d, stdout %q, stderr %q; want 1 and \"not ready\"", code, out, errOut)
			}
		})

		t.Run("demo", func(t *testing.T) {
			// `docker run --rm pophook demo`: it must work with nothing
			// but the image, as the user the image runs as.
			out, errOut, code := runInRoot(t, root, env, 3*time.Minute, "demo")
			switch {
			case code == 2 && strings.Contains(errOut, `unknown command "demo"`):
				t.Fatalf("pophook demo is not a command of this binary (unknown command \"demo\"): the image's demo does not exist\n%s", errOut)
			case code != 0:
				t.Fatalf("pophook demo, in the image's root as uid %d, exited %d\nstdout:\n%s\nstderr:\n%s", imageUID, code, out, errOut)
			}
			t.Logf("pophook demo, in the image's root as uid %d:\n%s%s", imageUID, out, errOut)
		})
	})
}

// imageRoot makes a root directory with only what the image adds to an
// empty one: the binary, the CA bundle, /tmp and the data dir owned by
// 65532. distroless also has /etc/passwd, tzdata and the like, and the
// container runtime adds /proc, /dev and /etc/hosts: whatever runs here
// does without them.
func imageRoot(t *testing.T, bin string) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(root, 0o755))
	must(copyFile(bin, filepath.Join(root, "pophook"), 0o755))
	must(os.Chmod(filepath.Join(root, "pophook"), 0o755))

	tmp := filepath.Join(root, "tmp")
	must(os.Mkdir(tmp, 0o755))
	must(os.Chmod(tmp, 0o777|fs.ModeSticky))

	must(os.MkdirAll(filepath.Join(root, filepath.Dir(caBundle)), 0o755))
	if _, err := os.Stat(caBundle); err == nil {
		must(copyFile(caBundle, filepath.Join(root, caBundle), 0o644))
	} else {
		t.Logf("no %s on this machine: an empty one stands in for distroless's", caBundle)
		must(os.WriteFile(filepath.Join(root, caBundle), nil, 0o644))
	}

	data := filepath.Join(root, dataDir)
	must(os.MkdirAll(filepath.Dir(data), 0o755))
	must(os.Mkdir(data, 0o700))
	must(os.Chown(data, imageUID, imageUID))
	return root
}

// runInRoot runs /pophook ARGS chrooted into root as uid and gid 65532,
// with no supplementary groups, in the host's network namespace.
func runInRoot(t *testing.T, root string, env []string, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command("/pophook", args...)
	cmd.Dir = "/"
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID, Groups: []uint32{}},
	}
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting /pophook %s in %s: %v", strings.Join(args, " "), root, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("/pophook %s did not finish within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, o.String(), e.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("/pophook %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}
