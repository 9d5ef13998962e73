package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// keys lists the dotted configuration keys of a type: "lms.timeout",
// "auth.jwt[].issuer"; a map (signals) is one key.
func keys(t reflect.Type, prefix string) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeOf(Duration(0)):
		return []string{prefix}
	case t.Kind() == reflect.Struct:
		var out []string
		for i := 0; i < t.NumField(); i++ {
			if !t.Field(i).IsExported() {
				continue // not read from the file
			}
			out = append(out, keys(t.Field(i).Type, join(prefix, yamlName(t.Field(i))))...)
		}
		return out
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return keys(t.Elem(), prefix+"[]")
	}
	return []string{prefix}
}

func TestOperationsDocListsEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	want := keys(reflect.TypeOf(Config{}), "")
	for _, k := range want {
		if !slices.Contains(documented, k) {
			t.Errorf("docs/operations.md does not document %s", k)
		}
	}
	for _, k := range documented {
		if strings.Contains(k, ".") || k == "signals" || k == "shutdown_timeout" {
			if !slices.Contains(want, k) {
				t.Errorf("docs/operations.md documents %s, which the config does not have", k)
			}
		}
	}
}
