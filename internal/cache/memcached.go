package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Memcached is a Cache shared by every process pointing at the same servers.
// Keys are namespaced and versioned ("coordinator:v1:..."); keys memcached
// cannot hold (too long, spaces) are hashed.
type Memcached struct {
	c *memcache.Client
}

// NewMemcached returns a cache over the given host:port servers. Calls time
// out quickly: a slow memcached must degrade to direct calls, not stall them.
func NewMemcached(servers []string) *Memcached {
	c := memcache.New(servers...)
	c.Timeout = 200 * time.Millisecond
	c.MaxIdleConns = 32
	return &Memcached{c: c}
}

const namespace = "coordinator:v1:"

func mkey(key string) string {
	k := namespace + key
	if len(k) > 250 || hasSpaceOrControl(k) {
		sum := sha256.Sum256([]byte(key))
		return namespace + "h:" + hex.EncodeToString(sum[:])
	}
	return k
}

func hasSpaceOrControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func seconds(ttl time.Duration) int32 { return int32(max(1, (ttl+time.Second-1)/time.Second)) }

// Get returns the value for key.
func (m *Memcached) Get(_ context.Context, key string) ([]byte, bool, error) {
	it, err := m.c.Get(mkey(key))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("memcached get: %w", err)
	}
	return it.Value, true, nil
}

// Set stores value under key for ttl (rounded up to whole seconds).
func (m *Memcached) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if err := m.c.Set(&memcache.Item{Key: mkey(key), Value: value, Expiration: seconds(ttl)}); err != nil {
		return fmt.Errorf("memcached set: %w", err)
	}
	return nil
}

// Add stores value only if key is absent.
func (m *Memcached) Add(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	err := m.c.Add(&memcache.Item{Key: mkey(key), Value: value, Expiration: seconds(ttl)})
	if errors.Is(err, memcache.ErrNotStored) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("memcached add: %w", err)
	}
	return true, nil
}

// Delete removes key.
func (m *Memcached) Delete(_ context.Context, key string) error {
	if err := m.c.Delete(mkey(key)); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		return fmt.Errorf("memcached delete: %w", err)
	}
	return nil
}

// Ping checks that every server answers.
func (m *Memcached) Ping(context.Context) error { return m.c.Ping() }
