// Package sites resolves the LMS sites Coordinator serves — the default one
// from the YAML `lms:` section and, with the Postgres tier, those in the
// sites table — to LMS clients, each with its own credentials and token.
package sites

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/pipeline"
)

// Site is an LMS site beyond the default one, as its store keeps it.
type Site struct {
	Name         string
	LMSURL       string
	OAuthURL     string // "" means <LMSURL>/oauth2/access_token
	ClientID     string
	ClientSecret string
	APIKey       string
	Timeout      time.Duration // 0 means the default site's
}

// ErrNotFound is what a Store answers for a site it does not hold.
var ErrNotFound = errors.New("site not found")

// Store is where additional sites live (the Postgres tier).
type Store interface {
	Get(ctx context.Context, name string) (Site, error)
}

// TTL is how long a site's configuration is trusted before it is read again,
// so that `coordinator sites update` reaches running processes quickly.
const TTL = 30 * time.Second

// Registry hands out one long-lived LMS client per site, so each site's token
// is reused across tasks. It is safe for concurrent use.
type Registry struct {
	defaultClient *lms.Client
	template      lms.Options // limits, cache and logger for other sites
	store         Store       // nil: only the default site

	mu      sync.Mutex
	entries map[string]entry
}

type entry struct {
	client  *lms.Client // nil: the site does not exist
	site    Site
	fetched time.Time
}

// NewRegistry returns a registry whose default site uses def; other sites
// take their URLs and credentials from store and the rest from def.
func NewRegistry(def lms.Options, store Store) *Registry {
	return &Registry{defaultClient: lms.New(def), template: def, store: store, entries: map[string]entry{}}
}

// Known reports whether orders may name the site.
func (r *Registry) Known(ctx context.Context, name string) (bool, error) {
	c, err := r.client(ctx, name)
	return c != nil, err
}

// Client returns the site's LMS client. An unknown site is a permanent
// failure: the site was removed after the order was accepted.
func (r *Registry) Client(ctx context.Context, name string) (*lms.Client, error) {
	c, err := r.client(ctx, name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, pipeline.Permanent(fmt.Errorf("unknown site %q", name))
	}
	return c, nil
}

func (r *Registry) client(ctx context.Context, name string) (*lms.Client, error) {
	if name == fulfillment.DefaultSite {
		return r.defaultClient, nil
	}
	if r.store == nil {
		return nil, nil
	}
	r.mu.Lock()
	e, ok := r.entries[name]
	r.mu.Unlock()
	if ok && time.Since(e.fetched) < TTL {
		return e.client, nil
	}
	site, err := r.store.Get(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		r.put(name, entry{fetched: time.Now()})
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("site %s: %w: %v", name, fulfillment.ErrUnavailable, err)
	}
	if ok && e.client != nil && e.site == site {
		e.fetched = time.Now() // unchanged: keep the client and its token
		r.put(name, e)
		return e.client, nil
	}
	o := r.template
	o.Site, o.BaseURL, o.ClientID, o.ClientSecret, o.APIKey = site.Name, site.LMSURL, site.ClientID, site.ClientSecret, site.APIKey
	o.TokenURL = site.OAuthURL
	if o.TokenURL == "" {
		o.TokenURL = strings.TrimRight(site.LMSURL, "/") + "/oauth2/access_token"
	}
	if site.Timeout > 0 {
		o.Timeout = site.Timeout
	}
	c := lms.New(o)
	r.put(name, entry{client: c, site: site, fetched: time.Now()})
	return c, nil
}

func (r *Registry) put(name string, e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries[name] = e
}
