package sites

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/lms"
)

// store is an in-memory Store counting its look-ups.
type store struct {
	mu    sync.Mutex
	sites map[string]Site
	gets  int
}

func (s *store) Get(_ context.Context, name string) (Site, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	site, ok := s.sites[name]
	if !ok {
		return Site{}, ErrNotFound
	}
	return site, nil
}

func (s *store) add(site Site) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sites[site.Name] = site
}

// Order requests may name any site: the unknown names remembered (so that a
// repeat does not reach Postgres) are at most maxMisses, each for TTL, so a
// stream of made-up names cannot grow memory. A site added after its name
// was missed is found once the miss expires.
func TestUnknownSitesRememberedBoundedly(t *testing.T) {
	st := &store{sites: map[string]Site{"school": {Name: "school", LMSURL: "http://127.0.0.1:1", ClientID: "c", ClientSecret: "s"}}}
	r := NewRegistry(lms.Options{BaseURL: "http://127.0.0.1:1"}, st)
	now := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	known := func(name string) bool {
		t.Helper()
		ok, err := r.Known(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	remembered := func() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.misses) }

	for range 2 {
		if known("made-up") {
			t.Fatal("a made-up name is known")
		}
	}
	if st.gets != 1 {
		t.Fatalf("a repeated unknown name: %d look-ups, want 1 (remembered)", st.gets)
	}
	for i := range 10 * maxMisses {
		if known("made-up-" + strconv.Itoa(i)) {
			t.Fatalf("made-up-%d known", i)
		}
	}
	if n := remembered(); n > maxMisses {
		t.Fatalf("%d unknown names remembered after %d made-up ones, want at most %d", n, 10*maxMisses, maxMisses)
	}
	if !known("school") {
		t.Fatal("a site of the store is unknown while its neighbours are made up")
	}

	// Expired misses make room for new ones; a site added meanwhile is found.
	st.add(Site{Name: "made-up", LMSURL: "http://127.0.0.1:2", ClientID: "c", ClientSecret: "s"})
	now = now.Add(TTL)
	for i := range maxMisses {
		known("later-" + strconv.Itoa(i))
	}
	if n := remembered(); n > maxMisses {
		t.Fatalf("%d unknown names remembered, want at most %d", n, maxMisses)
	}
	gets := st.gets
	if known("later-1") || st.gets != gets {
		t.Errorf("a name missed after the old misses expired is not remembered (%d look-ups)", st.gets-gets)
	}
	if !known("made-up") {
		t.Error("a site added after its name was missed is not found once the miss expired")
	}
}
