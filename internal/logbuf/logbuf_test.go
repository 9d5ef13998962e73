package logbuf

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/logtest"
)

// countingOut records each write it is given.
type countingOut struct {
	mu     sync.Mutex
	writes []string
	err    error
}

func (c *countingOut) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

func (c *countingOut) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.writes...)
}

func TestLinesWaitForFlush(t *testing.T) {
	out := &countingOut{}
	w := New(out, 1024, time.Hour)
	defer w.Close()
	for i := range 3 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if got := out.got(); len(got) != 0 {
		t.Fatalf("written before any flush: %q", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.got(); len(got) != 1 || got[0] != "line 0\nline 1\nline 2\n" {
		t.Fatalf("after Flush: %q, want the three lines in one write", got)
	}
	if err := w.Flush(); err != nil || len(out.got()) != 1 {
		t.Fatalf("an empty flush wrote: %q, %v", out.got(), err)
	}
}

func TestIntervalFlush(t *testing.T) {
	out := &logtest.Buffer{}
	w := New(out, 1024, 5*time.Millisecond)
	defer w.Close()
	fmt.Fprintln(w, "ticked")
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != "ticked\n" {
		if time.Now().After(deadline) {
			t.Fatalf("not written by the interval flush: %q", out.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFullBufferWritesFirst(t *testing.T) {
	out := &countingOut{}
	w := New(out, 20, time.Hour)
	defer w.Close()
	for _, l := range []string{"aaaaaaaa\n", "bbbbbbbb\n", "cccccccc\n"} { // 9 bytes each
		if n, err := w.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", l, n, err)
		}
	}
	if got := out.got(); len(got) != 1 || got[0] != "aaaaaaaa\nbbbbbbbb\n" {
		t.Fatalf("writes %q, want the two lines that fit written before the third", got)
	}
	big := strings.Repeat("x", 50) + "\n"
	if n, err := w.Write([]byte(big)); n != len(big) || err != nil {
		t.Fatalf("Write(big) = %d, %v", n, err)
	}
	if got := out.got(); len(got) != 3 || got[1] != "cccccccc\n" || got[2] != big {
		t.Fatalf("writes %q, want the buffered line, then the line larger than the buffer", got)
	}
}

func TestConcurrentWritersKeepEveryLineWhole(t *testing.T) {
	out := &logtest.Buffer{}
	w := New(out, 512, time.Millisecond)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "writer %d line %d %s\n", g, i, strings.Repeat("-", i%40))
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer %d line %d", &g, &i); err != nil || g < 0 || g >= writers ||
			l != fmt.Sprintf("writer %d line %d %s", g, i, strings.Repeat("-", i%40)) {
			t.Fatalf("line %q is not whole (%v)", l, err)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after line %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
}

func TestWritesAfterCloseGoStraightOut(t *testing.T) {
	out := &countingOut{}
	w := New(out, 1024, time.Hour)
	fmt.Fprintln(w, "before")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(w, "after")
	if got := out.got(); len(got) != 2 || got[0] != "before\n" || got[1] != "after\n" {
		t.Fatalf("writes %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOutputErrorReported(t *testing.T) {
	broken := errors.New("disk full")
	out := &countingOut{err: broken}
	w := New(out, 16, time.Hour)
	defer w.Close()
	fmt.Fprintln(w, "short")
	if err := w.Flush(); !errors.Is(err, broken) {
		t.Fatalf("Flush: %v, want the output's error", err)
	}
	if _, err := w.Write([]byte(strings.Repeat("y", 40))); !errors.Is(err, broken) {
		t.Fatalf("Write past the buffer: %v, want the output's error", err)
	}
}
