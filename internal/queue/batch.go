package queue

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// indexWrite is one order-index entry waiting for its batch, with the checks
// that ride in the same round trip.
type indexWrite struct {
	key, id string
	member  string // another id whose membership of key to report; "" for none
	exists  string // a key whose existence to report, checked before the write; "" for none
	done    chan indexResult
}

type indexResult struct {
	member, exists bool
	err            error
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

// add writes w.key ∋ w.id and returns once it is in Redis (or failed), with
// whether w.member was already in w.key and whether w.exists existed.
func (ix *indexer) add(ctx context.Context, w indexWrite) (indexResult, error) {
	w.done = make(chan indexResult, 1)
	select {
	case ix.in <- w:
	case <-ctx.Done():
		return indexResult{}, ctx.Err()
	}
	select {
	case r := <-w.done:
		return r, r.err
	case <-ctx.Done():
		return indexResult{}, ctx.Err()
	}
}

// loop takes whatever is waiting — at least one entry, at most a batch —
// and writes it in one pipeline. It never waits to fill a batch: when the
// service is idle a lone write goes out at once.
func (ix *indexer) loop() {
	batch := make([]indexWrite, 0, maxIndexBatch)
	members := make([]*redis.BoolCmd, 0, maxIndexBatch)
	exists := make([]*redis.IntCmd, 0, maxIndexBatch)
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
		members, exists = members[:0], exists[:0]
		for _, w := range batch {
			var m *redis.BoolCmd
			var e *redis.IntCmd
			if w.member != "" {
				m = pipe.SIsMember(ctx, w.key, w.member)
			}
			if w.exists != "" {
				e = pipe.Exists(ctx, w.exists)
			}
			members, exists = append(members, m), append(exists, e)
			pipe.SAdd(ctx, w.key, w.id)
			pipe.Expire(ctx, w.key, ix.ttl)
		}
		_, err := pipe.Exec(ctx)
		cancel()
		for i, w := range batch {
			r := indexResult{err: err}
			if err == nil {
				r.member = members[i] != nil && members[i].Val()
				r.exists = exists[i] != nil && exists[i].Val() == 1
			}
			w.done <- r
		}
	}
}

// existsCheck is one EXISTS waiting for its batch.
type existsCheck struct {
	key  string
	done chan existsResult
}

type existsResult struct {
	found bool
	err   error
}

// checker runs EXISTS look-ups with group commit, like indexer: the workers
// of a busy process check their lines together in one pipelined round trip,
// so the check before every attempt costs a command, not a round trip.
type checker struct {
	rdb redis.UniversalClient
	in  chan existsCheck
}

func newChecker(rdb redis.UniversalClient) *checker {
	c := &checker{rdb: rdb, in: make(chan existsCheck, maxIndexBatch)}
	go c.loop()
	return c
}

// exists reports whether key exists.
func (c *checker) exists(ctx context.Context, key string) (bool, error) {
	w := existsCheck{key: key, done: make(chan existsResult, 1)}
	select {
	case c.in <- w:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case r := <-w.done:
		return r.found, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (c *checker) loop() {
	batch := make([]existsCheck, 0, maxIndexBatch)
	cmds := make([]*redis.IntCmd, 0, maxIndexBatch)
	for w := range c.in {
		batch = append(batch[:0], w)
	fill:
		for len(batch) < maxIndexBatch {
			select {
			case w := <-c.in:
				batch = append(batch, w)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
		pipe := c.rdb.Pipeline()
		cmds = cmds[:0]
		for _, w := range batch {
			cmds = append(cmds, pipe.Exists(ctx, w.key))
		}
		_, err := pipe.Exec(ctx)
		cancel()
		for i, w := range batch {
			w.done <- existsResult{found: err == nil && cmds[i].Val() == 1, err: err}
		}
	}
}
