// Command fakelms serves the fake Open edX LMS of internal/lms/lmstest for a
// local trial (make run): the OAuth2 token, enrollment and account endpoints,
// seeded like a devstack (learners 3-7, the demo course). Not for production.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/openedx/coordinator/internal/lms/lmstest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fakelms:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fakelms", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:18000", "listen address")
	secretEnv := fs.String("secret-env", "LMS_CLIENT_SECRET", "environment variable holding the client secret of coordinator-worker")
	latency := fs.Duration("latency", 0, "delay every API answer by this much")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := os.Getenv(*secretEnv)
	if secret == "" {
		return fmt.Errorf("$%s is empty: set the OAuth client secret the coordinator uses", *secretEnv)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	lms := lmstest.NewDemo(secret)
	lms.SetLatency(*latency)
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Info("fakelms_request", "method", r.Method, "path", r.URL.Path, "request_id", r.Header.Get("X-Request-ID"))
		lms.ServeHTTP(w, r)
	})
	// Bind before saying so: a port another program holds (a devstack LMS
	// on 18000) must stop the trial, not leave Coordinator talking to it.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (another program holds the port: choose another with --addr)", *addr, err)
	}
	srv := &http.Server{Handler: logged, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("fakelms_listening", "addr", ln.Addr().String(), "users", "3=edx 4=audit 5=honor 6=verified 7=staff",
		"emails", "<username>@example.com", "course", "course-v1:edX+DemoX+Demo_Course")
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
