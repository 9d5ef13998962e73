package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"golang.org/x/crypto/bcrypt"

	"github.com/openedx/coordinator/internal/seat"
)

// browser starts a headless Debian Chromium for the test. Without one the
// test is skipped on a developer's machine and fails in CI (CI set), where
// .ci/run installs it.
func browser(t *testing.T) context.Context {
	t.Helper()
	chromium := requireTool(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return ctx
}

// The queue dashboard loads in a real browser behind authentication, shows
// the fulfillment queue and its failed task, and is refused without
// credentials.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-password-1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	in := startAll(t, "admin:\n  basic_auth:\n    - {user: ops, password_bcrypt: \""+string(hash)+"\"}\n")
	status, out := in.fulfill(t, orderBody("DASH-1", 998, ""), "") // unknown learner: fails for good
	if status != 200 {
		t.Fatalf("fulfill: %d", status)
	}
	taskID := out[seat.ReceiverEnroll]["response"].(string)
	if info := in.waitFinal(t, taskID); info.State != asynq.TaskStateArchived {
		t.Fatalf("task %s: %v", taskID, info.State)
	}

	// Without credentials: refused, in the browser and over plain HTTP.
	ctx := browser(t)
	// Headless Chromium has nobody to ask for a password: a Basic challenge
	// ends the navigation with ERR_INVALID_AUTH_CREDENTIALS.
	resp0, err := chromedp.Run(ctx, chromedp.NavigateResponse(in.base+"/admin/queues/"))
	switch {
	case err != nil && strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS"):
	case err != nil:
		t.Fatalf("browser without credentials: %v", err)
	case resp0.Status != http.StatusUnauthorized:
		t.Errorf("dashboard without credentials: status %d, want 401", resp0.Status)
	}
	if body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`)); strings.Contains(body, in.queue) {
		t.Errorf("dashboard without credentials shows the queue: %q", body)
	}
	for _, path := range []string{"/admin/queues/", "/admin/queues/api/queues"} {
		resp, err := http.Get(in.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, resp.StatusCode)
		}
	}

	// With the operator's password: the queue, then its failed task.
	ctx = browser(t)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:ops-password-1"))
	err = chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
				Headers: network.Headers{"Authorization": basic}})
			return err
		}),
		chromedp.Navigate(in.base+"/admin/queues/"),
		chromedp.Poll[chromedp.Void](`document.body.innerText.includes("`+in.queue+`")`, chromedp.WithPollingTimeout(20*time.Second)),
	)
	if err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("dashboard overview with credentials: %v\npage: %s", err, page)
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(in.base+"/admin/queues/queues/"+in.queue+"?status=archived"),
		// The table shows a task's id shortened, and its last error in full.
		chromedp.Poll[chromedp.Void](`document.body.innerText.includes("no LMS user with lms_user_id 998")`, chromedp.WithPollingTimeout(20*time.Second)),
	)
	archived, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatalf("archived tasks page: %v\npage: %s", err, archived)
	}
	if !strings.Contains(archived, "Archived 1") || !strings.Contains(archived, "lms:fulfill_order_placed_send_enroll_in_course") {
		t.Errorf("the archived task is not listed:\n%s", archived)
	}

	// A page on another site cannot make the operator's browser act: its
	// form POSTs :pause with the operator's credentials attached (as a
	// browser replays Basic credentials), and is refused.
	attacker := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id="f" method="POST" action="%s/admin/queues/api/queues/%s:pause"></form>`+
			`<script>document.getElementById("f").submit()</script>`, in.base, in.queue)
	}))
	other, err := net.Listen("tcp", "127.0.0.2:0") // another host, so another site
	if err != nil {
		t.Fatal(err)
	}
	attacker.Listener = other
	attacker.Start()
	defer attacker.Close()
	err = chromedp.Do(ctx, chromedp.Navigate(attacker.URL),
		chromedp.Poll[chromedp.Void](`document.body != null && document.body.innerText.includes("Cross-site request refused")`,
			chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
		t.Errorf("a cross-site POST :pause was not refused: %v\npage: %s", err, page)
	}
	if qi, err := in.insp.GetQueueInfo(in.queue); err != nil || qi.Paused {
		t.Errorf("after the cross-site POST the queue is paused (%v)", err)
	}

	// The dashboard's own actions, same-origin from its page, still work:
	// pause and resume the queue, and re-run the failed task.
	in.lms.AddUser(998, "late")
	if err := chromedp.Do(ctx, chromedp.Navigate(in.base+"/admin/queues/")); err != nil {
		t.Fatal(err)
	}
	post := func(path string) int {
		t.Helper()
		status, err := chromedp.Run(ctx, chromedp.Evaluate[int](
			`fetch("/admin/queues/api/queues/`+path+`", {method: "POST"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("POST %s from the dashboard's page: %v", path, err)
		}
		return status
	}
	if status := post(in.queue + ":pause"); status >= 300 {
		t.Errorf("pause from the dashboard: %d", status)
	}
	if qi, err := in.insp.GetQueueInfo(in.queue); err != nil || !qi.Paused {
		t.Errorf("the dashboard's pause did not pause the queue (%v)", err)
	}
	if status := post(in.queue + ":resume"); status >= 300 {
		t.Errorf("resume from the dashboard: %d", status)
	}
	if status := post(in.queue + "/archived_tasks/" + taskID + ":run"); status >= 300 {
		t.Fatalf("run archived task from the dashboard: %d", status)
	}
	if info := in.waitFinal(t, taskID); info.State != asynq.TaskStateCompleted {
		t.Errorf("after the dashboard's run: %v %s", info.State, info.LastErr)
	}

	// Outside a browser: the page forbids framing, and an unsafe request
	// with Basic credentials but no Origin is refused (a JWT is not).
	resp, err := http.Get(in.base + "/admin/queues/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("dashboard headers %v", resp.Header)
	}
	for _, c := range []struct {
		action, auth string
		want         int
	}{
		{":pause", basic, http.StatusForbidden},
		{":pause", "JWT " + adminToken(t), http.StatusNoContent},
		{":resume", "JWT " + adminToken(t), http.StatusNoContent},
	} {
		req, _ := http.NewRequest(http.MethodPost, in.base+"/admin/queues/api/queues/"+in.queue+c.action, nil)
		req.Header.Set("Authorization", c.auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("POST %s without Origin, %.5s...: %d, want %d", c.action, c.auth, resp.StatusCode, c.want)
		}
	}

	// A wrong password and a non-admin JWT are refused too.
	req, _ := http.NewRequest(http.MethodGet, in.base+"/admin/queues/api/queues", nil)
	req.SetBasicAuth("ops", "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong password: %v %v", resp.StatusCode, err)
	}
	req.Header.Set("Authorization", "JWT "+adminToken(t))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("admin JWT: %v %v", resp.StatusCode, err)
	}
}
