package queue

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// indexWrite is one order-index entry waiting for its batch.
type indexWrite struct {
	key, id string
	done    chan error
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

// add writes key ∋ id and returns once it is in Redis (or failed).
func (ix *indexer) add(ctx context.Context, key, id string) error {
	w := indexWrite{key: key, id: id, done: make(chan error, 1)}
	select {
	case ix.in <- w:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop takes whatever is waiting — at least one entry, at most a batch —
// and writes it in one pipeline. It never waits to fill a batch: when the
// service is idle a lone write goes out at once.
func (ix *indexer) loop() {
	batch := make([]indexWrite, 0, maxIndexBatch)
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
		for _, w := range batch {
			pipe.SAdd(ctx, w.key, w.id)
			pipe.Expire(ctx, w.key, ix.ttl)
		}
		_, err := pipe.Exec(ctx)
		cancel()
		for _, w := range batch {
			w.done <- err
		}
	}
}
