// Package queuetest gives tests their own slice of the machine's real Redis:
// a connection to a test database and a queue name no other test uses, so
// that test packages can run in parallel against one server. Nothing is
// flushed; each test deletes only its own queue.
package queuetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/config"
	coordqueue "github.com/openedx/coordinator/internal/queue"
)

// URL is the Redis the tests use: $COORDINATOR_TEST_REDIS, else DB 9 of the
// local server.
func URL() string {
	if u := os.Getenv("COORDINATOR_TEST_REDIS"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/9"
}

// Redis returns a client for the test Redis and a queue name unique to this
// test. The queue and the order index under it are deleted when the test ends.
func Redis(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	opt, err := redis.ParseURL(URL())
	if err != nil {
		t.Fatalf("test redis url: %v", err)
	}
	rdb := redis.NewClient(opt)
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("test needs Redis at %s (make setup starts it): %v", URL(), err)
	}
	queue := Name()
	t.Cleanup(func() {
		if err := coordqueue.Purge(context.Background(), rdb, queue); err != nil {
			t.Logf("purge test queue %s: %v", queue, err)
		}
		rdb.Close()
	})
	return rdb, queue
}

// Config returns the redis config section for the test Redis.
func Config() config.Redis { return config.Redis{URL: URL()} }

// Name returns a fresh queue name.
func Name() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}
