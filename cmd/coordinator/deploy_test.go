package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/openedx/coordinator/internal/config"
)

// The deployment files under deploy/ are checked with the tools their users
// run (kubectl kustomize, a Compose loader, systemd-analyze, promtool,
// Tutor's hook names) and against the real binary's commands and config
// keys, so they cannot drift from it.

const deployDir = "../../deploy"

// lmsDefaultThrottle is the enrollment API's default throttle for a staff
// service user (docs/lms.md): what every worker of a deployment shares.
const lmsDefaultThrottle = 120

// sampleBcrypt is a valid bcrypt hash ("ops-password", cost 10) standing in
// for the operator's.
const sampleBcrypt = "$2a$10$70j7exjLR/PQb8bA9/k4t.cQKZQti6Lq56hJyUBiaKWGUVr8BhTBe"

var (
	runnable = []string{"api", "worker", "all", "migrate"}
	envRef   = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// requireTool returns the path of a command-line tool the check needs. It
// skips the test when the tool is missing on a developer's machine, and fails
// it in CI, where .ci/run installs every tool.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not installed (Debian package %s; `make setup` and .ci/run install it)", name, debianPackage)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func readDeploy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkConfigEnv parses the shipped container config with env and checks
// that env provides every variable it references.
func checkConfigEnv(t *testing.T, where string, env map[string]string) config.Config {
	t.Helper()
	return checkConfigText(t, where, readDeploy(t, "coordinator.yaml"), env)
}

// commentLine is a YAML line holding only a comment.
var commentLine = regexp.MustCompile(`(?m)^\s*#.*$`)

// checkConfigText parses a deployment's config file with env, checks that
// env provides every variable it references, and runs `config check` on it.
func checkConfigText(t *testing.T, where, text string, env map[string]string) config.Config {
	t.Helper()
	for _, m := range envRef.FindAllStringSubmatch(commentLine.ReplaceAllString(text, ""), -1) {
		if _, ok := env[m[1]]; !ok {
			t.Errorf("%s does not set ${%s}, which its config file uses", where, m[1])
		}
	}
	cfg, err := config.Parse([]byte(text), func(k string) string { return env[k] })
	if err != nil {
		t.Errorf("%s: the config file does not load: %v", where, err)
	}
	if err := configCheck(cfg, &strings.Builder{}); err != nil {
		t.Errorf("%s: config check: %v", where, err)
	}
	return cfg
}

// shopsMarker starts deploy/coordinator.yaml's commented example of shops
// and subscribers.
const shopsMarker = "# --- shops and subscribers ---\n"

// withShops is a config file with its commented shops and subscribers
// example turned on, as an operator does.
func withShops(t *testing.T, text string) string {
	t.Helper()
	head, tail, ok := strings.Cut(text, shopsMarker)
	if !ok {
		t.Fatalf("the config file has no %q section", strings.TrimSpace(shopsMarker))
	}
	return head + regexp.MustCompile(`(?m)^# ?`).ReplaceAllString(tail, "")
}

// shopSecrets are the secrets the shops example names.
var shopSecrets = map[string]string{
	"WOO_WEBHOOK_SECRET": "woo-webhook-secret-0123456789",
	"CRM_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}

// checkShops checks that a config with the shops example on has them.
func checkShops(t *testing.T, where string, cfg config.Config) {
	t.Helper()
	if len(cfg.Integrations) != 1 || len(cfg.Integrations[0].Secrets) != 1 || len(cfg.Webhooks) != 1 || len(cfg.Webhooks[0].Secrets) != 1 {
		t.Errorf("%s: %d integrations, %d subscribers, want the example's one of each with its secret", where, len(cfg.Integrations), len(cfg.Webhooks))
	}
}

// sample fills placeholders and blanks with valid values, as an operator would.
func sample(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		if v == "" || strings.Contains(v, "change-me") || strings.Contains(v, "${") || strings.Contains(v, "{{") {
			v = map[string]string{"LMS_CLIENT_SECRET": "s", "JWT_SECRET_KEY": testJWTSecret, "REDIS_URL": "redis://redis:6379/2",
				"LMS_URL": "http://lms:8000", "LMS_CLIENT_ID": "coordinator-worker", "JWT_ISSUER": "http://lms:8000/oauth2",
				"JWT_AUDIENCE": "lms-key", "HTTP_ADDR": "0.0.0.0:8140", "ADMIN_USER": "ops",
				"ADMIN_PASSWORD_BCRYPT": sampleBcrypt, "LMS_RATE_PER_MINUTE": "120"}[k]
		}
		out[k] = v
	}
	return out
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s) // a malformed number reads as 0, which the checks then refuse
	return n
}

// pinnedImage reports what is wrong with a coordinator image reference: it
// must name a release, never :latest or no tag at all.
func pinnedImage(image string) error {
	_, tag, ok := strings.Cut(strings.TrimPrefix(image, "ghcr.io/"), ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("image %q has no tag", image)
	case tag == "latest":
		return fmt.Errorf("image %q floats on :latest", image)
	}
	return nil
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

// composeEnv is what an operator's .env provides: the required secrets.
var composeEnv = []string{
	"LMS_CLIENT_SECRET=s", "JWT_SECRET_KEY=" + testJWTSecret, "ADMIN_PASSWORD_BCRYPT=" + sampleBcrypt,
	"COORDINATOR_SECRET_KEY=" + testSecretKey,
}

// loadCompose loads the Compose files as `docker compose -f ... config`
// does, with compose-go, the Compose specification's reference loader.
func loadCompose(t *testing.T, env []string, files ...string) *types.Project {
	t.Helper()
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(deployDir, f))
	}
	opts, err := cli.NewProjectOptions(paths, cli.WithWorkingDirectory(deployDir), cli.WithEnv(env),
		cli.WithName("coordinator"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose %v: %v", files, err)
	}
	return p
}

func TestCompose(t *testing.T) {
	for _, c := range []struct {
		files               []string
		postgres, memcached bool
	}{
		{[]string{"docker-compose.yml"}, false, false},
		{[]string{"docker-compose.yml", "compose.postgres.yml"}, true, false},
		{[]string{"docker-compose.yml", "compose.memcached.yml"}, false, true},
		{[]string{"docker-compose.yml", "compose.postgres.yml", "compose.memcached.yml"}, true, true},
	} {
		t.Run(strings.Join(c.files, "+"), func(t *testing.T) {
			p := loadCompose(t, composeEnv, c.files...)
			coordinators := []string{"api", "worker"}
			if c.postgres {
				coordinators = append(coordinators, "migrate")
			}
			for _, name := range coordinators {
				s, ok := p.Services[name]
				if !ok {
					t.Fatalf("no %s service", name)
				}
				if err := pinnedImage(s.Image); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if len(s.Command) != 1 || !slices.Contains(runnable, s.Command[0]) {
					t.Errorf("%s command %q is not a coordinator command", name, s.Command)
				}
				cfg := checkConfigText(t, "compose "+name, composeConfig(t, s), composeServiceEnv(s))
				// The tiers are on exactly when their file is loaded, and
				// point at services of the project.
				if on := cfg.Database.URL != ""; on != c.postgres {
					t.Errorf("%s: Postgres tier on = %v, want %v", name, on, c.postgres)
				} else if on {
					u, err := url.Parse(cfg.Database.URL)
					if err != nil || u.Hostname() != "postgres" || p.Services["postgres"].Name == "" {
						t.Errorf("%s: database.url %q does not name the project's postgres service", name, cfg.Database.URL)
					}
				}
				if on := len(cfg.Cache.Memcached) > 0; name != "migrate" && on != c.memcached {
					t.Errorf("%s: memcached tier on = %v, want %v", name, on, c.memcached)
				} else if on {
					host, _, _ := net.SplitHostPort(cfg.Cache.Memcached[0])
					if _, ok := p.Services[host]; !ok {
						t.Errorf("%s: cache.memcached %v names no service", name, cfg.Cache.Memcached)
					}
				}
				if dep := s.DependsOn["redis"]; dep.Condition != types.ServiceConditionHealthy {
					t.Errorf("%s does not wait for a healthy Redis: %+v", name, dep)
				}
				if name != "migrate" && c.postgres {
					if dep := s.DependsOn["migrate"]; dep.Condition != types.ServiceConditionCompletedSuccessfully {
						t.Errorf("%s does not wait for the migration to succeed: %+v", name, dep)
					}
				}
			}
			if c.postgres {
				m := p.Services["migrate"]
				if dep := m.DependsOn["postgres"]; dep.Condition != types.ServiceConditionHealthy {
					t.Errorf("migrate does not wait for a healthy Postgres: %+v", dep)
				}
				if len(m.Ports) > 0 || m.Restart != "no" {
					t.Errorf("migrate is a one-shot job: ports %v, restart %q", m.Ports, m.Restart)
				}
			}
			api := p.Services["api"]
			if len(api.Ports) != 1 || api.Ports[0].HostIP != "127.0.0.1" || api.Ports[0].Target != 8140 {
				t.Errorf("api ports %+v, want 127.0.0.1:8140 by default (/metrics and /admin must not face every network)", api.Ports)
			}
			if w := p.Services["worker"]; len(w.Ports) > 0 {
				t.Errorf("worker publishes %+v", w.Ports)
			}
			redis := strings.Join(p.Services["redis"].Command, " ")
			for _, want := range []string{"--appendonly yes", "--appendfsync always", "--maxmemory-policy noeviction"} {
				if !strings.Contains(redis, want) {
					t.Errorf("compose Redis %q lacks %s: queued orders must be on disk and never evicted", redis, want)
				}
			}
			workers := p.Services["worker"]
			rate := mustAtoi(*workers.Environment["LMS_RATE_PER_MINUTE"])
			if n := max(1, workers.GetScale()); n*rate > lmsDefaultThrottle {
				t.Errorf("%d worker(s) x %d/min exceed the LMS's default throttle %d/min", n, rate, lmsDefaultThrottle)
			}
		})
	}
	// Shops and subscribers: the operator's copy of the config, mounted,
	// and their secrets in coordinator.env.
	dir := t.TempDir()
	shopConfig, envFile := filepath.Join(dir, "coordinator.yaml"), filepath.Join(dir, "coordinator.env")
	var envLines strings.Builder
	for k, v := range shopSecrets {
		fmt.Fprintf(&envLines, "%s=%s\n", k, v)
	}
	if err := os.WriteFile(shopConfig, []byte(withShops(t, readDeploy(t, "coordinator.yaml"))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(envFile, []byte(envLines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	shops := loadCompose(t, append(slices.Clone(composeEnv), "COORDINATOR_CONFIG_FILE="+shopConfig, "COORDINATOR_ENV_FILE="+envFile),
		"docker-compose.yml", "compose.postgres.yml")
	for _, name := range []string{"api", "worker", "migrate"} {
		s := shops.Services[name]
		checkShops(t, "compose "+name, checkConfigText(t, "compose with shops "+name, composeConfig(t, s), composeServiceEnv(s)))
	}

	// The operator chooses where the API listens.
	p := loadCompose(t, append(slices.Clone(composeEnv), "COORDINATOR_BIND=0.0.0.0", "COORDINATOR_PORT=9000"), "docker-compose.yml")
	if port := p.Services["api"].Ports[0]; port.HostIP != "0.0.0.0" || port.Published != "9000" {
		t.Errorf("COORDINATOR_BIND/PORT ignored: %+v", port)
	}
	// A missing secret stops Compose with a message, instead of a config error later.
	opts, _ := cli.NewProjectOptions([]string{filepath.Join(deployDir, "docker-compose.yml")},
		cli.WithWorkingDirectory(deployDir), cli.WithEnv(composeEnv[:2]), cli.WithName("coordinator"))
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "ADMIN_PASSWORD_BCRYPT") {
		t.Errorf("compose without ADMIN_PASSWORD_BCRYPT: %v, want an error naming it", err)
	}
}

// composeServiceEnv is a Compose service's environment, env_file included.
func composeServiceEnv(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

// composeConfig reads the config file a Compose service mounts where the
// image reads it.
func composeConfig(t *testing.T, s types.ServiceConfig) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == "/etc/coordinator/coordinator.yaml" {
			if !v.ReadOnly {
				t.Errorf("%s mounts its config writable", s.Name)
			}
			b, err := os.ReadFile(v.Source)
			if err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
			return string(b)
		}
	}
	t.Fatalf("%s mounts no config file at /etc/coordinator/coordinator.yaml", s.Name)
	return ""
}

// k8sObject is one object of the kustomize output, decoded strictly into
// its Kubernetes API type.
type k8sObject struct {
	kind, name, namespace string
	obj                   any
}

// decodeK8s decodes each YAML document into its API type, refusing unknown
// fields as the API server does with --validate=strict.
func decodeK8s(t *testing.T, data []byte) []k8sObject {
	t.Helper()
	types := map[string]func() any{
		"v1/Namespace":                           func() any { return &corev1.Namespace{} },
		"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
		"v1/Secret":                              func() any { return &corev1.Secret{} },
		"v1/Service":                             func() any { return &corev1.Service{} },
		"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
		"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
		"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
		"v1/PersistentVolumeClaim":               func() any { return &corev1.PersistentVolumeClaim{} },
		"batch/v1/Job":                           func() any { return &batchv1.Job{} },
	}
	var out []k8sObject
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("kustomize output: %v", err)
		}
		newObj, ok := types[meta.APIVersion+"/"+meta.Kind]
		if !ok {
			t.Errorf("%s/%s %s: no API type known to this test", meta.APIVersion, meta.Kind, meta.Metadata.Name)
			continue
		}
		obj := newObj()
		if err := sigsyaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("%s %s does not decode strictly: %v", meta.Kind, meta.Metadata.Name, err)
			continue
		}
		out = append(out, k8sObject{meta.Kind, meta.Metadata.Name, meta.Metadata.Namespace, obj})
	}
	return out
}

func TestKubernetes(t *testing.T) {
	kubectl := requireTool(t, "kubectl", "kubernetes-client")
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(deployDir, "k8s"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	rendered, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy/k8s: %v\n%s", err, stderr.String())
	}
	objs := decodeK8s(t, rendered)
	byName := map[string]k8sObject{}
	configMaps := map[string]*corev1.ConfigMap{}
	for _, o := range objs {
		byName[o.kind+"/"+o.name] = o
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			configMaps[o.name] = cm
		}
		if o.kind != "Namespace" && o.namespace != "coordinator" {
			t.Errorf("%s %s is in namespace %q, want coordinator", o.kind, o.name, o.namespace)
		}
	}
	for _, want := range []string{"Namespace/coordinator", "Deployment/coordinator-api", "Deployment/coordinator-worker",
		"Service/coordinator", "HorizontalPodAutoscaler/coordinator-api",
		"PodDisruptionBudget/coordinator-api", "PodDisruptionBudget/coordinator-worker"} {
		if _, ok := byName[want]; !ok {
			t.Errorf("kustomize output lacks %s", want)
		}
	}

	// The Secret the operator creates from the example.
	secretObjs := decodeK8s(t, []byte(readDeploy(t, "k8s/secret.example.yaml")))
	if len(secretObjs) != 1 {
		t.Fatalf("secret.example.yaml: %d objects", len(secretObjs))
	}
	secret := secretObjs[0].obj.(*corev1.Secret)
	if secret.Namespace != "coordinator" {
		t.Errorf("the example Secret is in namespace %q", secret.Namespace)
	}

	deployments := map[string]*appsv1.Deployment{}
	for _, role := range []string{"api", "worker"} {
		o, ok := byName["Deployment/coordinator-"+role]
		if !ok {
			continue
		}
		d := o.obj.(*appsv1.Deployment)
		deployments[role] = d
		pod := d.Spec.Template.Spec
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers", role, len(pod.Containers))
		}
		c := pod.Containers[0]
		if err := pinnedImage(c.Image); err != nil {
			t.Errorf("%s: %v", role, err)
		}
		if !slices.Equal(c.Args, []string{role}) {
			t.Errorf("%s args %v, want [%s] (the image's config, deploy/coordinator.yaml)", role, c.Args, role)
		}
		// The environment: the generated ConfigMap and the operator's Secret.
		env := map[string]string{}
		var refs []string
		for _, from := range c.EnvFrom {
			switch {
			case from.ConfigMapRef != nil:
				cm, ok := configMaps[from.ConfigMapRef.Name]
				if !ok {
					t.Errorf("%s reads ConfigMap %s, which kustomize does not make", role, from.ConfigMapRef.Name)
					continue
				}
				maps.Copy(env, cm.Data)
				refs = append(refs, "configmap")
			case from.SecretRef != nil:
				if from.SecretRef.Name != secret.Name {
					t.Errorf("%s reads Secret %s; the example makes %s", role, from.SecretRef.Name, secret.Name)
				}
				maps.Copy(env, secret.StringData)
				refs = append(refs, "secret")
			}
		}
		if !slices.Equal(refs, []string{"configmap", "secret"}) {
			t.Errorf("%s envFrom %v", role, refs)
		}
		cfgText := podConfig(t, pod, configMaps)
		if cfgText != readDeploy(t, "coordinator.yaml") {
			t.Errorf("%s: deploy/k8s/coordinator.yaml is not a copy of deploy/coordinator.yaml", role)
		}
		cfg := checkConfigText(t, "kubernetes "+role, cfgText, sample(env))
		_, port, _ := net.SplitHostPort(cfg.HTTP.Addr)
		if len(c.Ports) != 1 || c.Ports[0].Name != "http" || int(c.Ports[0].ContainerPort) != mustAtoi(port) {
			t.Errorf("%s ports %+v, but http.addr is %s", role, c.Ports, cfg.HTTP.Addr)
		}
		// Liveness asks only whether the process is alive, so a Redis
		// outage never restarts pods; readiness asks whether it can work.
		for _, p := range []struct {
			name, path string
			probe      *corev1.Probe
		}{{"livenessProbe", "/health/live", c.LivenessProbe}, {"readinessProbe", "/health/ready", c.ReadinessProbe}} {
			if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
				t.Errorf("%s %s must GET %s on the http port", role, p.name, p.path)
			} else if p.probe.TimeoutSeconds < 3 {
				t.Errorf("%s %s timeout %ds: a dependency check may take 2s", role, p.name, p.probe.TimeoutSeconds)
			}
		}
		if grace := pod.TerminationGracePeriodSeconds; grace == nil || float64(*grace) <= cfg.ShutdownTimeout.D().Seconds() {
			t.Errorf("%s terminationGracePeriodSeconds %v must exceed shutdown_timeout %v", role, grace, cfg.ShutdownTimeout.D())
		}
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s must run as non-root", role)
		}
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s must have a read-only root filesystem", role)
		}
		for k, v := range d.Spec.Selector.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("%s selector %v does not match its pods %v", role, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
			}
		}
		if role == "worker" {
			// The LMS, not CPU, limits workers: their summed rate stays
			// under its throttle, rollouts included.
			replicas := int(*d.Spec.Replicas)
			if rate := cfg.LMS.RatePerMinute; replicas*rate > lmsDefaultThrottle {
				t.Errorf("%d workers x lms.rate_per_minute %d exceed the LMS's default throttle %d/min", replicas, rate, lmsDefaultThrottle)
			}
			if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
				t.Errorf("worker rollouts may surge past the LMS's throttle: %+v", d.Spec.Strategy)
			}
		}
	}
	if svc, ok := byName["Service/coordinator"]; ok {
		sel := svc.obj.(*corev1.Service).Spec.Selector
		for role, d := range deployments {
			matches := true
			for k, v := range sel {
				matches = matches && d.Spec.Template.Labels[k] == v
			}
			if matches != (role == "api") {
				t.Errorf("Service selector %v matches the %s pods: %v", sel, role, matches)
			}
		}
	}
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := x.Spec.ScaleTargetRef
			if _, ok := byName[ref.Kind+"/"+ref.Name]; !ok {
				t.Errorf("HPA %s targets %s/%s, which does not exist", o.name, ref.Kind, ref.Name)
			}
			if ref.Name == "coordinator-worker" {
				t.Errorf("HPA %s scales workers: more workers only add 429s from the LMS", o.name)
			}
		case *policyv1.PodDisruptionBudget:
			found := false
			for _, d := range deployments {
				match := true
				for k, v := range x.Spec.Selector.MatchLabels {
					match = match && d.Spec.Template.Labels[k] == v
				}
				found = found || match
			}
			if !found {
				t.Errorf("PDB %s selects no pods", o.name)
			}
		}
	}
}

// podConfig is the config file a pod's container reads: the ConfigMap
// mounted at /etc/coordinator, where the image's COORDINATOR_CONFIG points.
func podConfig(t *testing.T, pod corev1.PodSpec, configMaps map[string]*corev1.ConfigMap) string {
	t.Helper()
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.MountPath != "/etc/coordinator" {
			continue
		}
		if !m.ReadOnly {
			t.Error("the config volume is mounted writable")
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				cm, ok := configMaps[v.ConfigMap.Name]
				if !ok {
					t.Fatalf("the pods mount ConfigMap %s, which kustomize does not make", v.ConfigMap.Name)
				}
				return cm.Data["coordinator.yaml"]
			}
		}
	}
	t.Fatal("no ConfigMap mounted at /etc/coordinator: the pods would run the image's built-in config")
	return ""
}

// An operator's overlay replaces the config with one holding shops and
// subscribers, and adds their secrets to the Secret: it renders, and every
// pod's config passes `config check` with them.
func TestKubernetesShops(t *testing.T) {
	kubectl := requireTool(t, "kubectl", "kubernetes-client")
	base, err := filepath.Abs(filepath.Join(deployDir, "k8s"))
	if err != nil {
		t.Fatal(err)
	}
	overlay := t.TempDir()
	rel, err := filepath.Rel(overlay, base) // kustomize takes no absolute resource paths
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"kustomization.yaml": "resources: [" + rel + "]\n" +
			"configMapGenerator:\n  - {name: coordinator-config, behavior: replace, files: [coordinator.yaml]}\n",
		"coordinator.yaml": withShops(t, readDeploy(t, "k8s/coordinator.yaml")),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(overlay, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(kubectl, "kustomize", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize of the overlay: %v\n%s", err, out)
	}
	configMaps := map[string]*corev1.ConfigMap{}
	var deployments []*appsv1.Deployment
	for _, o := range decodeK8s(t, out) {
		switch x := o.obj.(type) {
		case *corev1.ConfigMap:
			configMaps[x.Name] = x
		case *appsv1.Deployment:
			deployments = append(deployments, x)
		}
	}
	secret := decodeK8s(t, []byte(readDeploy(t, "k8s/secret.example.yaml")))[0].obj.(*corev1.Secret)
	for _, d := range deployments {
		env := map[string]string{}
		for _, cm := range configMaps {
			if strings.HasPrefix(cm.Name, "coordinator-env") {
				maps.Copy(env, cm.Data)
			}
		}
		maps.Copy(env, secret.StringData)
		env = sample(env)
		maps.Copy(env, shopSecrets)
		cfg := checkConfigText(t, "kubernetes overlay "+d.Name, podConfig(t, d.Spec.Template.Spec, configMaps), env)
		checkShops(t, "kubernetes overlay "+d.Name, cfg)
	}
	if len(deployments) != 2 {
		t.Errorf("the overlay renders %d Deployments, want api and worker", len(deployments))
	}
}

// systemdEnv reads an EnvironmentFile as systemd does (single quotes verbatim).
func systemdEnv(text string) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
				v = v[1 : len(v)-1]
			}
			env[k] = v
		}
	}
	return env
}

func TestSystemd(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "systemd")
	env := systemdEnv(readDeploy(t, "systemd/env.example"))
	if _, ok := env["HTTP_ADDR"]; ok {
		t.Error("env.example sets HTTP_ADDR, which would override both units' own")
	}
	// An alternate root holding the real binary where the units expect it,
	// so that `systemd-analyze verify` checks ExecStart too.
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/coordinator", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, err := os.ReadFile(coordinatorBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"usr/local/bin/coordinator":                     bin,
		"etc/coordinator/coordinator.yaml":              []byte(readDeploy(t, "coordinator.yaml")),
		"etc/coordinator/env":                           []byte(readDeploy(t, "systemd/env.example")),
		"etc/systemd/system/coordinator-api.service":    []byte(readDeploy(t, "systemd/coordinator-api.service")),
		"etc/systemd/system/coordinator-worker.service": []byte(readDeploy(t, "systemd/coordinator-worker.service")),
	}
	for name, b := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "usr/") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(root, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	addrs := map[string]bool{}
	for _, role := range []string{"api", "worker"} {
		unitName := "coordinator-" + role + ".service"
		unit := readDeploy(t, "systemd/"+unitName)
		out, err := exec.Command(analyze, "verify", "--root="+root, "--man=no", "--recursive-errors=no",
			"/etc/systemd/system/"+unitName).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unitName, err, out)
		}
		out, err = exec.Command(analyze, "security", "--offline=true", "--no-pager",
			filepath.Join(deployDir, "systemd", unitName)).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindSubmatch(out)
		if err != nil || m == nil {
			t.Errorf("systemd-analyze security %s: %v\n%s", unitName, err, out)
		} else if exposure, _ := strconv.ParseFloat(string(m[1]), 64); exposure > 2.0 {
			t.Errorf("%s: exposure %.1f, want at most 2.0:\n%s", unitName, exposure, out)
		} else {
			t.Logf("%s: systemd-analyze security exposure %.1f", unitName, exposure)
		}
		// The account it runs as exists: systemd makes it at start.
		if !strings.Contains(unit, "\nDynamicUser=yes\n") || !strings.Contains(unit, "\nUser=coordinator\n") {
			t.Errorf("%s must run as the dynamic user coordinator", unitName)
		}
		if !strings.Contains(unit, "ExecStart=/usr/local/bin/coordinator --config /etc/coordinator/coordinator.yaml "+role+"\n") {
			t.Errorf("%s ExecStart is not `coordinator --config ... %s`", unitName, role)
		}
		unitEnv := maps.Clone(env)
		if m := regexp.MustCompile(`Environment=HTTP_ADDR=(\S+)`).FindStringSubmatch(unit); m != nil {
			unitEnv["HTTP_ADDR"] = m[1]
		}
		cfg := checkConfigEnv(t, "systemd "+role, sample(unitEnv))
		if addrs[cfg.HTTP.Addr] {
			t.Errorf("both units listen on %s", cfg.HTTP.Addr)
		}
		addrs[cfg.HTTP.Addr] = true
		if role == "worker" && cfg.LMS.RatePerMinute > lmsDefaultThrottle {
			t.Errorf("one worker at %d/min exceeds the LMS's default throttle", cfg.LMS.RatePerMinute)
		}
		m2 := regexp.MustCompile(`TimeoutStopSec=(\d+)`).FindStringSubmatch(unit)
		if m2 == nil || float64(mustAtoi(m2[1])) <= cfg.ShutdownTimeout.D().Seconds() {
			t.Errorf("%s TimeoutStopSec %v must exceed shutdown_timeout", unitName, m2)
		}
	}
}
