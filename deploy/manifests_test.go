package deploy_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/config"
)

// ---------------------------------------------------------------- YAML

// loadYAML parses every document of a YAML file into JSON values. go.mod
// has no YAML module, so PyYAML does the parsing.
func loadYAML(t *testing.T, file string) []any {
	t.Helper()
	py := pythonWithYAML(t)
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command(py, "-c", "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)")
	cmd.Stdin = in
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s does not parse as YAML: %v\n%s", file, err, stderr.String())
	}
	var docs []any
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatal(err)
	}
	return docs
}

func pythonWithYAML(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import yaml").Run() == nil {
			return py
		}
	}
	msg := "reading the YAML manifests needs python3 with PyYAML (apt-get install python3-yaml)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: this must run, not skip)")
	}
	t.Skip(msg)
	return ""
}

// dig walks maps by key and lists by index; nil when anything is missing.
func dig(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k < 0 || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// num is a YAML number; -1 when v is not one.
func num(v any) int {
	f, ok := v.(float64)
	if !ok {
		return -1
	}
	return int(f)
}

// isolateEnv removes every POPHOOK_ variable of this process for the rest
// of the test, so that config.Load sees only what the test sets.
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "POPHOOK_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

// loadConfig runs pophook's own configuration check on env.
func loadConfig(t *testing.T, env map[string]string) *config.Config {
	t.Helper()
	isolateEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, warnings, err := config.Load()
	if err != nil {
		t.Fatalf("pophook refuses this configuration:\n%v", err)
	}
	for _, w := range warnings {
		t.Errorf("pophook warns: %s", w)
	}
	return cfg
}

// ---------------------------------------------------------------- Kubernetes

// TestKubernetes checks the StatefulSet and runs its configuration, as each
// replica gets it, through pophook's configuration check.
func TestKubernetes(t *testing.T) {
	docs := loadYAML(t, filepath.Join(repoRoot(t), "deploy", "kubernetes", "pophook.yaml"))
	byKind := map[string]any{}
	for _, d := range docs {
		kind := str(dig(d, "kind"))
		if _, dup := byKind[kind]; dup {
			t.Fatalf("two %s objects: the test expects one of each", kind)
		}
		byKind[kind] = d
	}
	for _, kind := range []string{"Secret", "ConfigMap", "StatefulSet"} {
		if byKind[kind] == nil {
			t.Fatalf("no %s in the manifest", kind)
		}
	}
	sts, cm, secret := byKind["StatefulSet"], byKind["ConfigMap"], byKind["Secret"]

	replicas := num(dig(sts, "spec", "replicas"))
	if replicas < 1 {
		t.Fatalf("StatefulSet replicas %v", dig(sts, "spec", "replicas"))
	}
	claims := list(dig(sts, "spec", "volumeClaimTemplates"))
	if len(claims) == 0 {
		t.Fatal("StatefulSet without volumeClaimTemplates: every replica needs its own ledger")
	}
	pod := dig(sts, "spec", "template", "spec")
	containers := list(dig(pod, "containers"))
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := containers[0]

	for _, k := range []string{"runAsUser", "runAsGroup", "fsGroup"} {
		if v := num(dig(pod, "securityContext", k)); v != imageUID {
			t.Errorf("pod securityContext.%s = %v, want %d", k, v, imageUID)
		}
	}
	if dig(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if dig(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("container securityContext.readOnlyRootFilesystem is not true")
	}
	if dig(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("container securityContext.allowPrivilegeEscalation is not false")
	}
	if p := str(dig(c, "imagePullPolicy")); p != "IfNotPresent" {
		t.Errorf("imagePullPolicy %q, want IfNotPresent", p)
	}
	if dig(pod, "enableServiceLinks") != false {
		t.Error("enableServiceLinks is not false: a Service named pophook would put POPHOOK_SERVICE_HOST and the like into pophook's environment")
	}

	// Probes on the HTTP listener.
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if p := str(dig(c, probe, "httpGet", "path")); p != want {
			t.Errorf("%s path %q, want %s", probe, p, want)
		}
		if port := num(dig(c, probe, "httpGet", "port")); port != 8080 {
			t.Errorf("%s port %v, want 8080", probe, dig(c, probe, "httpGet", "port"))
		}
	}
	if port := num(dig(c, "ports", 0, "containerPort")); port != 8080 {
		t.Errorf("containerPort %d, want 8080", port)
	}

	// Mounts: the claim on the data dir, the Secret somewhere.
	mounts := map[string]string{} // volume name -> mount path
	for _, m := range list(dig(c, "volumeMounts")) {
		mounts[str(dig(m, "name"))] = str(dig(m, "mountPath"))
	}
	if claim := str(dig(claims[0], "metadata", "name")); mounts[claim] != dataDir {
		t.Errorf("the volume claim %q is mounted at %q, want %s", claim, mounts[claim], dataDir)
	}
	secretName := str(dig(secret, "metadata", "name"))
	secretDir := ""
	for _, v := range list(dig(pod, "volumes")) {
		if str(dig(v, "secret", "secretName")) == secretName {
			secretDir = mounts[str(dig(v, "name"))]
		}
	}
	secretData := map[string]string{}
	if m, ok := dig(secret, "stringData").(map[string]any); ok {
		for k, v := range m {
			secretData[k] = str(v)
		}
	}
	if m, ok := dig(secret, "data").(map[string]any); ok {
		for k, v := range m {
			b, err := base64.StdEncoding.DecodeString(str(v))
			if err != nil {
				t.Errorf("Secret data %s: %v", k, err)
			}
			secretData[k] = string(b)
		}
	}

	// The environment: envFrom the ConfigMap, then env in order, with
	// $(NAME) expanded from what comes before, as the kubelet does.
	var fromCM bool
	for _, ef := range list(dig(c, "envFrom")) {
		if ref := dig(ef, "configMapRef", "name"); ref != nil {
			if str(ref) != str(dig(cm, "metadata", "name")) {
				t.Errorf("envFrom names ConfigMap %v, which is not in the manifest", ref)
			}
			fromCM = true
		}
	}
	if !fromCM {
		t.Error("the container takes no envFrom configMapRef")
	}
	envList := list(dig(c, "env"))
	names := make([]string, len(envList))
	for i, e := range envList {
		names[i] = str(dig(e, "name"))
	}
	iIndex, iShard := slices.Index(names, "POD_INDEX"), slices.Index(names, "POPHOOK_SHARD")
	switch {
	case iIndex < 0 || iShard < 0:
		t.Fatalf("env needs POD_INDEX and POPHOOK_SHARD, has %q", names)
	case iIndex > iShard:
		t.Error("POD_INDEX comes after POPHOOK_SHARD: Kubernetes expands $(POD_INDEX) only from earlier entries")
	}
	const podIndex = "metadata.labels['apps.kubernetes.io/pod-index']"
	if f := str(dig(envList[iIndex], "valueFrom", "fieldRef", "fieldPath")); f != podIndex {
		t.Errorf("POD_INDEX comes from %q, want the downward API's %s", f, podIndex)
	}
	if v, want := str(dig(envList[iShard], "value")), fmt.Sprintf("$(POD_INDEX)/%d", replicas); v != want {
		t.Errorf("POPHOOK_SHARD=%q, want %q: COUNT must be the number of replicas (%d)", v, want, replicas)
	}

	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for i := range replicas {
		t.Run(fmt.Sprintf("replica %d", i), func(t *testing.T) {
			env := map[string]string{}
			for k, v := range dig(cm, "data").(map[string]any) {
				env[k] = str(v)
			}
			for _, e := range envList {
				name := str(dig(e, "name"))
				switch {
				case dig(e, "valueFrom", "fieldRef", "fieldPath") == podIndex:
					env[name] = strconv.Itoa(i)
				case dig(e, "valueFrom") != nil:
					t.Fatalf("env %s: valueFrom other than the pod index is not followed by this test", name)
				default:
					env[name] = ref.ReplaceAllStringFunc(str(dig(e, "value")), func(m string) string {
						if v, ok := env[m[2:len(m)-1]]; ok {
							return v
						}
						return m
					})
				}
			}
			// NAME_FILE in the Secret's mount: the file, with the Secret's value.
			files := t.TempDir()
			for name, v := range env {
				if !strings.HasSuffix(name, "_FILE") || !strings.HasPrefix(name, "POPHOOK_") {
					continue
				}
				key, ok := strings.CutPrefix(v, secretDir+"/")
				if secretDir == "" || !ok {
					t.Errorf("%s=%s is not in the Secret's mount (%q)", name, v, secretDir)
					continue
				}
				content, ok := secretData[key]
				if !ok {
					t.Errorf("%s=%s: the Secret has no key %s", name, v, key)
					continue
				}
				p := filepath.Join(files, key)
				if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				env[name] = p
			}
			cfg := loadConfig(t, env)
			if cfg.Shard.Index != i || cfg.Shard.Count != replicas {
				t.Errorf("replica %d is shard %v, want %d/%d", i, cfg.Shard, i, replicas)
			}
			if cfg.DataDir != dataDir {
				t.Errorf("POPHOOK_DATA_DIR=%s, but the claim is mounted at %s", cfg.DataDir, dataDir)
			}
			if _, port, _ := net.SplitHostPort(cfg.HTTPAddr); port != "8080" {
				t.Errorf("POPHOOK_HTTP_ADDR=%q: the probes use port 8080", cfg.HTTPAddr)
			}
		})
	}
}

// ---------------------------------------------------------------- compose

func TestCompose(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "deploy")
	docs := loadYAML(t, filepath.Join(dir, "compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("%d YAML documents, want 1", len(docs))
	}
	svc := dig(docs[0], "services", "pophook")
	if svc == nil {
		t.Fatal("no service pophook")
	}

	// Relative paths are relative to the compose file's directory.
	var envFiles []string
	switch v := dig(svc, "env_file").(type) {
	case string:
		envFiles = []string{v}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				envFiles = append(envFiles, s)
			} else {
				envFiles = append(envFiles, str(dig(e, "path")))
			}
		}
	}
	if len(envFiles) != 1 || filepath.Join(dir, envFiles[0]) != filepath.Join(root, ".env") {
		t.Errorf("env_file %q: want the repository root's .env (../.env from deploy/)", envFiles)
	}
	ctx := str(dig(svc, "build", "context"))
	if _, err := os.Stat(filepath.Join(dir, ctx, "Dockerfile")); ctx == "" || err != nil {
		t.Errorf("build context %q has no Dockerfile", ctx)
	}

	var dataVolume string
	for _, v := range list(dig(svc, "volumes")) {
		if src, dst, _ := strings.Cut(str(v), ":"); dst == dataDir {
			dataVolume = src
		}
	}
	if dataVolume == "" {
		t.Errorf("no volume on %s", dataDir)
	} else if _, ok := dig(docs[0], "volumes").(map[string]any)[dataVolume]; !ok {
		t.Errorf("the volume on %s, %q, is not a named volume", dataDir, dataVolume)
	}

	var test []string
	for _, w := range list(dig(svc, "healthcheck", "test")) {
		test = append(test, str(w))
	}
	if !slices.Equal(test, []string{"CMD", "/pophook", "healthcheck"}) {
		t.Errorf("healthcheck test %q, want [CMD /pophook healthcheck]", test)
	}
	if r := str(dig(svc, "restart")); r != "unless-stopped" {
		t.Errorf("restart %q, want unless-stopped", r)
	}
	var ports []string
	for _, p := range list(dig(svc, "ports")) {
		ports = append(ports, str(p))
	}
	if !slices.Equal(ports, []string{"127.0.0.1:8080:8080"}) {
		t.Errorf("ports %q, want 127.0.0.1:8080:8080 (loopback only)", ports)
	}
}

// TestStopTimeouts: compose, systemd and Kubernetes give pophook the same
// time to finish the message in hand, and it covers at least two sinks'
// default BUDGET (45s each).
func TestStopTimeouts(t *testing.T) {
	root := repoRoot(t)
	compose := loadYAML(t, filepath.Join(root, "deploy", "compose.yaml"))
	c, err := time.ParseDuration(str(dig(compose[0], "services", "pophook", "stop_grace_period")))
	if err != nil {
		t.Fatalf("compose stop_grace_period: %v", err)
	}
	var k time.Duration
	for _, d := range loadYAML(t, filepath.Join(root, "deploy", "kubernetes", "pophook.yaml")) {
		if str(dig(d, "kind")) == "StatefulSet" {
			k = time.Duration(num(dig(d, "spec", "template", "spec", "terminationGracePeriodSeconds"))) * time.Second
		}
	}
	u := readUnit(t)
	s, err := time.ParseDuration(u.last("TimeoutStopSec"))
	if err != nil {
		s, err = time.ParseDuration(u.last("TimeoutStopSec") + "s")
	}
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if c != k || c != s {
		t.Errorf("stop timeouts differ: compose %v, Kubernetes %v, systemd %v", c, k, s)
	}
	if min(c, k, s) < 90*time.Second {
		t.Errorf("a stop timeout under 90s (two sinks' default BUDGET): compose %v, Kubernetes %v, systemd %v", c, k, s)
	}
}

// ---------------------------------------------------------------- systemd

type directive struct {
	Line      int
	Key, Val  string
	Commented bool // "#Key=value": an example to uncomment
}

type unit struct {
	file    string
	service []directive
}

func (u unit) last(key string) string {
	v := ""
	for _, d := range u.service {
		if d.Key == key && !d.Commented {
			v = d.Val
		}
	}
	return v
}

func (u unit) values(key string, commented bool) []directive {
	var out []directive
	for _, d := range u.service {
		if d.Key == key && (commented || !d.Commented) {
			out = append(out, d)
		}
	}
	return out
}

func readUnit(t *testing.T) unit {
	t.Helper()
	u := unit{file: filepath.Join(repoRoot(t), "deploy", "systemd", "pophook.service")}
	data, err := os.ReadFile(u.file)
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	re := regexp.MustCompile(`^(#)?([A-Z][A-Za-z]+)=(.*)$`)
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if m := re.FindStringSubmatch(line); m != nil && section == "[Service]" {
			u.service = append(u.service, directive{Line: i + 1, Key: m[2], Val: m[3], Commented: m[1] != ""})
		}
	}
	return u
}

func TestSystemd(t *testing.T) {
	u := readUnit(t)
	for key, want := range map[string]string{
		"DynamicUser":             "yes",
		"StateDirectory":          "pophook",
		"EnvironmentFile":         "/etc/pophook/pophook.env",
		"KillSignal":              "SIGTERM",
		"Restart":                 "on-failure",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"CapabilityBoundingSet":   "",
	} {
		if got := u.last(key); got != want || len(u.values(key, false)) == 0 {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if !slices.ContainsFunc(u.values("SystemCallFilter", false), func(d directive) bool { return d.Val == "@system-service" }) {
		t.Error("no SystemCallFilter=@system-service")
	}
	if "/var/lib/"+u.last("StateDirectory") != dataDir {
		t.Errorf("StateDirectory=%s is not %s", u.last("StateDirectory"), dataDir)
	}

	// Environment= lines, and LoadCredential= lines paired with a
	// NAME_FILE=%d/ID, commented or not.
	unitEnv := map[string]string{}
	credEnv := map[string]string{} // NAME_FILE -> credential ID
	for _, d := range u.values("Environment", true) {
		name, v, _ := strings.Cut(d.Val, "=")
		if id, ok := strings.CutPrefix(v, "%d/"); ok {
			if !strings.HasSuffix(name, "_FILE") {
				t.Errorf("line %d: a credential goes into a NAME_FILE variable, not %s", d.Line, name)
			}
			credEnv[name] = id
		} else if !d.Commented {
			unitEnv[name] = v
		}
	}
	if unitEnv["POPHOOK_DATA_DIR"] != dataDir {
		t.Errorf("Environment=POPHOOK_DATA_DIR=%s, want %s", unitEnv["POPHOOK_DATA_DIR"], dataDir)
	}
	creds := map[string]bool{}
	for _, d := range u.values("LoadCredential", true) {
		id, _, _ := strings.Cut(d.Val, ":")
		creds[id] = true
		if !slices.Contains(slices.Collect(maps.Values(credEnv)), id) {
			t.Errorf("line %d: LoadCredential=%s is not used by any NAME_FILE=%%d/%s", d.Line, d.Val, id)
		}
	}
	if len(creds) == 0 {
		t.Error("no LoadCredential= example")
	}
	for name, id := range credEnv {
		if !creds[id] {
			t.Errorf("%s=%%d/%s: no LoadCredential=%s:...", name, id, id)
		}
	}

	// What the unit's comments say to do, done: pophook.env from
	// .env.example (it overrides Environment=), the credentials
	// uncommented and the matching NAME lines deleted.
	t.Run("configuration", func(t *testing.T) {
		set, examples := dotEnvExample(t)
		env := map[string]string{}
		for k, v := range unitEnv {
			env[k] = v
		}
		for k, v := range set {
			env[k] = v
		}
		dir := t.TempDir()
		for name, id := range credEnv {
			base := strings.TrimSuffix(name, "_FILE")
			content, ok := set[base]
			if !ok {
				content, ok = examples[base]
			}
			if !ok {
				t.Fatalf("%s: .env.example has no %s, set or as an example", name, base)
			}
			delete(env, base)
			p := filepath.Join(dir, id)
			if err := os.WriteFile(p, []byte(config.Unquote(content)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			env[name] = p
		}
		cfg := loadConfig(t, env)
		if cfg.DataDir != dataDir {
			t.Errorf("data dir %s, but StateDirectory is %s", cfg.DataDir, dataDir)
		}
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			msg := "systemd-analyze is not installed (apt-get install systemd): the unit is not verified"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + " (CI=true: this must run, not skip)")
			}
			t.Skip(msg)
		}
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(u.file)
		if err != nil {
			t.Fatal(err)
		}
		// verify wants ExecStart's program to exist: any executable will do.
		text := regexp.MustCompile(`(?m)^ExecStart=\S+`).ReplaceAllString(string(data), "ExecStart="+self)
		for name, text := range map[string]string{
			"as shipped":                   text,
			"with credentials uncommented": regexp.MustCompile(`(?m)^#((LoadCredential|Environment)=)`).ReplaceAllString(text, "$1"),
		} {
			file := filepath.Join(t.TempDir(), "pophook.service")
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("systemd-analyze", "verify", "--man=no", file).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify, %s: %v\n%s", name, err, out)
			}
		}
	})
}

// ---------------------------------------------------------------- variable names

// TestVariableNames: every POPHOOK_ name in the Dockerfile and deploy/ is
// one that .env.example or docs/design.md documents.
func TestVariableNames(t *testing.T) {
	root := repoRoot(t)
	name := regexp.MustCompile(`POPHOOK_[A-Z0-9_]*[A-Z0-9]`)
	known := map[string]bool{}
	for _, f := range []string{".env.example", "docs/design.md"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range name.FindAllString(string(data), -1) {
			known[n] = true
		}
	}
	// Named in a comment as what enableServiceLinks: false keeps out.
	notOurs := map[string]bool{"POPHOOK_SERVICE_HOST": true}

	files := []string{filepath.Join(root, "Dockerfile")}
	filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return err
	})
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, n := range name.FindAllString(line, -1) {
				if !known[n] && !notOurs[n] {
					rel, _ := filepath.Rel(root, f)
					t.Errorf("%s:%d: %s is not a variable .env.example or docs/design.md knows", rel, i+1, n)
				}
			}
		}
	}
}
