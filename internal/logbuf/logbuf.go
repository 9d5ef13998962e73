// Package logbuf gathers log lines into few writes: a logger that writes
// each line to a file or pipe pays a system call per line, made while its
// handler holds the lock every other logging goroutine waits on. A Writer
// copies lines into memory and writes them out when its buffer fills, at
// every interval, and on Flush and Close.
//
// What it costs: lines written less than one interval before the process
// dies without Close (SIGKILL, the OOM killer, an unrecovered panic, a fatal
// runtime error) are lost; a panic's trace is not, as the runtime writes it
// to the file itself, but the lines just before it may be. A write to out
// that fails loses the block it carried: a log has nowhere to report it.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// Writer is an io.Writer for concurrent loggers that buffers what they
// write. Its memory is bounded: a write that would overflow the buffer
// writes it out first, and the caller that does so waits for the write,
// which is how a slow output slows its loggers instead of growing memory.
type Writer struct {
	out  io.Writer
	size int

	mu     sync.Mutex // guards buf and closed
	buf    []byte
	closed bool

	outMu sync.Mutex // orders writes to out; guards spare
	spare []byte

	stop chan struct{}
	done chan struct{}
}

// New returns a Writer to out with a buffer of size bytes, written out at
// least every interval (> 0) until Close.
func New(out io.Writer, size int, interval time.Duration) *Writer {
	w := &Writer{out: out, size: size, buf: make([]byte, 0, size), spare: make([]byte, 0, size),
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.tick(interval)
	return w
}

func (w *Writer) tick(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			_ = w.Flush()
		}
	}
}

// Write copies p into the buffer. When p does not fit, it writes the
// buffer out first, and p itself when p alone is larger than the buffer or
// the Writer is closed.
func (w *Writer) Write(p []byte) (int, error) {
	if w.buffer(p) {
		return len(p), nil
	}
	w.outMu.Lock()
	defer w.outMu.Unlock()
	if err := w.flushLocked(); err != nil {
		return 0, err
	}
	if w.buffer(p) {
		return len(p), nil
	}
	return w.out.Write(p)
}

// buffer appends p when it fits and the Writer is open.
func (w *Writer) buffer(p []byte) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.buf)+len(p) > w.size {
		return false
	}
	w.buf = append(w.buf, p...)
	return true
}

// Flush writes out what is buffered.
func (w *Writer) Flush() error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	return w.flushLocked()
}

// flushLocked swaps the buffer for the spare one and writes it out while
// other goroutines go on filling the fresh one. outMu must be held.
func (w *Writer) flushLocked() error {
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare
	w.mu.Unlock()
	w.spare = b[:0]
	if len(b) == 0 {
		return nil
	}
	_, err := w.out.Write(b)
	return err
}

// Close stops the interval flushes and writes out what is buffered; later
// writes, and later calls to Close, go straight to out.
func (w *Writer) Close() error {
	w.mu.Lock()
	closed := w.closed
	w.closed = true
	w.mu.Unlock()
	if closed {
		return nil
	}
	close(w.stop)
	<-w.done
	return w.Flush()
}
