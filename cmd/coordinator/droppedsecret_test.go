package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// A rotation's second secret whose variable is unset is dropped: `config
// check` says so, naming the key and the variable, and so does the
// process's log when it starts.
func TestDroppedSecretWarned(t *testing.T) {
	_, queue := queuetest.Redis(t)
	path := testConfig(t, queuetest.URL(), "http://"+freeAddr(t), queue, `integrations:
  - {name: woo, type: woocommerce, secrets: ["${TEST_LMS_SECRET}", "${WOO_UNSET_NEXT_SECRET}"]}
`)
	const want = "integrations[0].secrets[1]: ${WOO_UNSET_NEXT_SECRET} is not set in the environment, so this secret is dropped"
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--config", path, "config", "check"}, func(k string) string { return testEnv[k] }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "warning: "+want) {
		t.Errorf("config check printed:\n%s\nwant the warning %q", out.String(), want)
	}
	_, logs := startRunLogs(t, "all", path)
	if line := logs.String(); !strings.Contains(line, `"msg":"config_warning"`) || !strings.Contains(line, want) {
		t.Errorf("the start log lacks the warning %q:\n%s", want, line)
	}
}
