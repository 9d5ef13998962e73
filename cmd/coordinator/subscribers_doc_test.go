package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/openedx/coordinator/internal/webhooks/webhookstest"
)

// checkSchemas validates real deliveries against docs/schemas/<type>.json,
// and requires every field they carry to be documented there, and a delivery
// of each type in want.
func checkSchemas(t *testing.T, attempts []webhookstest.Attempt, want ...string) {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	seen := map[string]bool{}
	for _, a := range attempts {
		path := filepath.Join("..", "..", "docs", "schemas", a.Type+".json")
		sch, err := c.Compile(path)
		if err != nil {
			t.Errorf("schema for %q: %v", a.Type, err)
			continue
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(a.Body))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("%s delivery %s does not match %s: %v", a.Type, a.Body, path, err)
		}
		raw, _ := os.ReadFile(path)
		var schema map[string]any
		_ = json.Unmarshal(raw, &schema)
		for _, field := range undocumented(schema, inst, "") {
			t.Errorf("%s: field %s is not in %s", a.Type, field, path)
		}
		seen[a.Type] = true
	}
	for _, typ := range want {
		if !seen[typ] {
			t.Errorf("no %s delivery to check its schema against", typ)
		}
	}
}

// undocumented lists the object keys of inst that schema's properties do
// not name, recursively.
func undocumented(schema map[string]any, inst any, at string) []string {
	obj, ok := inst.(map[string]any)
	props, has := schema["properties"].(map[string]any)
	if !ok || !has {
		return nil
	}
	var out []string
	for k, v := range obj {
		sub, ok := props[k].(map[string]any)
		if !ok {
			out = append(out, at+"/"+k)
			continue
		}
		out = append(out, undocumented(sub, v, at+"/"+k)...)
	}
	return out
}

var fence = regexp.MustCompile("(?s)```(python|js|php)\n(.*?)```")

// snippets reads the verification snippets of docs/subscribers.md by language.
func snippets(t *testing.T) map[string]string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "subscribers.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range fence.FindAllStringSubmatch(string(doc), -1) {
		out[m[1]] = m[2]
	}
	return out
}

// The Python, Node and PHP snippets of docs/subscribers.md accept a real
// delivery, signed with two secrets, with either secret, and refuse it with
// another secret or a changed body. Each is skipped where its interpreter is
// absent.
func TestWebhookSnippets(t *testing.T) {
	t.Parallel()
	sub := webhookstest.New(hookSecretOld)
	in := startHooks(t, false, 74000, 1, hookSignals("webhook.crm"), "webhooks:\n"+webhookYAML("crm", sub.Start(t), hookSecretNew, hookSecretOld))
	if status, _ := in.send(t, "/orders/fulfill", orderBody("SNIP-1", 74000, "")); status != 200 {
		t.Fatalf("fulfill: %d", status)
	}
	waitFor(t, "a delivery", 30*time.Second, func() bool { return len(sub.Delivered()) > 0 })
	a := sub.Delivered()[0]
	code := snippets(t)
	harness := map[string]struct{ bin, src string }{
		"python": {"python3", code["python"] + `
import json, sys
d = json.load(sys.stdin)
h = {k.lower(): v for k, v in d["headers"].items()}
print("OK" if verify(d["secret"], h, d["body"].encode()) else "NO")
`},
		"js": {"node", code["js"] + `
let input = "";
process.stdin.on("data", (c) => (input += c)).on("end", () => {
  const d = JSON.parse(input);
  const h = Object.fromEntries(Object.entries(d.headers).map(([k, v]) => [k.toLowerCase(), v]));
  console.log(verify(d.secret, h, Buffer.from(d.body)) ? "OK" : "NO");
});
`},
		"php": {"php", code["php"] + `
$d = json_decode(stream_get_contents(STDIN), true);
$h = array_change_key_case($d["headers"]);
echo verify($d["secret"], $h["webhook-id"], $h["webhook-timestamp"], $h["webhook-signature"], $d["body"]) ? "OK" : "NO";
`},
	}
	for lang, h := range harness {
		t.Run(lang, func(t *testing.T) {
			bin := requireTool(t, h.bin, map[string]string{"python3": "python3", "node": "nodejs", "php": "php-cli"}[h.bin])
			if !strings.Contains(code[lang], "verify(") {
				t.Fatalf("no %s snippet in docs/subscribers.md", lang)
			}
			for _, tc := range []struct {
				secret, body, want string
			}{
				{hookSecretNew, string(a.Body), "OK"},
				{hookSecretOld, string(a.Body), "OK"},
				{hookSecretOther, string(a.Body), "NO"},
				{hookSecretNew, strings.Replace(string(a.Body), "SNIP-1", "SNIP-2", 1), "NO"},
			} {
				headers := map[string]string{"Webhook-Id": a.Header.Get("webhook-id"),
					"Webhook-Timestamp": a.Header.Get("webhook-timestamp"), "Webhook-Signature": a.Header.Get("webhook-signature")}
				in, _ := json.Marshal(map[string]any{"secret": tc.secret, "headers": headers, "body": tc.body})
				flag := map[string]string{"python": "-c", "js": "-e", "php": "-r"}[lang]
				cmd := exec.Command(bin, flag, h.src)
				cmd.Stdin = bytes.NewReader(in)
				out, err := cmd.CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != tc.want {
					t.Errorf("%s snippet with secret %.12s...: %q %v, want %s", lang, tc.secret, out, err, tc.want)
				}
			}
		})
	}
}
