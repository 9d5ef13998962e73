package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/hibiken/asynq"
	"golang.org/x/crypto/bcrypt"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/seat"
)

var screenshots = flag.Bool("screenshots", false, "write the docs' screenshots (docs/img) from the browser tests")

// The problem-orders page, driven as support staff would in a real browser:
// refused without credentials; with them, filter to failed lines, open the
// order, retry it from the keyboard, and see it enrolled.
func TestOrdersPageInBrowser(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("support-password-1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	in, logs := startProblems(t, false, "admin:\n  basic_auth:\n    - {user: support, password_bcrypt: \""+string(hash)+"\"}\n"+
		fmt.Sprintf("integrations:\n  - {name: woo, type: woocommerce, secrets: [%q], enroll_unregistered: true}\n", wooSecret))
	submit := func(order string, user int64) string {
		t.Helper()
		status, out := in.fulfill(t, orderBody(order, user, ""), "")
		if status != http.StatusOK {
			t.Fatalf("fulfill %s: %d", order, status)
		}
		return out[seat.ReceiverEnroll]["response"].(string)
	}
	for _, o := range []string{"WEB-1001", "WEB-1002"} {
		in.waitCompleted(t, submit(o, 3))
	}
	failedID := submit("WEB-1003", 998) // the learner who paid but sees no course
	in.waitFinal(t, failedID)
	in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 429, Header: map[string]string{"Retry-After": "3600"}})
	in.waitTaskState(t, submit("WEB-1004", 4), asynq.TaskStateRetry)
	// A shop's order for an email without an LMS account yet.
	order := wooOrder(t, 1005, "not-registered-yet@example.com")
	if a := (shopEnv{instance: in}).post(t, "woo", order, wooHeaders("order.created", order, wooSecret)); a.Status != http.StatusOK {
		t.Fatalf("woo order: %d %s", a.Status, a.Detail)
	}
	in.waitLine(t, "woo-1005", fulfillment.StateAwaitingAccount)

	// Without credentials: refused, in the browser and over plain HTTP.
	ctx := browser(t)
	resp0, err := chromedp.Run(ctx, chromedp.NavigateResponse(in.base+"/admin/orders"))
	switch {
	case err != nil && strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS"):
	case err != nil:
		t.Fatalf("browser without credentials: %v", err)
	case resp0.Status != http.StatusUnauthorized:
		t.Errorf("page without credentials: status %d, want 401", resp0.Status)
	}
	for _, path := range []string{"/admin/orders", "/admin/orders/default/WEB-1003"} {
		resp, err := http.Get(in.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, resp.StatusCode)
		}
	}
	// A form POST from another site is refused, even with the password.
	req, _ := http.NewRequest(http.MethodPost, in.base+"/admin/orders/default/WEB-1003/retry", nil)
	req.SetBasicAuth("support", "support-password-1")
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site retry: %v %v, want 403", resp.StatusCode, err)
	}

	// Bad filters are shown on the page with a 400, an unknown order with a 404.
	for path, want := range map[string]int{
		"/admin/orders?state=stuck&since=yesterday": http.StatusBadRequest,
		"/admin/orders?cursor=zz%21":                http.StatusBadRequest,
		"/admin/orders/default/NO-SUCH-ORDER":       http.StatusNotFound,
		"/admin/orders/default/WEB-1003":            http.StatusOK,
	} {
		req, _ := http.NewRequest(http.MethodGet, in.base+path, nil)
		req.SetBasicAuth("support", "support-password-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %d %s, want %d", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
		if want == http.StatusBadRequest && !strings.Contains(string(body), "<strong>state</strong>") && !strings.Contains(string(body), "<strong>cursor</strong>") {
			t.Errorf("GET %s does not name the bad field:\n%s", path, body)
		}
	}

	// With the password: the list, with counts per state.
	ctx = browser(t)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("support:support-password-1"))
	text := func() string {
		s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		return s
	}
	err = chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
				Headers: network.Headers{"Authorization": basic}})
			return err
		}),
		chromedp.EmulateViewport(1400, 700),
		chromedp.Navigate(in.base+"/admin/orders"),
		chromedp.WaitVisible(chromedp.CSS(`#f-state`)),
	)
	if err != nil {
		t.Fatalf("page with credentials: %v\n%s", err, text())
	}
	page := text()
	for _, want := range []string{"failed: 1", "retrying: 1", "enrolled: 2", "awaiting_account: 1", "WEB-1001", "WEB-1004", "woo-1005", "lms enroll: 429"} {
		if !strings.Contains(page, want) {
			t.Errorf("list lacks %q:\n%s", want, page)
		}
	}
	html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if strings.Contains(html, "<script") {
		t.Error("the page carries a script; it must work without JavaScript")
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if *screenshots {
		dir = filepath.Join("..", "..", "docs", "img")
	}
	if err := os.WriteFile(filepath.Join(dir, "orders.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}

	// Filter to failed lines with the form, open the order.
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#f-state`), "failed"),
		chromedp.Submit(chromedp.CSS(`#f-state`)),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/admin/orders/default/WEB-1003"]`)),
	)
	if err != nil {
		t.Fatalf("filter to failed: %v\n%s", err, text())
	}
	if page := text(); strings.Contains(page, "WEB-1001") || !strings.Contains(page, "no LMS user with lms_user_id 998") {
		t.Errorf("failed lines:\n%s", page)
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href="/admin/orders/default/WEB-1003"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#retry-order`)),
	)
	if err != nil {
		t.Fatalf("open the order: %v\n%s", err, text())
	}
	page = text()
	if !strings.Contains(page, "Order WEB-1003") || !strings.Contains(page, failedID) {
		t.Errorf("order page:\n%s", page)
	}
	link, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("td a").getAttribute("href")`))
	if link != "/admin/queues/queues/"+in.queue+"/tasks/"+failedID {
		t.Errorf("task link %q", link)
	}

	// The learner's account exists now: retry from the keyboard.
	in.lms.AddUser(998, "paid-learner")
	err = chromedp.Do(ctx,
		chromedp.Focus(chromedp.CSS(`#retry-order`)),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`[role=status]`)),
	)
	if err != nil {
		t.Fatalf("retry: %v\n%s", err, text())
	}
	in.waitCompleted(t, failedID)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(text(), "enrolled") {
		if time.Now().After(deadline) {
			t.Fatalf("the order never showed enrolled:\n%s", text())
		}
		if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(logs.String(), `"operator":"basic:support","action":"retry_order","site":"default","order_number":"WEB-1003"`) {
		t.Error("the page's retry is not logged with its operator")
	}
}
