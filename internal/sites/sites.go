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

// maxMisses bounds the unknown site names remembered at once (each for TTL):
// names come from requests, and each new one must not stay in memory.
// Beyond it a name is looked up in the store every time, which is what a
// name not remembered costs anyway.
const maxMisses = 1024

// Registry hands out one long-lived LMS client per site, so each site's token
// is reused across tasks. It is safe for concurrent use.
type Registry struct {
	defaultClient *lms.Client
	template      lms.Options // limits, cache and logger for other sites
	store         Store       // nil: only the default site
	now           func() time.Time

	mu      sync.Mutex
	entries map[string]entry     // sites the store holds
	misses  map[string]time.Time // names it did not hold, and when it said so
}

type entry struct {
	client  *lms.Client
	site    Site
	fetched time.Time
}

// NewRegistry returns a registry whose default site uses def; other sites
// take their URLs and credentials from store and the rest from def.
func NewRegistry(def lms.Options, store Store) *Registry {
	return &Registry{defaultClient: lms.New(def), template: def, store: store, now: time.Now,
		entries: map[string]entry{}, misses: map[string]time.Time{}}
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
	missed, unknown := r.misses[name]
	r.mu.Unlock()
	switch {
	case unknown && r.now().Sub(missed) < TTL:
		return nil, nil
	case ok && r.now().Sub(e.fetched) < TTL:
		return e.client, nil
	}
	site, err := r.store.Get(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		r.miss(name)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("site %s: %w: %v", name, fulfillment.ErrUnavailable, err)
	}
	if ok && e.site == site {
		e.fetched = r.now() // unchanged: keep the client and its token
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
	r.put(name, entry{client: c, site: site, fetched: r.now()})
	return c, nil
}

func (r *Registry) put(name string, e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries[name] = e
	delete(r.misses, name)
}

// miss remembers that the store does not hold the site (any more), unless
// maxMisses names are remembered and none of them has expired.
func (r *Registry) miss(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, name)
	now := r.now()
	if len(r.misses) >= maxMisses {
		for n, at := range r.misses {
			if now.Sub(at) >= TTL {
				delete(r.misses, n)
			}
		}
		if len(r.misses) >= maxMisses {
			return
		}
	}
	r.misses[name] = now
}
