package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/httpapi"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/signals"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: coordinator [--config FILE] COMMAND

commands:
  api            run the HTTP API
  worker         run the task worker
  all            run the API and the worker in one process
  config check   validate the configuration and print the signal map
  token          print an admin JWT signed with the first HS256 issuer (local trials)
  migrate        apply SQL migrations to database.url
  version        print version and build information

--config defaults to $COORDINATOR_CONFIG, else configs/coordinator.yaml.
`

// run is the whole program; main only supplies the process's environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfgPath, rest, err := splitArgs(args)
	if err != nil {
		return err
	}
	if cfgPath == "" {
		cfgPath = getenv("COORDINATOR_CONFIG")
	}
	if cfgPath == "" {
		cfgPath = "configs/coordinator.yaml"
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch rest[0] {
	case "version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}

	cfg, err := config.Load(cfgPath, getenv)
	if err != nil {
		return err
	}
	switch cmd := strings.Join(rest, " "); {
	case cmd == "config check":
		return configCheck(cfg, stdout)
	case rest[0] == "token":
		return printToken(cfg, rest[1:], stdout)
	case cmd == "migrate":
		return errors.New("migrate: this build has no Postgres tier yet; database.url must be empty")
	case cmd == "api", cmd == "worker", cmd == "all":
		return serve(ctx, cfg, rest[0], stderr)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// splitArgs takes --config FILE (or --config=FILE) from anywhere in args.
func splitArgs(args []string) (cfg string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config":
			if i+1 >= len(args) {
				return "", nil, errors.New("--config needs a file name")
			}
			cfg = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			cfg = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	return cfg, rest, nil
}

func versionString() string {
	s := "coordinator " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " " + bi.GoVersion
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" || kv.Key == "vcs.modified" {
				s += " " + kv.Key + "=" + kv.Value
			}
		}
	}
	return s
}

// The signals this program sends, with their receivers registered. enq may
// be nil when the signal will only be checked, never sent.
const receiverEnroll = "lms.fulfill_order_placed_send_enroll_in_course"

func newFulfillSignal(enq *queue.Enqueuer, log *slog.Logger) *signals.Signal[fulfillment.Order] {
	sig := signals.New[fulfillment.Order]("fulfill_order_placed")
	sig.Register(receiverEnroll, func(ctx context.Context, o fulfillment.Order) (string, error) {
		id, err := enq.Enqueue(ctx, o)
		if err == nil {
			log.InfoContext(ctx, "task_enqueued", "request_id", o.RequestID, "task_id", id, "order_number", o.OrderNumber)
		}
		return id, err
	})
	return sig
}

func configCheck(cfg config.Config, stdout io.Writer) error {
	sig := newFulfillSignal(nil, slog.New(slog.DiscardHandler))
	if err := checkTiers(cfg); err != nil {
		return err
	}
	if err := signals.Wire(cfg.Signals, sig); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "config OK")
	fmt.Fprintln(stdout, "signals:")
	fmt.Fprintf(stdout, "  %s:\n", sig.Name())
	for _, r := range sig.Connected() {
		fmt.Fprintf(stdout, "    - %s\n", r)
	}
	return nil
}

// checkTiers refuses configuration for storage tiers this build lacks, rather
// than silently running without them.
func checkTiers(cfg config.Config) error {
	if cfg.Database.URL != "" {
		return errors.New("database.url: the Postgres tier is not available in this build; leave it empty")
	}
	if len(cfg.Cache.Memcached) > 0 {
		return errors.New("cache.memcached: the memcached tier is not available in this build; leave it empty")
	}
	return nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// serve runs the API, the worker or both until ctx ends, then drains them
// within shutdown_timeout.
func serve(ctx context.Context, cfg config.Config, mode string, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	if err := checkTiers(cfg); err != nil {
		return err
	}
	rdb, err := queue.NewRedisClient(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()

	log.Info("starting", "mode", mode, "version", version, "http_addr", cfg.HTTP.Addr,
		"redis", redisDescription(cfg.Redis), "lms_url", cfg.LMS.URL, "queue", cfg.Worker.Queue,
		"worker_concurrency", cfg.Worker.Concurrency)

	// The first part to fail stops the others.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	if mode == "api" || mode == "all" {
		handler, err := newAPI(cfg, rdb, log)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := serveHTTP(ctx, cfg, handler, log); err != nil {
				cancel(err)
			}
		})
	}
	if mode == "worker" || mode == "all" {
		w := newWorker(cfg, rdb, log)
		if err := w.Start(); err != nil {
			return err
		}
		wg.Go(func() {
			<-ctx.Done()
			log.Info("worker_stopping")
			w.Shutdown()
			log.Info("worker_stopped")
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

func newAPI(cfg config.Config, rdb redis.UniversalClient, log *slog.Logger) (http.Handler, error) {
	enq := queue.NewEnqueuer(rdb, queue.EnqueuerOptions{
		Queue:       cfg.Worker.Queue,
		MaxAttempts: cfg.Worker.Retry.MaxAttempts,
		Retention:   cfg.Worker.Retention.D(),
		TaskTimeout: taskTimeout(cfg),
	})
	sig := newFulfillSignal(enq, log)
	if err := signals.Wire(cfg.Signals, sig); err != nil {
		return nil, err
	}
	return httpapi.NewHandler(httpapi.Deps{
		Logger:       log,
		Auth:         httpapi.NewAuthenticator(cfg.Auth, &http.Client{Timeout: 5 * time.Second}),
		FulfillOrder: sig,
		Orders:       enq,
		KnownSite:    func(s string) bool { return s == fulfillment.DefaultSite },
		Checks:       []httpapi.Check{{Name: "redis", Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}},
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
	}), nil
}

// taskTimeout bounds one attempt: an account look-up, an enrollment and a
// read-back, each bounded by lms.timeout, plus waiting for the rate limiter.
func taskTimeout(cfg config.Config) time.Duration { return 3*cfg.LMS.Timeout.D() + time.Minute }

func newWorker(cfg config.Config, rdb redis.UniversalClient, log *slog.Logger) *queue.Worker {
	client := lms.New(lms.Options{
		Site:           fulfillment.DefaultSite,
		BaseURL:        cfg.LMS.URL,
		TokenURL:       cfg.LMS.TokenURL(),
		ClientID:       cfg.LMS.ClientID,
		ClientSecret:   cfg.LMS.ClientSecret,
		APIKey:         cfg.LMS.APIKey,
		Timeout:        cfg.LMS.Timeout.D(),
		MaxConcurrency: cfg.LMS.MaxConcurrency,
		RatePerMinute:  cfg.LMS.RatePerMinute,
		Cache:          cache.NewMemory(100_000),
		Logger:         log,
	})
	return queue.NewWorker(rdb, &queue.EnrollHandler{Sites: singleSite{client}, Logger: log}, queue.WorkerOptions{
		Queue:           cfg.Worker.Queue,
		Concurrency:     cfg.Worker.Concurrency,
		InitialDelay:    cfg.Worker.Retry.InitialDelay.D(),
		MaxDelay:        cfg.Worker.Retry.MaxDelay.D(),
		ShutdownTimeout: cfg.ShutdownTimeout.D(),
		Logger:          log,
	})
}

// singleSite serves every task from the one LMS configured under `lms:`.
type singleSite struct{ c *lms.Client }

func (s singleSite) Fulfiller(_ context.Context, site string) (queue.Fulfiller, error) {
	if site != fulfillment.DefaultSite {
		return nil, &lms.Error{Op: "site", Class: lms.Permanent, Message: fmt.Sprintf("unknown site %q", site)}
	}
	return s.c, nil
}

func serveHTTP(ctx context.Context, cfg config.Config, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Addr:              cfg.HTTP.Addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("http_listening", "addr", cfg.HTTP.Addr)
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	log.Info("http_stopping")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

func redisDescription(r config.Redis) string {
	switch {
	case r.Sentinel != nil:
		return "sentinel:" + r.Sentinel.MasterName
	case r.Cluster != nil:
		return "cluster:" + strings.Join(r.Cluster.Addrs, ",")
	}
	if opt, err := redis.ParseURL(r.URL); err == nil {
		return fmt.Sprintf("%s/%d", opt.Addr, opt.DB)
	}
	return "(unparsable)"
}

// printToken mints an admin JWT for local trials, signed with the first
// HS256 issuer's secret.
func printToken(cfg config.Config, args []string, stdout io.Writer) error {
	ttl := time.Hour
	for i := 0; i < len(args); i++ {
		if args[i] == "--ttl" && i+1 < len(args) {
			d, err := time.ParseDuration(args[i+1])
			if err != nil {
				return fmt.Errorf("token --ttl: %w", err)
			}
			ttl = d
			i++
			continue
		}
		return fmt.Errorf("token: unknown argument %q (usage: token [--ttl 1h])", args[i])
	}
	for _, is := range cfg.Auth.JWT {
		if is.Secret == "" {
			continue
		}
		now := time.Now()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": is.Issuer, "aud": is.Audience, "sub": "coordinator-trial",
			"preferred_username": "coordinator-trial", "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
			cfg.Auth.AdminClaim: true,
		}).SignedString([]byte(is.Secret))
		if err != nil {
			return fmt.Errorf("sign token: %w", err)
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	return errors.New("token: no auth.jwt issuer has an HS256 secret")
}
