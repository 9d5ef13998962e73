package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// contract checks what callers rely on, for any implementation.
func contract(t *testing.T, c Cache, prefix string) {
	ctx := context.Background()
	key := prefix + "k"
	if _, ok, err := c.Get(ctx, key); ok || err != nil {
		t.Fatalf("fresh key: ok=%v err=%v", ok, err)
	}
	if err := c.Set(ctx, key, []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c.Get(ctx, key); !ok || err != nil || string(v) != "v1" {
		t.Fatalf("after Set: %q %v %v", v, ok, err)
	}
	if added, err := c.Add(ctx, key, []byte("v2"), time.Minute); added || err != nil {
		t.Errorf("Add over a live key: added=%v err=%v", added, err)
	}
	if err := c.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if added, err := c.Add(ctx, key, []byte("v3"), time.Minute); !added || err != nil {
		t.Errorf("Add after Delete: added=%v err=%v", added, err)
	}
	long := prefix + strings.Repeat("x", 300) + " with spaces"
	if err := c.Set(ctx, long, []byte("long"), time.Minute); err != nil {
		t.Fatalf("long key: %v", err)
	}
	if v, ok, _ := c.Get(ctx, long); !ok || string(v) != "long" {
		t.Errorf("long key read back %q %v", v, ok)
	}
}

func TestMemory(t *testing.T) {
	contract(t, NewMemory(10), "")
}

func TestMemoryExpiryAndBound(t *testing.T) {
	m := NewMemory(10)
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	ctx := context.Background()
	_ = m.Set(ctx, "a", []byte("1"), time.Second)
	now = now.Add(2 * time.Second)
	if _, ok, _ := m.Get(ctx, "a"); ok {
		t.Error("expired entry returned")
	}
	if added, _ := m.Add(ctx, "a", []byte("2"), time.Second); !added {
		t.Error("Add over an expired entry refused")
	}
	for i := range 100 {
		_ = m.Set(ctx, string(rune('A'+i)), []byte("x"), time.Hour)
	}
	if n := len(m.entries); n > 10 {
		t.Errorf("%d entries in a cache bounded to 10", n)
	}
}

// TestMemcached runs against the machine's memcached (make setup starts it),
// under a random key prefix.
func TestMemcached(t *testing.T) {
	m := NewMemcached([]string{"127.0.0.1:11211"})
	if err := m.Ping(context.Background()); err != nil {
		t.Fatalf("test needs memcached on 127.0.0.1:11211 (make setup starts it): %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	contract(t, m, "test:"+hex.EncodeToString(b)+":")
}

func TestMemcachedDown(t *testing.T) {
	m := NewMemcached([]string{"127.0.0.1:1"})
	if _, ok, err := m.Get(context.Background(), "k"); ok || err == nil {
		t.Errorf("Get from a dead memcached: ok=%v err=%v, want an error", ok, err)
	}
}
