package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/dismiss"
	"github.com/openedx/coordinator/internal/entitlement"
	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/httpapi"
	"github.com/openedx/coordinator/internal/intake"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/metrics"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
	"github.com/openedx/coordinator/internal/sites"
	"github.com/openedx/coordinator/internal/store/postgres"
	"github.com/openedx/coordinator/internal/wcorders"
	"github.com/openedx/coordinator/internal/webhooks"
)

// app holds what the API and the worker share, built once from the config.
type app struct {
	cfg   config.Config
	log   *slog.Logger
	rdb   redis.UniversalClient
	queue *queue.Queue
	kinds *pipeline.Kinds
	pipe  *pipeline.Service
	cache cache.Cache
	mc    *cache.Memcached // nil without cache.memcached
	pool  *pgxpool.Pool    // nil without database.url
	sites *sites.Registry
	flows *flow.Registry
	met   *metrics.Metrics
	shops map[string]*shop.Shop // the integrations: section (shops.go)
	hooks *webhooks.Deliveries  // the subscribers (webhooks:)
	wc    *wcorders.Completer   // woocommerce.complete_order
}

// newApp connects to what the config names and checks the database schema.
func newApp(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *app, err error) {
	a := &app{cfg: cfg, log: log, met: metrics.New()}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.rdb, err = newRedisClient(cfg.Redis); err != nil {
		return nil, err
	}
	if err := checkRedisVersion(ctx, a.rdb); err != nil {
		return nil, err
	}
	a.cache = cache.NewMemory(memoryCacheEntries)
	if len(cfg.Cache.Memcached) > 0 {
		a.mc = cache.NewMemcached(cfg.Cache.Memcached)
		a.cache = a.mc
	}
	var store sites.Store // nil: only the default site
	var ledger pipeline.Ledger
	if cfg.Database.URL != "" {
		if a.pool, err = postgres.Connect(ctx, cfg.Database.URL); err != nil {
			return nil, err
		}
		if err := postgres.CheckSchema(ctx, a.pool); err != nil {
			return nil, err
		}
		ledger = postgres.NewLedger(a.pool, cfg.Worker.Queue)
		if cfg.Database.SecretKey != "" {
			key, _ := config.SecretKeyBytes(cfg.Database.SecretKey) // validated with the config
			s, err := postgres.NewSites(a.pool, key)
			if err != nil {
				return nil, err
			}
			store = siteStore{s}
		}
	}
	a.sites = sites.NewRegistry(lmsOptions(cfg, a.cache, log, a.met), store)
	if a.hooks, err = newDeliveries(cfg); err != nil {
		return nil, err
	}
	a.wc = newCompleter(cfg)
	// The flows' receivers and handlers reach the pipeline through the
	// registry, which binds it once it is built from their kinds.
	a.flows = registerFlows(a.sites, a.hooks, a.wc)
	a.kinds = a.flows.Kinds()
	a.queue = queue.New(a.rdb, a.kinds, queue.Options{
		Name:            cfg.Worker.Queue,
		MaxAttempts:     cfg.Worker.Retry.MaxAttempts,
		Retention:       cfg.Worker.Retention.D(),
		ReturnRetention: cfg.Worker.ReturnRetention.D(),
		TaskTimeout:     taskTimeout(cfg),
	})
	done := a.flows.Completed()
	a.pipe = pipeline.New(pipeline.Options{
		Kinds: a.kinds, Queue: a.queue, Ledger: ledger, Logger: log, Observer: a.met,
		// The receivers only queue tasks, by id: the pipeline sends again
		// (every receiver) until all of them took the event.
		Completed: func(ctx context.Context, c fulfillment.Completed) error {
			var errs []error
			for _, res := range done.Send(ctx, c) {
				if res.Err != nil {
					log.WarnContext(ctx, "receiver_failed", "signal", done.Name(), "receiver", res.Receiver,
						"task_id", c.TaskID, "order_number", c.OrderNumber, "err", res.Err.Error())
					errs = append(errs, fmt.Errorf("%s: %w", res.Receiver, res.Err))
				}
			}
			return errors.Join(errs...)
		},
		// A return waits for a running enrollment (a wait costs no attempt),
		// and for lms.timeout after a failed one: the LMS may still apply it.
		WaitMax: cfg.LMS.Timeout.D() + 20*time.Second,
		Settle:  cfg.LMS.Timeout.D(),
		// The reconciler leaves a task alone for one interval after its last
		// change: an accept or a retry may be between ledger and queue.
		ReconcileQuiet: cfg.Database.ReconcileInterval.D(),
		// A delivery kind no subscriber provides any more: its tasks
		// will never run (asynq has no handler for them either).
		Orphaned: func(kind string) string {
			if webhooks.IsKind(kind) {
				return "subscriber removed from the configuration"
			}
			return ""
		},
	})
	a.flows.Bind(a.pipe)
	if a.shops, err = newShops(cfg); err != nil {
		return nil, err
	}
	if err := a.flows.Signals().Wire(cfg.Signals); err != nil {
		return nil, err
	}
	return a, nil
}

// registerFlows builds the flow registry: every flow, then the subscribers
// and the WooCommerce order completion, which serve the lines of every flow
// registered before them. sites may be nil where nothing runs (config check).
func registerFlows(sites lms.Sites, hooks *webhooks.Deliveries, wc *wcorders.Completer) *flow.Registry {
	r := flow.NewRegistry()
	seat.Register(r, sites)
	entitlement.Register(r, sites)
	shop.Register(r)
	dismiss.Register(r) // for the lines of every flow
	hooks.Register(r)
	wc.Register(r)
	return r
}

// lmsOptions turns the config's lms: section into the default site's client
// options.
func lmsOptions(cfg config.Config, c cache.Cache, log *slog.Logger, obs lms.Observer) lms.Options {
	return lms.Options{
		Site:           fulfillment.DefaultSite,
		BaseURL:        cfg.LMS.URL,
		TokenURL:       cfg.LMS.TokenURL(),
		ClientID:       cfg.LMS.ClientID,
		ClientSecret:   cfg.LMS.ClientSecret,
		APIKey:         cfg.LMS.APIKey,
		Timeout:        cfg.LMS.Timeout.D(),
		MaxConcurrency: cfg.LMS.MaxConcurrency,
		Callers:        cfg.Worker.Concurrency,
		RatePerMinute:  cfg.LMS.RatePerMinute,
		Cache:          c,
		Logger:         log,
		Observer:       obs,
	}
}

// authOptions turns the auth: section into the API's authenticator options.
func authOptions(c config.Auth) httpapi.AuthOptions {
	o := httpapi.AuthOptions{AdminClaim: c.AdminClaim, MaxTokenLifetime: c.MaxTokenLifetime.D()}
	for _, is := range c.JWT {
		o.Issuers = append(o.Issuers, httpapi.Issuer(is))
	}
	return o
}

// basicAuthUsers turns admin.basic_auth into the API's operator list.
func basicAuthUsers(us []config.BasicAuthUser) []httpapi.BasicAuthUser {
	out := make([]httpapi.BasicAuthUser, len(us))
	for i, u := range us {
		out[i] = httpapi.BasicAuthUser(u)
	}
	return out
}

// siteStore serves the sites table to the site registry.
type siteStore struct{ s *postgres.Sites }

func (s siteStore) Get(ctx context.Context, name string) (sites.Site, error) {
	site, err := s.s.Get(ctx, name)
	if errors.Is(err, postgres.ErrSiteNotFound) {
		return sites.Site{}, sites.ErrNotFound
	}
	if err != nil {
		return sites.Site{}, err
	}
	return sites.Site{Name: site.Name, LMSURL: site.LMSURL, OAuthURL: site.OAuthURL, ClientID: site.ClientID,
		ClientSecret: site.ClientSecret, APIKey: site.APIKey, Timeout: site.Timeout}, nil
}

func (a *app) close() {
	if a.pool != nil {
		a.pool.Close()
	}
	if a.rdb != nil {
		a.rdb.Close()
	}
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
	log.Info("starting", "mode", mode, "version", version, "http_addr", listenAddr(cfg, mode),
		"redis", redisDescription(cfg.Redis), "lms_url", config.RedactURL(cfg.LMS.URL), "queue", cfg.Worker.Queue,
		"worker_concurrency", cfg.Worker.Concurrency, "postgres", a.pool != nil, "memcached", a.mc != nil)
	for _, w := range warnings(cfg) {
		log.Warn("config_warning", "detail", w)
	}

	// The first part to fail stops the others.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	// Every mode serves HTTP: a worker-only process offers /health and
	// /metrics to probes and scrapers.
	{
		handler := a.api(mode == "worker")
		wg.Go(func() {
			if err := serveHTTP(ctx, withListenAddr(cfg, mode), handler, log); err != nil {
				cancel(err)
			}
		})
	}
	if mode == "worker" || mode == "all" {
		// Queue gauges come from workers only, so API replicas do not repeat them.
		a.met.WatchQueue(asynq.NewInspectorFromRedisClient(a.rdb), cfg.Worker.Queue)
		a.met.WatchOldestOpen(cfg.Worker.Queue, a.pipe.OldestOpen)
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
			wg.Go(func() { a.pipe.RunReconciler(ctx, cfg.Database.ReconcileInterval.D()) })
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
	if a.pool != nil {
		// With the ledger the API accepts while Redis is down; a worker still needs Redis.
		checks[0].Ready = opsOnly
		checks = append(checks, httpapi.Check{Name: "postgres", Ping: a.pool.Ping, Ready: true})
	}
	if a.mc != nil {
		checks = append(checks, httpapi.Check{Name: "memcached", Ping: a.mc.Ping, Optional: true})
	}
	return httpapi.NewHandler(httpapi.Deps{
		Logger:       a.log,
		Auth:         httpapi.NewAuthenticator(authOptions(a.cfg.Auth), &http.Client{Timeout: 5 * time.Second}),
		Intake:       intake.New(a.flows),
		Orders:       a.pipe,
		KnownSite:    a.sites.Known,
		Checks:       checks,
		MaxBodyBytes: a.cfg.HTTP.MaxBodyBytes,
		Pprof:        a.cfg.HTTP.Pprof,
		Observer:     a.met,
		Metrics:      a.met.Handler(),
		OpsOnly:      opsOnly,
		Dashboard:    a.dashboard(opsOnly),
		BasicAuth:    basicAuthUsers(a.cfg.Admin.BasicAuth),
		Problems:     a.pipe,
		Dismiss:      dismiss.New(a.flows),
		Queue:        a.cfg.Worker.Queue,
		Shops:        a.shops,
		Webhooks:     a.met.Webhooks(),
	})
}

// dashboard is asynqmon over the process's Redis connection, built on the
// first request to an operator page (/admin/..., whose CSP is taken from
// the dashboard's page): its router's compiled patterns are 2 MB that every
// garbage collection would otherwise scan in an API nobody administers.
func (a *app) dashboard(opsOnly bool) http.Handler {
	if opsOnly {
		return nil
	}
	mon := sync.OnceValue(func() http.Handler {
		return asynqmon.New(asynqmon.Options{RootPath: "/admin/queues", RedisConnOpt: sharedRedis{a.rdb}})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mon().ServeHTTP(w, r) })
}

// sharedRedis hands asynqmon the process's existing Redis client.
type sharedRedis struct{ c redis.UniversalClient }

func (s sharedRedis) MakeRedisClient() any { return s.c }

// memoryCacheEntries bounds the in-process cache (tokens, usernames, site
// settings) without memcached: about 150 bytes an entry, so 3 MB. It serves
// what a cache is for here — an order's other lines, a task's retries, a
// learner's next purchase soon after — while a day of new learners at
// thousands of orders a second would otherwise hold 100,000 usernames
// (15 MB, two thirds of the process's heap under load). Operators who want
// a day of usernames share memcached (cache.memcached).
const memoryCacheEntries = 20_000

// taskTimeout bounds one attempt: an account look-up, an enrollment and a
// read-back, each bounded by lms.timeout, plus waiting for the rate limiter.
func taskTimeout(cfg config.Config) time.Duration { return 3*cfg.LMS.Timeout.D() + time.Minute }

func (a *app) worker() *queue.Worker {
	return queue.NewWorker(a.rdb, a.kinds, a.pipe, queue.WorkerOptions{
		Queue:           a.cfg.Worker.Queue,
		Concurrency:     a.cfg.Worker.Concurrency,
		Servers:         a.cfg.Worker.Servers,
		MaxAttempts:     a.cfg.Worker.Retry.MaxAttempts,
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

// configCheck validates the config and prints the resolved signal map: every
// signal, with the receivers it reaches.
func configCheck(cfg config.Config, stdout io.Writer) error {
	hooks, err := newDeliveries(cfg)
	if err != nil {
		return err
	}
	reg := registerFlows(nil, hooks, newCompleter(cfg)).Signals()
	if err := reg.Wire(cfg.Signals); err != nil {
		return err
	}
	// By name, as the configuration's signals: map reads.
	sigs := slices.SortedFunc(slices.Values(reg.All()), func(a, b signals.Connector) int { return strings.Compare(a.Name(), b.Name()) })
	fmt.Fprintln(stdout, "config OK")
	fmt.Fprintln(stdout, "signals:")
	for _, sig := range sigs {
		connected := sig.Connected()
		if len(connected) == 0 {
			fmt.Fprintf(stdout, "  %s: []\n", sig.Name())
			continue
		}
		fmt.Fprintf(stdout, "  %s:\n", sig.Name())
		for _, r := range connected {
			fmt.Fprintf(stdout, "    - %s\n", r)
		}
	}
	printIntegrations(cfg, stdout)
	printWebhooks(cfg, stdout)
	for _, w := range warnings(cfg) {
		fmt.Fprintln(stdout, "warning:", w)
	}
	return nil
}
