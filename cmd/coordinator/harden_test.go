package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// `coordinator api` and `coordinator worker` run side by side from one
// config file: the API on http.addr, the worker's /health and /metrics on
// worker.http_addr. They used to both listen on http.addr.
func TestAPIAndWorkerSideBySide(t *testing.T) {
	t.Parallel()
	_, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	path := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, "")
	rewrite(t, path, 0o600, "log: {level: warn}", "log: {level: info}")
	cfg, err := config.Load(path, func(k string) string { return testEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{base: startRun(t, "api", path)}
	_, workerLogs := startRunLogs(t, "worker", path)
	workerBase := "http://" + cfg.Worker.HTTPAddr
	waitHealthy(t, workerBase, nil)

	status, out := in.fulfill(t, orderBody("SIDE-1", 3, ""), "")
	if status != http.StatusOK {
		t.Fatalf("fulfill through the api: %d %v", status, out)
	}
	waitFor(t, "the worker to enroll the order", 20*time.Second, func() bool { return len(fake.Calls(lmstest.Enroll)) == 1 })
	if m := scrape(t, workerBase); !strings.Contains(m, `coordinator_tasks_total{kind="enroll",outcome="enrolled"} 1`) {
		t.Errorf("the worker's /metrics on worker.http_addr lacks its enrollment")
	}
	if m := scrape(t, in.base); !strings.Contains(m, `coordinator_http_requests_total{method="POST",route="/orders/fulfill",status="200"} 1`) {
		t.Errorf("the api's /metrics on http.addr lacks the fulfill request")
	}
	if !strings.Contains(workerLogs.String(), fmt.Sprintf(`"http_addr":%q`, cfg.Worker.HTTPAddr)) {
		t.Errorf("the worker's start-up line does not name worker.http_addr:\n%s", workerLogs)
	}
}

// The start-up line shows lms.url without its user info, and warns about a
// config file that others can read while it holds a secret, without
// showing the secret.
func TestStartupLogHidesSecrets(t *testing.T) {
	t.Parallel()
	const canary = "S3cr3t-canary-lms-5e1d"
	_, queue := queuetest.Redis(t)
	lms := lmstest.Start(t, lmstest.NewDemo(canary))
	path := testConfig(t, queuetest.URL(), strings.Replace(lms.URL, "http://", "http://coordinator:"+canary+"@", 1), queue, "")
	rewrite(t, path, 0o644, `"${TEST_LMS_SECRET}"`, `"`+canary+`"`, "log: {level: warn}", "log: {level: info}")
	_, logs := startRunLogs(t, "api", path)
	out := logs.String()
	if strings.Contains(out, canary) || strings.Contains(out, "5e1d") {
		t.Errorf("the log shows a secret:\n%s", out)
	}
	if !strings.Contains(out, `"lms_url":"`+lms.URL+`"`) {
		t.Errorf("the start-up line does not show lms.url without user info:\n%s", out)
	}
	if !strings.Contains(out, `"msg":"config_warning"`) || !strings.Contains(out, "holds secrets (lms.client_secret)") {
		t.Errorf("no warning about the readable file holding lms.client_secret:\n%s", out)
	}
}

// rewrite replaces old/new pairs in the file and sets its mode.
func rewrite(t *testing.T, path string, mode os.FileMode, oldNew ...string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("%s lacks %q", path, oldNew[i])
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	if err := os.WriteFile(path, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
