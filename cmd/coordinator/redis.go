package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/config"
)

// newRedisClient connects to the Redis the configuration names. Timeouts are
// short so that an unreachable Redis turns into a quick 503, never a hang.
func newRedisClient(c config.Redis) (redis.UniversalClient, error) {
	const dial, rw = 2 * time.Second, 3 * time.Second
	switch {
	case c.Sentinel != nil:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.Sentinel.MasterName, SentinelAddrs: c.Sentinel.Addrs,
			Password: c.Sentinel.Password, SentinelPassword: c.Sentinel.SentinelPassword, DB: c.Sentinel.DB,
			DialTimeout: dial, ReadTimeout: rw, WriteTimeout: rw,
		}), nil
	case c.Cluster != nil:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Cluster.Addrs, Password: c.Cluster.Password,
			DialTimeout: dial, ReadTimeout: rw, WriteTimeout: rw,
		}), nil
	}
	opt, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = dial, rw, rw
	return redis.NewClient(opt), nil
}

// minRedisMajor is the oldest Redis the queue's own commands need: EXPIRE
// with NX and GT (7.0), which keep an order's index as long as its longest
// task.
const minRedisMajor = 7

// checkRedisVersion refuses a Redis older than minRedisMajor, by what INFO
// says. A Redis that does not answer now is not refused: with the ledger the
// API accepts while Redis is down, and the version is checked at the next
// start.
func checkRedisVersion(ctx context.Context, rdb redis.UniversalClient) error {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return nil
	}
	return redisVersionProblem(info)
}

// redisVersionProblem reads INFO's redis_version: an error when it is older
// than minRedisMajor.
func redisVersionProblem(info string) error {
	for _, line := range strings.Split(info, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:")
		if !ok {
			continue
		}
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err == nil && n < minRedisMajor {
			return fmt.Errorf("redis: version %s: Coordinator needs Redis %d.0 or later", v, minRedisMajor)
		}
	}
	return nil
}
