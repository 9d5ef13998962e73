package main

import (
	"fmt"
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
