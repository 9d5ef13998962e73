package main

import (
	"context"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// A Redis older than 7.0 is refused by name; the machine's is accepted.
func TestRedisVersion(t *testing.T) {
	for _, tt := range []struct{ info, want string }{
		{"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n", "version 6.2.14: Coordinator needs Redis 7.0 or later"},
		{"# Server\r\nredis_version:7.0.15\r\n", ""},
		{"# Server\r\nredis_version:7.2.4\r\n", ""},
	} {
		err := redisVersionProblem(tt.info)
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("%q: %v, want %q", tt.info, err, tt.want)
		}
	}
	rdb, _ := queuetest.Redis(t)
	if err := checkRedisVersion(context.Background(), rdb); err != nil {
		t.Errorf("this machine's Redis: %v", err)
	}
}
