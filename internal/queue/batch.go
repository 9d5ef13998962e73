package queue

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// indexWrite is one order-index entry waiting for its batch.
type indexWrite struct {
	key, id string
	check   string // another id whose membership of key to report; "" for none
	done    chan indexResult
}

type indexResult struct {
	member bool
	err    error
}

// indexer writes order-index entries with group commit: concurrent requests
// share one pipelined round trip to Redis, and each waits for the batch that
// carries its entry, so nothing is answered before it is written. Under load
// this turns one round trip per request into one per batch.
type indexer struct {
	rdb redis.UniversalClient
	ttl time.Duration
	in  chan indexWrite
}

const maxIndexBatch = 512

func newIndexer(rdb redis.UniversalClient, ttl time.Duration) *indexer {
	ix := &indexer{rdb: rdb, ttl: ttl, in: make(chan indexWrite, maxIndexBatch)}
	go ix.loop()
	return ix
}

// add writes key ∋ id and returns once it is in Redis (or failed), with
// whether check (when not "") was already in key.
func (ix *indexer) add(ctx context.Context, key, id, check string) (bool, error) {
	w := indexWrite{key: key, id: id, check: check, done: make(chan indexResult, 1)}
	select {
	case ix.in <- w:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case r := <-w.done:
		return r.member, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// loop takes whatever is waiting — at least one entry, at most a batch —
// and writes it in one pipeline. It never waits to fill a batch: when the
// service is idle a lone write goes out at once.
func (ix *indexer) loop() {
	batch := make([]indexWrite, 0, maxIndexBatch)
	checks := make([]*redis.BoolCmd, 0, maxIndexBatch)
	for w := range ix.in {
		batch = append(batch[:0], w)
	fill:
		for len(batch) < maxIndexBatch {
			select {
			case w := <-ix.in:
				batch = append(batch, w)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
		pipe := ix.rdb.Pipeline()
		checks = checks[:0]
		for _, w := range batch {
			var c *redis.BoolCmd
			if w.check != "" {
				c = pipe.SIsMember(ctx, w.key, w.check)
			}
			checks = append(checks, c)
			pipe.SAdd(ctx, w.key, w.id)
			pipe.Expire(ctx, w.key, ix.ttl)
		}
		_, err := pipe.Exec(ctx)
		cancel()
		for i, w := range batch {
			r := indexResult{err: err}
			if err == nil && checks[i] != nil {
				r.member = checks[i].Val()
			}
			w.done <- r
		}
	}
}
