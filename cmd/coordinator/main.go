// Command coordinator routes order events from commerce systems to the Open
// edX LMS: an HTTP API that validates and queues fulfillments, and a worker
// that enrolls learners through the LMS REST API.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/openedx/coordinator/internal/logbuf"
)

// The log (stderr) is written out in blocks of up to logBuffer bytes, at
// least every logFlushInterval: at info an API process writes a line per
// request, and a system call for each was made under the logger's lock,
// which every other request's line waits on (docs/performance.md, round
// five).
const (
	logBuffer        = 64 << 10
	logFlushInterval = 100 * time.Millisecond
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stderr := logbuf.New(os.Stderr, logBuffer, logFlushInterval)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, stderr)
	_ = stderr.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(1)
	}
}
