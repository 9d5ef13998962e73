// Package cache provides the small key-value cache Coordinator keeps LMS
// tokens, username look-ups and site settings in: in process by default,
// shared through memcached when configured.
package cache

import (
	"context"
	"sync"
	"time"
)

// Cache stores short-lived byte values. Implementations are safe for
// concurrent use. A miss is (nil, false, nil); an error means the cache
// itself failed, and callers degrade to doing the work directly.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
	// Add stores value only if key is absent, and reports whether it did:
	// the building block of a short lock shared by several processes.
	Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}

// Memory is an in-process Cache bounded to a number of entries.
type Memory struct {
	mu      sync.Mutex
	max     int
	entries map[string]entry
	now     func() time.Time
}

type entry struct {
	value   []byte
	expires time.Time
}

// NewMemory returns an in-process cache holding at most max entries; when full,
// expired entries are dropped first, then arbitrary ones.
func NewMemory(max int) *Memory {
	return &Memory{max: max, entries: make(map[string]entry), now: time.Now}
}

// Get returns the value for key if present and not expired.
func (m *Memory) Get(_ context.Context, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok {
		return nil, false, nil
	}
	if !m.now().Before(e.expires) {
		delete(m.entries, key)
		return nil, false, nil
	}
	return e.value, true, nil
}

// Set stores value under key for ttl.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[key]; !ok && len(m.entries) >= m.max {
		m.evict()
	}
	m.entries[key] = entry{value: value, expires: m.now().Add(ttl)}
	return nil
}

// Add stores value under key unless a live entry exists.
func (m *Memory) Add(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && m.now().Before(e.expires) {
		return false, nil
	}
	if len(m.entries) >= m.max {
		m.evict()
	}
	m.entries[key] = entry{value: value, expires: m.now().Add(ttl)}
	return true, nil
}

// Delete removes key.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
	return nil
}

// evict frees room: all expired entries, or else about a tenth of the cache.
func (m *Memory) evict() {
	now := m.now()
	for k, e := range m.entries {
		if !now.Before(e.expires) {
			delete(m.entries, k)
		}
	}
	for k := range m.entries {
		if len(m.entries) < m.max-m.max/10 {
			break
		}
		delete(m.entries, k)
	}
}
