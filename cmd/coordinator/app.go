package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/httpapi"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/metrics"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/signals"
	"github.com/openedx/coordinator/internal/sites"
	"github.com/openedx/coordinator/internal/store/postgres"
)

// receiverEnroll is the receiver that queues the enrollment task.
const receiverEnroll = "lms.fulfill_order_placed_send_enroll_in_course"

// app holds what the API and the worker share, built once from the config.
type app struct {
	cfg    config.Config
	log    *slog.Logger
	rdb    redis.UniversalClient
	enq    *queue.Enqueuer
	cache  cache.Cache
	mc     *cache.Memcached // nil without cache.memcached
	pool   *pgxpool.Pool    // nil without database.url
	ledger *postgres.Ledger // nil without database.url
	sites  *sites.Registry
	fulfil *signals.Signal[fulfillment.Order]
	met    *metrics.Metrics
}

// newApp connects to what the config names and checks the database schema.
func newApp(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *app, err error) {
	a := &app{cfg: cfg, log: log, met: metrics.New()}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.rdb, err = queue.NewRedisClient(cfg.Redis); err != nil {
		return nil, err
	}
	a.enq = queue.NewEnqueuer(a.rdb, queue.EnqueuerOptions{
		Queue:       cfg.Worker.Queue,
		MaxAttempts: cfg.Worker.Retry.MaxAttempts,
		Retention:   cfg.Worker.Retention.D(),
		TaskTimeout: taskTimeout(cfg),
	})
	a.cache = cache.NewMemory(100_000)
	if len(cfg.Cache.Memcached) > 0 {
		a.mc = cache.NewMemcached(cfg.Cache.Memcached)
		a.cache = a.mc
	}
	var store sites.Store // nil: only the default site
	if cfg.Database.URL != "" {
		if a.pool, err = postgres.Connect(ctx, cfg.Database.URL); err != nil {
			return nil, err
		}
		if err := postgres.CheckSchema(ctx, a.pool); err != nil {
			return nil, err
		}
		a.ledger = postgres.NewLedger(a.pool)
		if cfg.Database.SecretKey != "" {
			key, _ := config.SecretKeyBytes(cfg.Database.SecretKey) // validated with the config
			s, err := postgres.NewSites(a.pool, key)
			if err != nil {
				return nil, err
			}
			store = s
		}
	}
	a.sites = sites.NewRegistry(lms.Options{
		Site:           fulfillment.DefaultSite,
		BaseURL:        cfg.LMS.URL,
		TokenURL:       cfg.LMS.TokenURL(),
		ClientID:       cfg.LMS.ClientID,
		ClientSecret:   cfg.LMS.ClientSecret,
		APIKey:         cfg.LMS.APIKey,
		Timeout:        cfg.LMS.Timeout.D(),
		MaxConcurrency: cfg.LMS.MaxConcurrency,
		RatePerMinute:  cfg.LMS.RatePerMinute,
		Cache:          a.cache,
		Logger:         log,
		Observer:       a.met,
	}, store)
	a.fulfil = newFulfillSignal(a.enq, a.ledger, log)
	if err := signals.Wire(cfg.Signals, a.fulfil); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *app) close() {
	if a.pool != nil {
		a.pool.Close()
	}
	if a.rdb != nil {
		a.rdb.Close()
	}
}

// newFulfillSignal returns the fulfill_order_placed signal with its
// receivers registered. With a ledger, a line is accepted once it is in
// Postgres, and queued at once when Redis can take it (else the reconciler
// queues it); without one, once it is in Redis. enq may be nil when the
// signal is only checked, never sent.
func newFulfillSignal(enq *queue.Enqueuer, ledger *postgres.Ledger, log *slog.Logger) *signals.Signal[fulfillment.Order] {
	sig := signals.New[fulfillment.Order]("fulfill_order_placed")
	sig.Register(receiverEnroll, func(ctx context.Context, o fulfillment.Order) (string, error) {
		id := queue.TaskID(o.Site, o.OrderNumber, o.CourseID)
		if ledger != nil {
			fresh, err := ledger.Accept(ctx, o, id)
			if err != nil || !fresh {
				return id, err
			}
		}
		if _, err := enq.Enqueue(ctx, o); err != nil {
			if ledger == nil {
				return "", err
			}
			log.WarnContext(ctx, "enqueue_deferred", "request_id", o.RequestID, "task_id", id,
				"order_number", o.OrderNumber, "err", err.Error())
			return id, nil // in the ledger: the reconciler queues it
		}
		log.InfoContext(ctx, "task_enqueued", "request_id", o.RequestID, "task_id", id, "order_number", o.OrderNumber)
		return id, nil
	})
	return sig
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, "redis", "detail", fmt.Sprintf(format, v...))
}

// serve runs the API, the worker or both until ctx ends, then drains them
// within shutdown_timeout.
func serve(ctx context.Context, cfg config.Config, mode string, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	// go-redis logs reconnection trouble through a package-level logger;
	// route it into the JSON log instead of bare lines on stderr.
	redis.SetLogger(redisLog{log})
	a, err := newApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.close()
	a.met.Build(version, mode)
	log.Info("starting", "mode", mode, "version", version, "http_addr", cfg.HTTP.Addr,
		"redis", redisDescription(cfg.Redis), "lms_url", cfg.LMS.URL, "queue", cfg.Worker.Queue,
		"worker_concurrency", cfg.Worker.Concurrency, "postgres", a.pool != nil, "memcached", a.mc != nil)

	// The first part to fail stops the others.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	// Every mode serves HTTP: a worker-only process offers /health and
	// /metrics to probes and scrapers.
	{
		handler := a.api(mode == "worker")
		wg.Go(func() {
			if err := serveHTTP(ctx, cfg, handler, log); err != nil {
				cancel(err)
			}
		})
	}
	if mode == "worker" || mode == "all" {
		// Queue gauges come from workers only, so API replicas do not repeat them.
		a.met.WatchQueue(asynq.NewInspectorFromRedisClient(a.rdb), cfg.Worker.Queue)
		w := a.worker()
		if err := w.Start(); err != nil {
			return err
		}
		wg.Go(func() {
			<-ctx.Done()
			log.Info("worker_stopping")
			w.Shutdown()
			log.Info("worker_stopped")
		})
		if a.pool != nil {
			rec := postgres.NewReconciler(a.pool, a.enq, cfg.Worker.Queue, cfg.Database.ReconcileInterval.D(), log)
			rec.Observer = a.met
			wg.Go(func() { rec.Run(ctx) })
		}
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

func (a *app) api(opsOnly bool) http.Handler {
	checks := []httpapi.Check{{Name: "redis", Ping: func(ctx context.Context) error { return a.rdb.Ping(ctx).Err() }, Ready: true}}
	var orders httpapi.Orders = a.enq
	if a.pool != nil {
		// With the ledger the API accepts while Redis is down; a worker still needs Redis.
		checks[0].Ready = opsOnly
		checks = append(checks, httpapi.Check{Name: "postgres", Ping: a.pool.Ping, Ready: true})
		orders = postgres.Orders{Ledger: a.ledger, Queue: a.enq}
	}
	if a.mc != nil {
		checks = append(checks, httpapi.Check{Name: "memcached", Ping: a.mc.Ping, Optional: true})
	}
	return httpapi.NewHandler(httpapi.Deps{
		Logger:       a.log,
		Auth:         httpapi.NewAuthenticator(a.cfg.Auth, &http.Client{Timeout: 5 * time.Second}),
		FulfillOrder: a.fulfil,
		Orders:       orders,
		KnownSite:    a.sites.Known,
		Checks:       checks,
		MaxBodyBytes: a.cfg.HTTP.MaxBodyBytes,
		Pprof:        a.cfg.HTTP.Pprof,
		Observer:     a.met,
		Metrics:      a.met.Handler(),
		OpsOnly:      opsOnly,
		Dashboard:    a.dashboard(opsOnly),
		BasicAuth:    a.cfg.Admin.BasicAuth,
	})
}

// dashboard is asynqmon over the process's Redis connection.
func (a *app) dashboard(opsOnly bool) http.Handler {
	if opsOnly {
		return nil
	}
	return asynqmon.New(asynqmon.Options{RootPath: "/admin/queues", RedisConnOpt: sharedRedis{a.rdb}})
}

// sharedRedis hands asynqmon the process's existing Redis client.
type sharedRedis struct{ c redis.UniversalClient }

func (s sharedRedis) MakeRedisClient() any { return s.c }

// taskTimeout bounds one attempt: an account look-up, an enrollment and a
// read-back, each bounded by lms.timeout, plus waiting for the rate limiter.
func taskTimeout(cfg config.Config) time.Duration { return 3*cfg.LMS.Timeout.D() + time.Minute }

func (a *app) worker() *queue.Worker {
	h := &queue.EnrollHandler{Sites: a.sites, Logger: a.log, Observer: a.met}
	if a.ledger != nil {
		h.Recorder = a.ledger
	}
	return queue.NewWorker(a.rdb, h, queue.WorkerOptions{
		Queue:           a.cfg.Worker.Queue,
		Concurrency:     a.cfg.Worker.Concurrency,
		InitialDelay:    a.cfg.Worker.Retry.InitialDelay.D(),
		MaxDelay:        a.cfg.Worker.Retry.MaxDelay.D(),
		ShutdownTimeout: a.cfg.ShutdownTimeout.D(),
		Logger:          a.log,
	})
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

// configCheck validates the config and prints the resolved signal map.
func configCheck(cfg config.Config, stdout io.Writer) error {
	sig := newFulfillSignal(nil, nil, slog.New(slog.DiscardHandler))
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
