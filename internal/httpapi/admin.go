package httpapi

import (
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/openedx/coordinator/internal/config"
)

// operators checks the credentials of /admin/: an admin JWT, or a
// configured basic-auth user whose password matches its bcrypt hash. A
// successful bcrypt check is remembered briefly, because the dashboard's page
// polls its API every few seconds and bcrypt is deliberately slow.
type operators struct {
	auth  *Authenticator
	users map[string][]byte
	dummy []byte // a hash of the users' cost, checked for unknown users

	mu     sync.Mutex
	recent map[[32]byte]time.Time // sha256(user, password) → expiry
}

const operatorMemory = 5 * time.Minute

func newOperators(a *Authenticator, users []config.BasicAuthUser) *operators {
	o := &operators{auth: a, users: map[string][]byte{}, recent: map[[32]byte]time.Time{}}
	cost := bcrypt.MinCost
	for _, u := range users {
		o.users[u.User] = []byte(u.PasswordBcrypt)
		if c, err := bcrypt.Cost([]byte(u.PasswordBcrypt)); err == nil {
			cost = max(cost, c)
		}
	}
	if len(users) > 0 {
		// An unknown user's check costs what a known one's does, so timing
		// does not tell which user names exist.
		o.dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password"), cost)
	}
	return o
}

func (o *operators) basicOK(user, pass string) bool {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	o.mu.Lock()
	exp, ok := o.recent[key]
	o.mu.Unlock()
	if ok && time.Now().Before(exp) {
		return true
	}
	hash, known := o.users[user]
	if !known {
		if o.dummy != nil {
			_ = bcrypt.CompareHashAndPassword(o.dummy, []byte(pass))
		}
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, e := range o.recent { // keep the memory small
		if time.Now().After(e) {
			delete(o.recent, k)
		}
	}
	o.recent[key] = time.Now().Add(operatorMemory)
	return true
}

// require lets operators through; anyone else gets 401 with a Basic
// challenge (so a browser asks), or 403 for a valid non-admin JWT.
func (o *operators) require(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if user, pass, ok := r.BasicAuth(); ok {
				if o.basicOK(user, pass) {
					next.ServeHTTP(w, r)
					return
				}
				log.InfoContext(r.Context(), "admin_refused", "request_id", RequestID(r.Context()), "user", user)
			} else if h := r.Header.Get("Authorization"); h != "" && !strings.HasPrefix(strings.ToLower(h), "basic ") {
				_, err := o.auth.Verify(r.Context(), h)
				if err == nil {
					next.ServeHTTP(w, r)
					return
				}
				if errors.Is(err, ErrNotAdmin) {
					encode(w, http.StatusForbidden, detail("You do not have permission to perform this action."))
					return
				}
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="coordinator admin", charset="UTF-8"`)
			encode(w, http.StatusUnauthorized, detail("Authentication credentials were not provided or are invalid."))
		})
	}
}
