// Package httpapi is Coordinator's HTTP API: the chi router, authentication,
// the fulfill, order-status and health handlers, and the one place where
// domain errors become HTTP statuses.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop"
)

// Check is one dependency /health reports on. An optional one (a cache the
// service degrades without) is reported but does not fail the whole.
type Check struct {
	Name     string
	Ping     func(ctx context.Context) error
	Optional bool
	Ready    bool // /health/ready fails when this check fails (see health.go)
}

// SiteChecker says whether orders may name a site; an error means it cannot
// tell now (503).
type SiteChecker func(ctx context.Context, site string) (bool, error)

// Observer receives measurements (metrics) of the API.
type Observer interface {
	HTTP(route, method string, status int, d time.Duration)
	Fulfill(accepted bool, reason string)
}

type noObserver struct{}

func (noObserver) HTTP(string, string, int, time.Duration) {}
func (noObserver) Fulfill(bool, string)                    {}

// Deps is everything the API needs.
type Deps struct {
	Logger *slog.Logger
	Auth   *Authenticator
	// Intake sends lines on their flows' signals.
	Intake       Intake
	Orders       Orders
	KnownSite    SiteChecker
	Checks       []Check
	MaxBodyBytes int64
	Pprof        bool         // mount /debug/pprof/ (admin only)
	Observer     Observer     // nil: not measured
	Metrics      http.Handler // serves GET /metrics; nil: no such route
	// OpsOnly serves only /health and /metrics: what a worker-only process
	// offers to probes and scrapers.
	OpsOnly bool
	// Dashboard is the queue dashboard (asynqmon) served under
	// /admin/queues/ to operators; nil: none.
	Dashboard http.Handler
	// BasicAuth users may use /admin/ besides admin JWTs.
	BasicAuth []BasicAuthUser
	// Problems lists lines by state and retries them in bulk: GET /orders,
	// POST /orders/retry and the page /admin/orders; nil: none of them.
	Problems Problems
	// Dismiss closes failed lines: POST /orders/{n}/dismiss and the page's
	// Dismiss buttons; nil: neither.
	Dismiss Dismisser
	// Queue is the asynq queue, for links from /admin/orders to the
	// dashboard's task pages.
	Queue string
	// Shops are the integrations posting to /webhooks/{name}, by name.
	Shops map[string]*shop.Shop
	// Webhooks counts their deliveries; nil: not counted.
	Webhooks WebhookObserver
	// webhookLimits, in tests, change the bounds on reading webhook bodies
	// (zero: the defaults).
	webhookLimits webhookLimits
}

// NewHandler returns the whole API surface.
func NewHandler(d Deps) http.Handler {
	if d.Observer == nil {
		d.Observer = noObserver{}
	}
	if d.Intake == nil {
		d.Intake = noIntake{}
	}
	r := chi.NewRouter()
	r.Use(requestID, accessLog(d.Logger, d.Observer), recoverer(d.Logger))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusNotFound, detail("Not found."))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusMethodNotAllowed, detail("Method \""+r.Method+"\" not allowed."))
	})

	// Load balancers and orchestrators probe this.
	r.Get("/health", handleHealth(d.Checks))
	r.Get("/health/live", handleLive)
	r.Get("/health/ready", handleReady(d.Checks))
	// Prometheus scrapes this.
	if d.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", d.Metrics)
	}

	if d.OpsOnly {
		if d.Pprof { // a worker's profile, behind the admin JWT as the API's
			r.Group(func(r chi.Router) {
				r.Use(requireAdmin(d.Auth, d.Logger))
				r.Mount("/debug", middleware.Profiler())
			})
		}
		return r
	}
	// Integrators read the API's description here (docs/openapi.yaml).
	r.Get("/openapi.yaml", handleOpenAPI)
	ops := newOperators(d.Auth, d.BasicAuth, d.Dashboard)
	// Operators inspect and retry tasks here, never without credentials.
	if d.Dashboard != nil {
		r.Group(func(r chi.Router) {
			r.Use(ops.require(d.Logger))
			r.Handle("/admin/queues", http.RedirectHandler("/admin/queues/", http.StatusMovedPermanently))
			r.Handle("/admin/queues/*", d.Dashboard)
		})
	}
	// Support staff find problem lines and retry them here (README, Problem orders).
	if d.Problems != nil {
		r.Group(func(r chi.Router) {
			r.Use(ops.require(d.Logger))
			mountOrdersPage(r, ordersPage{problems: d.Problems, orders: d.Orders, dismiss: d.Dismiss, knownSite: d.KnownSite,
				queue: d.Queue, dashboard: d.Dashboard != nil, log: d.Logger})
		})
	}
	// Shops deliver order and refund events here; the signature is the
	// authentication (webhooks.go).
	webhook := handleWebhook(d.Shops, d.Intake, d.Orders, d.KnownSite, d.Webhooks,
		d.webhookLimits)
	r.Post("/webhooks/{name}", webhook)
	r.Post("/webhooks/{name}/", webhook)
	r.Group(func(r chi.Router) {
		r.Use(requireAdmin(d.Auth, d.Logger))
		// Commerce backends call this after a learner paid.
		fulfill := handleLine(fulfillment.Parse, stampOrder, d.Intake.Place, d.Intake.Accepts, d.KnownSite, d.MaxBodyBytes, d.Logger, d.Observer)
		r.Post("/orders/fulfill", fulfill)
		r.Post("/orders/fulfill/", fulfill)
		// Commerce backends call this after a refund, to take the seat back.
		ret := handleLine(fulfillment.ParseReturn, stampReturn, d.Intake.Return, d.Intake.Accepts, d.KnownSite, d.MaxBodyBytes, d.Logger, d.Observer)
		r.Post("/orders/return", ret)
		r.Post("/orders/return/", ret)
		// Operators and shops check on an order, and re-queue its failed lines.
		r.Get("/orders/{order_number}", handleOrder(d.Orders, d.KnownSite, false, d.Logger))
		r.Post("/orders/{order_number}/retry", handleOrder(d.Orders, d.KnownSite, true, d.Logger))
		// Support closes a failed line that will never succeed.
		if d.Dismiss != nil {
			r.Post("/orders/{order_number}/dismiss", handleDismiss(d.Dismiss, d.Orders, d.KnownSite, d.Logger))
		}
		// Operators find lines without their order number, and retry them in bulk.
		if d.Problems != nil {
			r.Get("/orders", handleListLines(d.Problems, d.KnownSite, d.Logger))
			r.Post("/orders/retry", handleRetryLines(d.Problems, d.KnownSite, d.Logger))
		}
		// Developers profiling a live process, when http.pprof is on.
		if d.Pprof {
			r.Mount("/debug", middleware.Profiler())
		}
	})
	return r
}
