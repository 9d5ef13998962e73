// Package shoptest gives tests the shop webhook bodies copied from the
// shared fixtures (internal/shop/testdata/webhooks, SOURCES.md), and a way
// to derive a body from one.
package shoptest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Fixture reads the fixture body called name, from any package's tests.
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "testdata", "webhooks", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Patch derives a body from another, changing only what edit changes;
// numbers keep their digits (Shopify's ids exceed 2^53).
func Patch(t testing.TB, body []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
