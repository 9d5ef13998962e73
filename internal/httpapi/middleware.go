package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/openedx/coordinator/internal/fulfillment"
)

type ctxKey int

const requestIDKey ctxKey = iota

// requestInfo is what the middleware keeps of a request in its context:
// its id, who is making it (setOperator), and the fields handlers add to the
// request's one http_request log line (LogAttrs).
type requestInfo struct {
	id       string
	mu       sync.Mutex
	attrs    []slog.Attr
	level    slog.Level // at least; LogLevel raises it
	operator string
	inline   [8]slog.Attr // attrs' first array: an order's line needs five
}

// RequestID returns the request's X-Request-ID.
func RequestID(ctx context.Context) string {
	if ri, ok := ctx.Value(requestIDKey).(*requestInfo); ok {
		return ri.id
	}
	return ""
}

// LogAttrs adds fields to the request's http_request log line: the one wide
// line per request that carries everything support needs (its order, course,
// site, each receiver's result), logged by the middleware when the handler
// returns, with the status and duration. Handlers call it instead of logging
// lines of their own; it is safe for concurrent use and does nothing outside
// a request. Values must come from validated input or fixed sets.
func LogAttrs(ctx context.Context, attrs ...slog.Attr) {
	if ri, ok := ctx.Value(requestIDKey).(*requestInfo); ok {
		ri.mu.Lock()
		ri.attrs = append(ri.attrs, attrs...)
		ri.mu.Unlock()
	}
}

// LogLevel raises the level of the request's http_request line to at least
// l (a refused shop delivery is a warning an operator should see even when
// its status is a 4xx). 5xx answers are logged at error whatever it says.
func LogLevel(ctx context.Context, l slog.Level) {
	if ri, ok := ctx.Value(requestIDKey).(*requestInfo); ok {
		ri.mu.Lock()
		ri.level = max(ri.level, l)
		ri.mu.Unlock()
	}
}

// validRequestID keeps caller-chosen ids to a safe alphabet, so they can be
// logged and forwarded as headers verbatim.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:@/+=-]{1,128}$`)

// requestID takes X-Request-ID from the request when it is sane, else makes
// one, and echoes it on the response.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID.MatchString(id) {
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-ID", id)
		ri := &requestInfo{id: id}
		ri.attrs = ri.inline[:0]
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, ri)))
	})
}

// accessLog logs one line per request, http_request, with its route, status
// and duration and the fields its handler added (LogAttrs), and measures it.
// Labels and log fields come from fixed sets (the route pattern or
// "unmatched", a known method or "other"), never from the raw request, so no
// caller can grow the metrics or break them with bytes that are not UTF-8.
// probeRoutes are logged at debug: orchestrators and scrapers call them all
// the time, and a not-ready answer is what the probe is for.
var probeRoutes = map[string]bool{"/health": true, "/health/live": true, "/health/ready": true, "/metrics": true}

func accessLog(log *slog.Logger, obs Observer) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(sw, r)
			route := routeLabel(r)
			method := methodLabel(r.Method)
			elapsed := time.Since(start)
			obs.HTTP(route, method, sw.Status(), elapsed)
			level := slog.LevelInfo
			switch {
			case probeRoutes[route]:
				// Probes and scrapes arrive every few seconds from every
				// orchestrator; their answers are metrics, not news.
				level = slog.LevelDebug
			case sw.Status() >= 500:
				level = slog.LevelError
			}
			ri, _ := r.Context().Value(requestIDKey).(*requestInfo)
			if ri == nil { // outside NewHandler's chain: no id, no fields
				ri = &requestInfo{}
			}
			ri.mu.Lock()
			defer ri.mu.Unlock()
			if level != slog.LevelDebug {
				level = max(level, ri.level)
			}
			h := log.Handler()
			if !h.Enabled(r.Context(), level) {
				return
			}
			// The record is built by hand, as Logger.LogAttrs would, but
			// without the caller's program counter, which the handler does
			// not log and which costs a stack walk per request.
			rec := slog.NewRecord(start.Add(elapsed), level, "http_request", 0)
			rec.AddAttrs(slog.String("request_id", ri.id),
				slog.String("method", method), slog.String("route", route),
				slog.Int("status", sw.Status()), slog.Int64("duration_us", elapsed.Microseconds()))
			if route == unmatchedRoute {
				// What was asked for helps an operator, but only so much of it.
				rec.AddAttrs(slog.String("path", fulfillment.Clip(r.URL.EscapedPath(), maxLoggedPath)))
			}
			rec.AddAttrs(ri.attrs...)
			_ = h.Handle(r.Context(), rec)
		})
	}
}

// unmatchedRoute is the route label of a request no route matched.
const unmatchedRoute = "unmatched"

// maxLoggedPath bounds the part of an unmatched path that is logged.
const maxLoggedPath = 128

// routeLabel is the matched route's pattern, from the fixed set the router
// was built with, or unmatchedRoute.
func routeLabel(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" && p != "/*" {
			return p
		}
	}
	return unmatchedRoute
}

// methodLabel is the request method when it is a standard one, else "other".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// recoverer turns a handler panic into a logged 500 instead of a dropped
// connection. No request input should reach it; it is the last line.
func recoverer(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
						panic(v)
					}
					log.ErrorContext(r.Context(), "http_panic", "request_id", RequestID(r.Context()),
						"panic", v, "stack", string(debug.Stack()))
					encode(w, http.StatusInternalServerError, detail("Internal error."))
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// requireAdmin lets through only requests with an admin JWT: 401 with a
// WWW-Authenticate challenge without valid credentials, 403 for a valid
// non-admin token.
func requireAdmin(a *Authenticator, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			claims, err := a.Verify(r.Context(), r.Header.Get("Authorization"))
			switch {
			case errors.Is(err, ErrNotAdmin):
				encode(w, http.StatusForbidden, detail("You do not have permission to perform this action."))
				return
			case err != nil:
				log.InfoContext(r.Context(), "auth_refused", "request_id", RequestID(r.Context()), "reason", fulfillment.Clip(err.Error(), 200))
				w.Header().Set("WWW-Authenticate", `JWT realm="api"`)
				encode(w, http.StatusUnauthorized, detail("Authentication credentials were not provided or are invalid."))
				return
			}
			setOperator(r.Context(), jwtOperator(claims))
			next.ServeHTTP(w, r)
		})
	}
}
