package main

import (
	"bytes"
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The Tutor plugin is Python run by Tutor, which no registry reachable here
// serves; it is checked against the hook, patch and configuration names of
// the Tutor release it was rendered with (testdata/tutor, read from that
// release's source), and TestTutorRenderedEnv checks a real render.

const tutorDir = "tutor/tutorcoordinator"

// pinned reads a testdata/tutor list: one name a line, # comments.
func pinned(t *testing.T, name string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "tutor", name))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out[line] = true
		}
	}
	return out
}

// tutorPatches returns the plugin's patches by name.
func tutorPatches(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(deployDir, tutorDir, "patches"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Name()] = readDeploy(t, filepath.Join(tutorDir, "patches", e.Name()))
	}
	return out
}

// tutorEnv reads `NAME: "value"` pairs (compose environment, ConfigMap data,
// Secret stringData) from a patch section, Jinja left in the values.
func tutorEnv(text string) map[string]string {
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+([A-Z][A-Z0-9_]*): "([^"]*)"$`).FindAllStringSubmatch(text, -1) {
		env[m[1]] = m[2]
	}
	return env
}

func TestTutorPlugin(t *testing.T) {
	py := readDeploy(t, filepath.Join(tutorDir, "plugin.py"))
	hooks := pinned(t, "hooks.txt")
	used := regexp.MustCompile(`hooks\.((?:Filters|Actions)\.[A-Z_]+)`).FindAllStringSubmatch(py, -1)
	if len(used) < 10 {
		t.Fatalf("plugin.py uses %d hooks", len(used))
	}
	usedSet := map[string]bool{}
	for _, m := range used {
		usedSet[m[1]] = true
		if !hooks[m[1]] {
			t.Errorf("plugin.py uses hooks.%s, which Tutor does not define", m[1])
		}
	}
	for _, want := range []string{"Filters.CONFIG_DEFAULTS", "Filters.CONFIG_UNIQUE", "Filters.ENV_PATCHES",
		"Filters.IMAGES_BUILD", "Filters.IMAGES_PULL", "Filters.IMAGES_PUSH", "Filters.CLI_DO_INIT_TASKS"} {
		if !usedSet[want] {
			t.Errorf("plugin.py does not use hooks.%s", want)
		}
	}

	patches := tutorPatches(t)
	names := pinned(t, "patches.txt")
	for name := range patches {
		if !names[name] {
			t.Errorf("patches/%s is not a patch of Tutor's templates: it would never render", name)
		}
	}
	for _, want := range []string{"local-docker-compose-services", "caddyfile", "local-docker-compose-caddy-aliases",
		"k8s-deployments", "k8s-services", "k8s-volumes"} {
		if _, ok := patches[want]; !ok {
			t.Errorf("no %s patch", want)
		}
	}

	// Every setting the templates read is the plugin's or Tutor's.
	defined := pinned(t, "config.txt")
	for _, m := range regexp.MustCompile(`\("(COORDINATOR_[A-Z0-9_]+)",`).FindAllStringSubmatch(py, -1) {
		defined[m[1]] = true
	}
	templates := maps.Clone(patches)
	templates["plugin.py"] = py
	templates["Dockerfile"] = readDeploy(t, filepath.Join(tutorDir, "templates/coordinator/build/coordinator/Dockerfile"))
	jinja := regexp.MustCompile(`\{[{%][^}]*\}`)
	word := regexp.MustCompile(`\b[A-Z][A-Z0-9_]{2,}\b`)
	for name, text := range templates {
		for _, expr := range jinja.FindAllString(text, -1) {
			for _, key := range word.FindAllString(expr, -1) {
				if !defined[key] {
					t.Errorf("%s reads setting %s, which neither the plugin nor Tutor defines", name, key)
				}
			}
		}
	}

	// Both deployments give the config every variable it uses.
	compose := patches["local-docker-compose-services"]
	checkConfigEnv(t, "tutor local", sample(tutorEnv(compose)))
	checkConfigEnv(t, "tutor k8s", sample(tutorEnv(patches["k8s-deployments"])))
	for _, cmd := range regexp.MustCompile(`(?:command|args): \["(\w+)"\]`).FindAllStringSubmatch(compose+patches["k8s-deployments"], -1) {
		if !slices.Contains(runnable, cmd[1]) && !strings.HasPrefix(cmd[1], "redis") {
			t.Errorf("tutor service command %q is not a coordinator command", cmd[1])
		}
	}
	// The queue's own Redis, in both.
	for _, name := range []string{"local-docker-compose-services", "k8s-deployments"} {
		flat := strings.Join(strings.Fields(strings.NewReplacer(`"`, "", ",", " ").Replace(patches[name])), " ")
		for _, want := range []string{"--appendonly yes", "--appendfsync always", "--maxmemory-policy noeviction"} {
			if !strings.Contains(flat, want) {
				t.Errorf("%s: the Redis lacks %s", name, want)
			}
		}
		if !strings.Contains(patches[name], "COORDINATOR_REDIS_URL") || strings.Contains(patches[name], "REDIS_HOST") {
			t.Errorf("%s must queue on the plugin's Redis, never Tutor's (an LRU cache shared with the LMS)", name)
		}
	}
	if strings.Contains(compose, "ports:") {
		t.Error("tutor local publishes the API: Caddy is its door")
	}
	if c := patches["caddyfile"]; !strings.Contains(c, "{{ COORDINATOR_HOST }}") || !strings.Contains(c, `import proxy "coordinator-api:8140"`) ||
		!regexp.MustCompile(`respond @\w+ 404`).MatchString(c) {
		t.Errorf("caddyfile must route COORDINATOR_HOST to coordinator-api and keep /metrics inside:\n%s", c)
	}

	// One release everywhere: the plugin, the image tag of Compose and kustomize.
	about := regexp.MustCompile(`__version__ = "([^"]+)"`).FindStringSubmatch(readDeploy(t, filepath.Join(tutorDir, "__about__.py")))
	if about == nil {
		t.Fatal("no __version__ in __about__.py")
	}
	if !strings.Contains(readDeploy(t, "k8s/kustomization.yaml"), `newTag: "`+about[1]+`"`) ||
		!strings.Contains(readDeploy(t, "docker-compose.yml"), "${COORDINATOR_VERSION:-"+about[1]+"}") {
		t.Errorf("the plugin runs %s, but deploy/k8s or docker-compose.yml pins another release", about[1])
	}
	if !strings.Contains(py, `"ghcr.io/openedx/coordinator:{{ COORDINATOR_VERSION }}"`) {
		t.Error("the plugin's image is not pinned to COORDINATOR_VERSION")
	}
	pyproject := readDeploy(t, "tutor/pyproject.toml")
	if !strings.Contains(pyproject, `"tutor>=21.0.0,<22.0.0"`) {
		t.Error("pyproject.toml must pin the Tutor major release the names were read from (21)")
	}
	for _, want := range []string{"create_dot_application", "--grant-type client-credentials", "--staff"} {
		if !strings.Contains(py, want) {
			t.Errorf("tutor init task lacks %q", want)
		}
	}
}

// TestTutorRenderedEnv checks an environment rendered by a real Tutor with
// this plugin enabled (`tutor config save`): TUTOR_ENV is its env/ folder.
// Tutor comes from no registry reachable here, so this runs where an
// operator or developer has Tutor (deploy/README.md shows how).
func TestTutorRenderedEnv(t *testing.T) {
	envDir := os.Getenv("TUTOR_ENV")
	if envDir == "" {
		t.Skip("TUTOR_ENV is not set: render with `tutor config save` and point TUTOR_ENV at its env/ folder")
	}
	files := []string{filepath.Join(envDir, "local/docker-compose.yml"), filepath.Join(envDir, "local/docker-compose.prod.yml")}
	opts, err := cli.NewProjectOptions(files, cli.WithWorkingDirectory(filepath.Join(envDir, "local")), cli.WithName("tutor_local"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("tutor local compose files: %v", err)
	}
	for _, name := range []string{"coordinator-api", "coordinator-worker"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no %s service", name)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		cfg := checkConfigEnv(t, "rendered "+name, env) // real secrets, real bcrypt hash
		if cfg.Database.URL != "" {
			if dep := s.DependsOn["coordinator-migrate"]; dep.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("%s does not wait for the migration: %+v", name, s.DependsOn)
			}
		}
		if len(s.Ports) > 0 {
			t.Errorf("%s publishes %+v", name, s.Ports)
		}
	}
	if r, ok := p.Services["coordinator-redis"]; ok {
		if cmd := strings.Join(r.Command, " "); !strings.Contains(cmd, "--appendfsync always") || !strings.Contains(cmd, "noeviction") {
			t.Errorf("coordinator-redis: %s", cmd)
		}
	}
	caddy, err := os.ReadFile(filepath.Join(envDir, "apps/caddy/Caddyfile"))
	if err != nil || !bytes.Contains(caddy, []byte(`import proxy "coordinator-api:8140"`)) {
		t.Errorf("Caddyfile has no route to coordinator-api: %v", err)
	}

	kubectl := requireTool(t, "kubectl", "kubernetes-client")
	out, err := exec.Command(kubectl, "kustomize", envDir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", envDir, err)
	}
	objs := decodeK8s(t, out)
	var secret *corev1.Secret
	var configMap *corev1.ConfigMap
	deployments := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *corev1.Secret:
			if x.Name == "coordinator-secrets" {
				secret = x
			}
		case *corev1.ConfigMap:
			if x.Name == "coordinator-env" {
				configMap = x
			}
		case *appsv1.Deployment:
			deployments[x.Name] = x
		}
	}
	if secret == nil || configMap == nil {
		t.Fatal("no coordinator-secrets Secret or coordinator-env ConfigMap")
	}
	env := maps.Clone(configMap.Data)
	maps.Copy(env, secret.StringData)
	cfg := checkConfigEnv(t, "rendered k8s", env)
	for _, role := range []string{"api", "worker"} {
		d, ok := deployments["coordinator-"+role]
		if !ok {
			t.Fatalf("no coordinator-%s Deployment", role)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.LivenessProbe.HTTPGet.Path != "/health/live" || c.ReadinessProbe.HTTPGet.Path != "/health/ready" {
			t.Errorf("coordinator-%s probes %s, %s", role, c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
		}
		if role == "worker" && int(*d.Spec.Replicas)*cfg.LMS.RatePerMinute > lmsDefaultThrottle {
			t.Errorf("%d workers x %d/min exceed the LMS's default throttle", *d.Spec.Replicas, cfg.LMS.RatePerMinute)
		}
	}
	if _, ok := deployments["coordinator-redis"]; !ok {
		t.Error("no coordinator-redis Deployment")
	}
}
