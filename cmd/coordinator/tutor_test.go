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

	"encoding/json"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
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
	templates["coordinator.yaml"] = readDeploy(t, filepath.Join(tutorDir, tutorConfigTemplate))
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

// tutorConfigTemplate is the plugin's config file template; Tutor renders
// it to env/plugins/coordinator/apps/config/coordinator.yaml.
const tutorConfigTemplate = "templates/coordinator/apps/config/coordinator.yaml"

// tutorRender is the plugin rendered by testdata/tutor/render.py.
type tutorRender struct {
	Patches   map[string]string `json:"patches"`
	Templates map[string]string `json:"templates"`
}

// renderTutor renders the plugin with Jinja2, as `tutor config save` does,
// with settings as given by `--set`.
func renderTutor(t *testing.T, settings map[string]any) tutorRender {
	t.Helper()
	python := requireTool(t, "python3", "python3")
	if err := exec.Command(python, "-c", "import jinja2").Run(); err != nil {
		msg := "python3 has no jinja2 (Debian package python3-jinja2; `make setup` and .ci/run install it)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	js, err := json.Marshal(settings)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, filepath.Join("testdata", "tutor", "render.py"), filepath.Join(deployDir, tutorDir), string(js), sampleBcrypt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render the Tutor plugin: %v\n%s", err, stderr.String())
	}
	var r tutorRender
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTutorRender renders the plugin, without and with a shop and a
// subscriber set by Tutor settings only, and checks what tutor local and
// tutor k8s would run: the rendered config file, mounted, passes `config
// check` with the environment each gives the containers, and the shop's
// secret reaches them intact but stays out of the config file.
func TestTutorRender(t *testing.T) {
	// A secret with the characters Compose, YAML and JSON treat specially.
	wooSecret := `woo-"$ecret'\-0123456789`
	shops := map[string]any{
		"COORDINATOR_INTEGRATIONS": []any{map[string]any{
			"name": "woo", "type": "woocommerce", "secrets": []string{"${WOO_WEBHOOK_SECRET}"},
			"products": map[string]any{"DEMO-VERIFIED": map[string]string{"course_id": demoCourse, "mode": "verified"}},
		}},
		"COORDINATOR_WEBHOOKS": []any{map[string]any{
			"name": "crm", "url": "https://crm.example.com/hooks/openedx", "secrets": []string{"${CRM_WEBHOOK_SECRET}"},
		}},
		"COORDINATOR_SIGNALS":    map[string]any{"fulfillment_completed": []string{"webhook.crm"}},
		"COORDINATOR_SECRET_ENV": map[string]string{"WOO_WEBHOOK_SECRET": wooSecret, "CRM_WEBHOOK_SECRET": shopSecrets["CRM_WEBHOOK_SECRET"]},
	}
	head, _, _ := strings.Cut(readDeploy(t, "coordinator.yaml"), "# Shops and subscribers: uncomment")
	for _, c := range []struct {
		name     string
		settings map[string]any
	}{{"defaults", map[string]any{}}, {"shops", shops}} {
		t.Run(c.name, func(t *testing.T) {
			r := renderTutor(t, c.settings)
			text, ok := r.Templates["plugins/coordinator/apps/config/coordinator.yaml"]
			if !ok {
				t.Fatalf("no config file rendered: %v", slices.Sorted(maps.Keys(r.Templates)))
			}
			if !strings.HasPrefix(text, head) {
				t.Error("the plugin's config template does not begin with deploy/coordinator.yaml")
			}
			if strings.Contains(text, wooSecret) || strings.Contains(text, shopSecrets["CRM_WEBHOOK_SECRET"]) {
				t.Error("a shop's secret is written into the config file (a ConfigMap under k8s)")
			}
			check := func(where, text string, env map[string]string) {
				t.Helper()
				cfg := checkConfigText(t, where, text, env)
				if len(c.settings) == 0 {
					if len(cfg.Integrations)+len(cfg.Webhooks) > 0 {
						t.Errorf("%s: shops or subscribers without settings", where)
					}
					return
				}
				checkShops(t, where, cfg)
				if len(cfg.Integrations) == 1 && cfg.Integrations[0].Secrets[0] != wooSecret {
					t.Errorf("%s: the shop's secret arrives as %q, want %q", where, cfg.Integrations[0].Secrets[0], wooSecret)
				}
			}

			// tutor local: the services mount the rendered folder.
			var services map[string]struct {
				Volumes     []string          `json:"volumes"`
				Environment map[string]string `json:"environment"`
			}
			if err := sigsyaml.Unmarshal([]byte(r.Patches["local-docker-compose-services"]), &services); err != nil {
				t.Fatalf("local-docker-compose-services: %v", err)
			}
			for _, name := range []string{"coordinator-api", "coordinator-worker"} {
				s := services[name]
				// env/local/docker-compose.yml: ../plugins is env/plugins.
				if !slices.Contains(s.Volumes, "../plugins/coordinator/apps/config:/etc/coordinator:ro") {
					t.Errorf("%s volumes %v: the rendered config is not mounted", name, s.Volumes)
				}
				env := map[string]string{}
				for k, v := range s.Environment {
					if strings.Contains(strings.ReplaceAll(v, "$$", ""), "$") {
						t.Errorf("%s: %s has a bare $, which Compose would read as a variable", name, k)
					}
					env[k] = strings.ReplaceAll(v, "$$", "$") // Compose's escape
				}
				check("tutor local "+name, text, env)
			}

			// tutor k8s: the ConfigMap of the configmapgenerator patch.
			var generators []struct {
				Name  string   `json:"name"`
				Files []string `json:"files"`
			}
			if err := sigsyaml.Unmarshal([]byte(r.Patches["kustomization-configmapgenerator"]), &generators); err != nil {
				t.Fatalf("kustomization-configmapgenerator: %v", err)
			}
			if len(generators) != 1 || generators[0].Name != "coordinator-config" ||
				!slices.Equal(generators[0].Files, []string{"plugins/coordinator/apps/config/coordinator.yaml"}) {
				t.Errorf("configmapgenerator %+v, want coordinator-config from the rendered config file", generators)
			}
			env := map[string]string{}
			var deployments []*appsv1.Deployment
			for _, o := range decodeK8s(t, []byte(r.Patches["k8s-deployments"])) {
				switch x := o.obj.(type) {
				case *corev1.Secret:
					maps.Copy(env, x.StringData)
				case *corev1.ConfigMap:
					maps.Copy(env, x.Data)
				case *appsv1.Deployment:
					if x.Name != "coordinator-redis" {
						deployments = append(deployments, x)
					}
				}
			}
			generated := map[string]*corev1.ConfigMap{"coordinator-config": {Data: map[string]string{"coordinator.yaml": text}}}
			for _, d := range deployments {
				check("tutor k8s "+d.Name, podConfig(t, d.Spec.Template.Spec, generated), env)
			}
			if len(deployments) != 2 {
				t.Errorf("%d coordinator Deployments, want api and worker", len(deployments))
			}
		})
	}
}
