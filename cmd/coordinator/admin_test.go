package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The hash printed for a password read from standard input verifies that
// password, and is what the config accepts as password_bcrypt.
func TestAdminHashPassword(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := adminCommand([]string{"hash-password"}, strings.NewReader("a long trial password\n"), &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("a long trial password")); err != nil {
		t.Errorf("hash %q does not verify the password: %v", hash, err)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("output %q: want the hash alone on one line, for scripts", out.String())
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		t.Errorf("the config would refuse %q: %v", hash, err)
	}
}

// The password never comes from the command line, and a short one is refused.
func TestAdminHashPasswordRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"hash-password", "hunter2-hunter2"}, "", "never from the command line"},
		{[]string{"hash-password"}, "short\n", "use at least 12"},
		{[]string{"hash-password"}, "", "use at least 12"},
		{[]string{"hash-passwd"}, "", "unknown command"},
	} {
		var out bytes.Buffer
		err := adminCommand(c.args, strings.NewReader(c.stdin), &out, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
		if strings.Contains(out.String(), "$2") {
			t.Errorf("%v printed a hash: %q", c.args, out.String())
		}
	}
}
