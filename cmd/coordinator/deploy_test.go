package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/openedx/coordinator/internal/config"
)

// The deployment files under deploy/ are checked against the real binary's
// commands and config keys, so they cannot drift from it.

const deployDir = "../../deploy"

var (
	runnable = []string{"api", "worker", "all", "migrate"}
	envRef   = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

func readDeploy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func yamlDocs(t *testing.T, name string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readDeploy(t, name)))
	var docs []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			break
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML documents", name)
	}
	return docs
}

// get walks nested maps and lists: get(m, "spec", "template", 0, ...).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// checkConfigEnv parses the shipped container config with env and checks
// that env provides every variable it references.
func checkConfigEnv(t *testing.T, where string, env map[string]string) config.Config {
	t.Helper()
	for _, m := range envRef.FindAllStringSubmatch(readDeploy(t, "coordinator.yaml"), -1) {
		if _, ok := env[m[1]]; !ok {
			t.Errorf("%s does not set ${%s}, which deploy/coordinator.yaml uses", where, m[1])
		}
	}
	cfg, err := config.Parse([]byte(readDeploy(t, "coordinator.yaml")), func(k string) string { return env[k] })
	if err != nil {
		t.Errorf("%s: deploy/coordinator.yaml does not load: %v", where, err)
	}
	if err := configCheck(cfg, &strings.Builder{}); err != nil {
		t.Errorf("%s: config check: %v", where, err)
	}
	return cfg
}

// sample fills secrets and blanks with valid values, as an operator would.
func sample(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		if v == "" || strings.Contains(v, "change-me") || strings.Contains(v, "${") || strings.Contains(v, "{{") {
			v = map[string]string{"LMS_CLIENT_SECRET": "s", "JWT_SECRET_KEY": testJWTSecret, "REDIS_URL": "redis://redis:6379/2",
				"LMS_URL": "http://lms:8000", "LMS_CLIENT_ID": "coordinator-worker", "JWT_ISSUER": "http://lms:8000/oauth2",
				"JWT_AUDIENCE": "lms-key", "HTTP_ADDR": "0.0.0.0:8140"}[k]
		}
		out[k] = v
	}
	return out
}

func TestDockerfile(t *testing.T) {
	df := readDeploy(t, "Dockerfile")
	for _, want := range []string{
		"CGO_ENABLED=0", "./cmd/coordinator", "USER nonroot", "EXPOSE 8140", `ENTRYPOINT ["/usr/local/bin/coordinator"]`,
		"COPY deploy/coordinator.yaml /etc/coordinator/coordinator.yaml", "COORDINATOR_CONFIG=/etc/coordinator/coordinator.yaml",
		"HTTP_ADDR=0.0.0.0:8140", "FROM gcr.io/distroless/static",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`CMD \["(\w+)"\]`).FindStringSubmatch(df); m == nil || !slices.Contains(runnable, m[1]) {
		t.Errorf("Dockerfile CMD %v is not a coordinator command", m)
	}
}

func TestCompose(t *testing.T) {
	doc := yamlDocs(t, "docker-compose.yml")[0]
	services, _ := doc["services"].(map[string]any)
	for _, name := range []string{"api", "worker", "migrate"} {
		s := services[name]
		if img := get(s, "image"); img != "ghcr.io/openedx/coordinator:latest" {
			t.Errorf("%s image %v", name, img)
		}
		cmd, _ := get(s, "command", 0).(string)
		if !slices.Contains(runnable, cmd) {
			t.Errorf("%s command %q is not a coordinator command", name, cmd)
		}
		env := map[string]string{}
		for k, v := range get(s, "environment").(map[string]any) {
			env[k], _ = v.(string)
		}
		cfg := checkConfigEnv(t, "compose "+name, sample(env))
		if name == "api" {
			if p := get(s, "ports", 0); p != "8140:8140" || !strings.HasSuffix(cfg.HTTP.Addr, ":8140") {
				t.Errorf("api publishes %v but listens on %s", p, cfg.HTTP.Addr)
			}
		}
	}
	redis := strings.Join(toStrings(get(services["redis"], "command")), " ")
	if !strings.Contains(redis, "--appendonly yes") || !strings.Contains(redis, "--appendfsync always") {
		t.Errorf("compose Redis %q must persist every write (AOF, fsync always)", redis)
	}
	for _, p := range []string{"postgres", "memcached", "migrate"} {
		if prof := toStrings(get(services[p], "profiles")); len(prof) == 0 {
			t.Errorf("%s should be in an optional profile", p)
		}
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestKubernetes(t *testing.T) {
	kust := yamlDocs(t, "k8s/kustomization.yaml")[0]
	env := map[string]string{}
	for _, gen := range get(kust, "configMapGenerator").([]any) {
		for _, lit := range toStrings(get(gen, "literals")) {
			k, v, _ := strings.Cut(lit, "=")
			env[k] = v
		}
		for _, f := range toStrings(get(gen, "files")) {
			if _, src, ok := strings.Cut(f, "="); ok {
				if _, err := os.Stat(filepath.Join(deployDir, "k8s", src)); err != nil {
					t.Errorf("configMapGenerator file %s: %v", src, err)
				}
			}
		}
	}
	for k, v := range get(yamlDocs(t, "k8s/secret.example.yaml")[0], "stringData").(map[string]any) {
		env[k], _ = v.(string)
	}
	cfg := checkConfigEnv(t, "kustomize config map + secret", sample(env))
	port := cfg.HTTP.Addr[strings.LastIndexByte(cfg.HTTP.Addr, ':')+1:]
	image, _ := get(kust, "images", 0, "name").(string)
	resources := toStrings(kust["resources"])

	names := map[string]bool{}
	for _, r := range resources {
		for _, d := range yamlDocs(t, "k8s/"+r) {
			names[get(d, "kind").(string)+"/"+get(d, "metadata", "name").(string)] = true
		}
	}
	for _, role := range []string{"api", "worker"} {
		d := yamlDocs(t, "k8s/"+role+".yaml")[0]
		pod := get(d, "spec", "template", "spec")
		c := get(pod, "containers", 0)
		if get(c, "image") != image {
			t.Errorf("%s image %v, kustomization sets %s", role, get(c, "image"), image)
		}
		args := toStrings(get(c, "args"))
		if len(args) != 3 || args[0] != "--config" || args[2] != role {
			t.Errorf("%s args %v, want --config FILE %s", role, args, role)
		}
		mount, _ := get(c, "volumeMounts", 0, "mountPath").(string)
		if len(args) == 3 && filepath.Dir(args[1]) != mount {
			t.Errorf("%s reads config %s but the ConfigMap is mounted at %s", role, args[1], mount)
		}
		if p := get(c, "ports", 0, "containerPort"); p != mustAtoi(port) {
			t.Errorf("%s containerPort %v, but http.addr is %s", role, p, cfg.HTTP.Addr)
		}
		for _, probe := range []string{"readinessProbe", "livenessProbe"} {
			if get(c, probe, "httpGet", "path") != "/health" || get(c, probe, "httpGet", "port") != "http" {
				t.Errorf("%s %s must GET /health on the http port", role, probe)
			}
		}
		grace, _ := get(pod, "terminationGracePeriodSeconds").(int)
		if float64(grace) <= cfg.ShutdownTimeout.D().Seconds() {
			t.Errorf("%s terminationGracePeriodSeconds %d must exceed shutdown_timeout %v", role, grace, cfg.ShutdownTimeout.D())
		}
		var refs []string
		for i := range 2 {
			if n, ok := get(c, "envFrom", i, "configMapRef", "name").(string); ok {
				refs = append(refs, n)
			}
			if n, ok := get(c, "envFrom", i, "secretRef", "name").(string); ok {
				refs = append(refs, n)
			}
		}
		if !slices.Equal(refs, []string{"coordinator-env", "coordinator-secrets"}) {
			t.Errorf("%s envFrom %v", role, refs)
		}
		if get(pod, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s must run as non-root", role)
		}
	}
	for _, want := range []string{"Deployment/coordinator-api", "Deployment/coordinator-worker", "Service/coordinator",
		"HorizontalPodAutoscaler/coordinator-api", "HorizontalPodAutoscaler/coordinator-worker",
		"PodDisruptionBudget/coordinator-api", "PodDisruptionBudget/coordinator-worker"} {
		if !names[want] {
			t.Errorf("kustomization lacks %s", want)
		}
	}
	for _, d := range yamlDocs(t, "k8s/hpa.yaml") {
		target := "Deployment/" + get(d, "spec", "scaleTargetRef", "name").(string)
		if !names[target] {
			t.Errorf("HPA targets %s, which does not exist", target)
		}
	}
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s) // a malformed number reads as 0, which the checks then refuse
	return n
}

func TestSystemd(t *testing.T) {
	env := map[string]string{}
	for _, line := range strings.Split(readDeploy(t, "systemd/env.example"), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = v
		}
	}
	for _, role := range []string{"api", "worker"} {
		unit := readDeploy(t, "systemd/coordinator-"+role+".service")
		if !strings.Contains(unit, "ExecStart=/usr/local/bin/coordinator --config /etc/coordinator/coordinator.yaml "+role+"\n") {
			t.Errorf("%s unit ExecStart is not `coordinator --config ... %s`", role, role)
		}
		unitEnv := map[string]string{}
		for k, v := range env {
			unitEnv[k] = v
		}
		if m := regexp.MustCompile(`Environment=HTTP_ADDR=(\S+)`).FindStringSubmatch(unit); m != nil {
			unitEnv["HTTP_ADDR"] = m[1]
		}
		cfg := checkConfigEnv(t, "systemd "+role, sample(unitEnv))
		m := regexp.MustCompile(`TimeoutStopSec=(\d+)`).FindStringSubmatch(unit)
		if m == nil || float64(mustAtoi(m[1])) <= cfg.ShutdownTimeout.D().Seconds() {
			t.Errorf("%s unit TimeoutStopSec %v must exceed shutdown_timeout", role, m)
		}
	}
}

func TestTutorPlugin(t *testing.T) {
	py := readDeploy(t, "tutor/tutorcoordinator/plugin.py")
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+([A-Z_]+): "([^"]*)"$`).FindAllStringSubmatch(py, -1) {
		env[m[1]] = m[2]
	}
	checkConfigEnv(t, "tutor plugin", sample(env))
	for _, cmd := range regexp.MustCompile(`command: \["(\w+)"\]`).FindAllStringSubmatch(py, -1) {
		if !slices.Contains(runnable, cmd[1]) {
			t.Errorf("tutor service command %q is not a coordinator command", cmd[1])
		}
	}
	for _, want := range []string{"create_dot_application", "--grant-type client-credentials", "--staff"} {
		if !strings.Contains(py, want) {
			t.Errorf("tutor init task lacks %q", want)
		}
	}
}

// Every metric an alert rule uses exists.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	src, err := os.ReadFile("../../internal/metrics/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(coordinator_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		defined[m[1]] = true
	}
	rules := yamlDocs(t, "prometheus/alerts.yml")[0]
	n := 0
	for _, r := range get(rules, "groups", 0, "rules").([]any) {
		expr, _ := get(r, "expr").(string)
		for _, m := range regexp.MustCompile(`coordinator_[a-z_]+`).FindAllString(expr, -1) {
			n++
			if !defined[m] {
				t.Errorf("alert %v uses %s, which the binary does not export", get(r, "alert"), m)
			}
		}
	}
	if n == 0 {
		t.Error("no alert uses a coordinator metric")
	}
}
