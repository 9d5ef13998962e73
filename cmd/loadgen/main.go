// Command loadgen is Coordinator's reproducible benchmark (make bench): it
// starts the real binary against the machine's Redis and an in-process fake
// LMS, drives it from 127.0.0.1 for bounded times and counts, and prints one
// table: API throughput and latency against a bare net/http handler, backlog
// drain rate at two LMS latencies, API and worker together under a steady
// load, and each process's peak RSS and CPU time.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
)

const (
	lmsSecret = "loadgen-lms-secret"
	jwtSecret = "loadgen-jwt-secret-0123456789abcdef"
	issuer    = "http://loadgen/oauth2"
	audience  = "lms-key"
	course    = "course-v1:edX+DemoX+Demo_Course"
)

type options struct {
	bin          string
	redisURL     string
	apiDuration  time.Duration
	conns        []int
	drainN       int
	drainLatency []time.Duration
	rate         int
	togetherDur  time.Duration
	concurrency  int
	runs         string
	profile      string
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "--bare-server" {
		bareServer(os.Args[2])
		return
	}
	var o options
	var conns, lat string
	flag.StringVar(&o.bin, "bin", "bin/coordinator", "the coordinator binary")
	flag.StringVar(&o.redisURL, "redis", "redis://127.0.0.1:6379/14", "Redis for the runs (a queue of its own is created and deleted)")
	flag.DurationVar(&o.apiDuration, "api-duration", 10*time.Second, "length of each API run")
	flag.StringVar(&conns, "conns", "32,128", "concurrent connections for the API runs")
	flag.IntVar(&o.drainN, "drain-n", 20000, "tasks queued before the worker starts")
	flag.StringVar(&lat, "drain-latency", "0s,50ms", "fake LMS latencies for the drain runs")
	flag.IntVar(&o.rate, "rate", 3000, "offered orders per second in the together run")
	flag.DurationVar(&o.togetherDur, "together-duration", 30*time.Second, "length of the together run")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of coordinator api during the first API run to this file")
	flag.StringVar(&o.runs, "runs", "api,drain,together", "which runs to make")
	flag.IntVar(&o.concurrency, "worker-concurrency", 600, "worker.concurrency and lms.max_concurrency for the drain and together runs")
	flag.Parse()
	for _, c := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(c)
		if err != nil {
			fatal(fmt.Errorf("-conns: %w", err))
		}
		o.conns = append(o.conns, n)
	}
	for _, l := range strings.Split(lat, ",") {
		d, err := time.ParseDuration(l)
		if err != nil {
			fatal(fmt.Errorf("-drain-latency: %w", err))
		}
		o.drainLatency = append(o.drainLatency, d)
	}
	if err := bench(context.Background(), o); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}

// bareServer is the machine's ceiling: a net/http handler that reads the
// body and answers a constant JSON object.
func bareServer(addr string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	fatal((&http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}).ListenAndServe())
}

// env is one benchmark environment: a queue, a fake LMS and a temp dir.
type env struct {
	o       options
	dir     string
	queue   string
	fake    *lmstest.Server
	lmsURL  string
	rdb     redis.UniversalClient
	token   string
	enrolls atomic.Int64
	first   atomic.Int64 // unix nanos of the first enrollment
	last    atomic.Int64
}

func bench(ctx context.Context, o options) error {
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("%s: build it first (make build): %w", o.bin, err)
	}
	dir, err := os.MkdirTemp("", "loadgen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ropt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	e := &env{o: o, dir: dir, rdb: rdb, queue: fmt.Sprintf("loadgen-%d", time.Now().UnixNano())}
	defer e.deleteQueue()
	e.fake = lmstest.NewDemo(lmsSecret)
	e.fake.SetRecording(false)
	for id := int64(100000); id < 100000+int64(max(o.drainN, o.rate*int(o.togetherDur.Seconds()+1)))+1000; id++ {
		e.fake.AddUser(id, "learner"+strconv.FormatInt(id, 10))
	}
	lmsSrv := &http.Server{Handler: e.countEnrollments(e.fake), ReadHeaderTimeout: 5 * time.Second}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = lmsSrv.Serve(l) }()
	defer lmsSrv.Close()
	e.lmsURL = "http://" + l.Addr().String()
	e.token, _ = jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": issuer, "aud": audience, "exp": time.Now().Add(24 * time.Hour).Unix(), "administrator": true,
	}).SignedString([]byte(jwtSecret))

	var rows []string
	add := func(format string, args ...any) {
		rows = append(rows, fmt.Sprintf(format, args...))
		fmt.Fprintln(os.Stderr, "loadgen:", rows[len(rows)-1])
	}

	want := func(run string) bool { return slices.Contains(strings.Split(o.runs, ","), run) }
	// 1. API against the bare handler.
	for _, c := range runIf(want("api"), o.conns) {
		bare, err := e.measureBare(ctx, c)
		if err != nil {
			return err
		}
		api, proc, err := e.measureAPI(ctx, c)
		if err != nil {
			return err
		}
		add("| API, %d conns | %s | %s | ratio %.2f of bare | coordinator api: peak RSS %.1f MB, %.2f CPU s per 1,000 orders |",
			c, api, bare, api.rps/bare.rps, proc.rssMB, proc.cpuSec/float64(api.ok)*1000)
	}
	// 2. Drain.
	for _, lat := range runIf(want("drain"), o.drainLatency) {
		d, err := e.measureDrain(ctx, lat)
		if err != nil {
			return err
		}
		add("| drain %d tasks, LMS %v | %.0f tasks/s | %d token requests, %d account look-ups for %d learners | coordinator worker: peak RSS %.1f MB, %.2f CPU s per 1,000 orders |",
			o.drainN, lat, d.rate, d.tokens, d.accounts, o.drainN, d.proc.rssMB, d.proc.cpuSec/float64(o.drainN)*1000)
	}
	// 3. Together.
	if want("together") {
		t, err := e.measureTogether(ctx)
		if err != nil {
			return err
		}
		add("| together, offered %d/s for %v | accepted %.0f/s, delivered %.0f/s, errors %d | backlog at end %d | coordinator all: peak RSS %.1f MB, %.2f CPU s per 1,000 orders |",
			o.rate, o.togetherDur, t.acceptedRate, t.deliveredRate, t.errors, t.backlog, t.proc.rssMB, t.proc.cpuSec/float64(max(1, t.accepted))*1000)
	}

	fmt.Println("| run | result | comparison | notes |")
	fmt.Println("|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
	return nil
}

// runIf is the settings to run with, or none when the run is not wanted.
func runIf[T any](wanted bool, settings []T) []T {
	if !wanted {
		return nil
	}
	return settings
}

// countEnrollments times the first and last enrollment the fake answers.
func (e *env) countEnrollments(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r)
		if r.Method == http.MethodPost && r.URL.Path == "/api/enrollment/v1/enrollment" {
			now := time.Now().UnixNano()
			e.first.CompareAndSwap(0, now)
			e.last.Store(now)
			e.enrolls.Add(1)
		}
	})
}

func (e *env) resetCounts() {
	e.enrolls.Store(0)
	e.first.Store(0)
	e.last.Store(0)
}

func (e *env) deleteQueue() {
	if err := queue.Purge(context.Background(), e.rdb, e.queue); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: purge:", err)
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a running child process.
type process struct {
	cmd  *exec.Cmd
	logs bytes.Buffer
}

type usage struct {
	rssMB  float64
	cpuSec float64
}

// start runs the coordinator binary with a generated config.
func (e *env) start(command, addr string, latency time.Duration) (*process, error) {
	cfg := fmt.Sprintf(`
http: {addr: %q, pprof: true}
shutdown_timeout: 10s
log: {level: warn}
redis: {url: %q}
lms: {url: %q, client_secret: %q, timeout: 5s, max_concurrency: %d, rate_per_minute: 100000000}
auth: {jwt: [{issuer: %q, audience: %q, secret: %q}]}
worker: {queue: %q, concurrency: %d, retry: {initial_delay: 1s, max_delay: 10s}}
signals: {fulfill_order_placed: [lms.fulfill_order_placed_send_enroll_in_course]}
`, addr, e.o.redisURL, e.lmsURL, lmsSecret, e.o.concurrency, issuer, audience, jwtSecret, e.queue, e.o.concurrency)
	path := filepath.Join(e.dir, command+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	e.fake.SetLatency(latency)
	p := &process{cmd: exec.Command(e.o.bin, "--config", path, command)}
	p.cmd.Stderr = &p.logs
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	if command != "worker" {
		if err := waitHTTP("http://" + addr + "/health"); err != nil {
			p.stop()
			return nil, fmt.Errorf("%s: %w\n%s", command, err, p.logs.String())
		}
	}
	return p, nil
}

func waitHTTP(url string) error {
	for range 200 {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return errors.New("not healthy after 5s")
}

// usage reads peak RSS and CPU time from /proc while the process lives.
func (p *process) usage() usage {
	var u usage
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if b, err := os.ReadFile("/proc/" + pid + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				u.rssMB = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		u.cpuSec = (ut + st) / 100 // USER_HZ
	}
	return u
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// stats is one HTTP load run's result.
type stats struct {
	ok, errs      int
	rps           float64
	p50, p99, max time.Duration
}

func (s stats) String() string {
	return fmt.Sprintf("%.0f req/s, p50 %v, p99 %v, max %v, errors %d", s.rps, s.p50.Round(10*time.Microsecond),
		s.p99.Round(10*time.Microsecond), s.max.Round(100*time.Microsecond), s.errs)
}

// post sends one authenticated JSON POST and returns its status.
func post(client *http.Client, url, token string, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// load posts bodies from conns connections for d and measures.
func load(url, token string, conns int, d time.Duration, body func(worker, i int) []byte) stats {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	lat := make([][]time.Duration, conns)
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if status, err := post(client, url, token, body(w, i)); err != nil || status != http.StatusOK {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	s := stats{ok: len(all), errs: int(errs.Load()), rps: float64(len(all)) / elapsed.Seconds()}
	if len(all) > 0 {
		s.p50, s.p99, s.max = all[len(all)/2], all[len(all)*99/100], all[len(all)-1]
	}
	return s
}

func (e *env) measureBare(_ context.Context, conns int) (stats, error) {
	addr := freeAddr()
	self, _ := os.Executable()
	cmd := exec.Command(self, "--bare-server", addr)
	if err := cmd.Start(); err != nil {
		return stats{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := waitHTTP("http://" + addr + "/"); err != nil {
		return stats{}, fmt.Errorf("bare server: %w", err)
	}
	return load("http://"+addr+"/", e.token, conns, e.o.apiDuration, func(int, int) []byte { return []byte(`{}`) }), nil
}

func (e *env) measureAPI(_ context.Context, conns int) (stats, usage, error) {
	defer e.deleteQueue()
	addr := freeAddr()
	p, err := e.start("api", addr, 0)
	if err != nil {
		return stats{}, usage{}, err
	}
	defer p.stop()
	if e.o.profile != "" {
		go e.fetchProfile("http://"+addr+"/debug/pprof/profile?seconds=%d", e.o.apiDuration-time.Second)
	}
	run := time.Now().UnixNano()
	s := load("http://"+addr+"/orders/fulfill", e.token, conns, e.o.apiDuration, func(w, i int) []byte {
		return fmt.Appendf(nil, `{"course_id":%q,"course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":3,"email_opt_in":true,"order_number":"API-%d-%d-%d"}`, course, run, w, i)
	})
	// Every 200 must really be in Redis.
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(e.queue)
	if err != nil {
		return s, usage{}, fmt.Errorf("queue after API run: %w", err)
	}
	if info.Size != s.ok {
		return s, usage{}, fmt.Errorf("API run: %d answered 200 but %d tasks in Redis", s.ok, info.Size)
	}
	return s, p.usage(), nil
}

// fetchProfile saves a CPU profile of the process under load (pprof is on
// in the generated config, behind the admin JWT).
func (e *env) fetchProfile(urlFormat string, d time.Duration) {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf(urlFormat, int(d.Seconds())), nil)
	req.Header.Set("Authorization", "JWT "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(e.o.profile, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: profile:", err)
	}
	e.o.profile = ""
}

type drain struct {
	rate             float64
	tokens, accounts int
	proc             usage
}

func (e *env) measureDrain(ctx context.Context, latency time.Duration) (drain, error) {
	defer e.deleteQueue()
	kinds := pipeline.NewKinds(lms.Kinds(nil, nil)...)
	enq := pipeline.New(pipeline.Options{Kinds: kinds, Logger: slog.New(slog.DiscardHandler),
		Queue: queue.New(e.rdb, kinds, queue.Options{Name: e.queue, MaxAttempts: 5, Retention: time.Hour, TaskTimeout: time.Minute})})
	run := time.Now().UnixNano()
	var wg sync.WaitGroup
	var enqErr atomic.Value
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < e.o.drainN; i += 16 {
				o := fulfillment.Order{Site: "default", OrderNumber: fmt.Sprintf("DRAIN-%d-%d", run, i),
					CourseID: course, CourseMode: "verified", OrderPlaced: time.Unix(1714566902, 0), LMSUserID: 100000 + int64(i)}
				_, err := enq.Accept(ctx, lms.KindEnroll, o.Ref(), o)
				if err != nil {
					enqErr.Store(err)
				}
			}
		})
	}
	wg.Wait()
	if err, _ := enqErr.Load().(error); err != nil {
		return drain{}, fmt.Errorf("queue drain tasks: %w", err)
	}
	e.resetCounts()
	tokens0, accounts0 := e.fake.Count(lmstest.Token), e.fake.Count(lmstest.Account)
	p, err := e.start("worker", freeAddr(), latency)
	if err != nil {
		return drain{}, err
	}
	defer p.stop()
	deadline := time.Now().Add(5 * time.Minute)
	for e.enrolls.Load() < int64(e.o.drainN) {
		if time.Now().After(deadline) {
			return drain{}, fmt.Errorf("drain: %d of %d delivered in 5 minutes\n%s", e.enrolls.Load(), e.o.drainN, tail(p.logs.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	span := time.Duration(e.last.Load() - e.first.Load())
	n := float64(e.o.drainN)
	return drain{
		rate:     n / span.Seconds(),
		tokens:   e.fake.Count(lmstest.Token) - tokens0,
		accounts: e.fake.Count(lmstest.Account) - accounts0,
		proc:     p.usage(),
	}, nil
}

type together struct {
	accepted, errors            int
	acceptedRate, deliveredRate float64
	backlog                     int
	proc                        usage
}

func (e *env) measureTogether(_ context.Context) (together, error) {
	defer e.deleteQueue()
	addr := freeAddr()
	p, err := e.start("all", addr, 0)
	if err != nil {
		return together{}, err
	}
	defer p.stop()
	e.resetCounts()
	if e.o.profile != "" {
		go e.fetchProfile("http://"+addr+"/debug/pprof/profile?seconds=%d", e.o.togetherDur-time.Second)
	}
	url := "http://" + addr + "/orders/fulfill"
	const senders = 64
	tr := &http.Transport{MaxIdleConnsPerHost: senders}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	jobs := make(chan int, e.o.rate)
	var accepted, errs atomic.Int64
	var wg sync.WaitGroup
	run := time.Now().UnixNano()
	for range senders {
		wg.Go(func() {
			for i := range jobs {
				body := fmt.Appendf(nil, `{"course_id":%q,"course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":%d,"email_opt_in":true,"order_number":"ALL-%d-%d"}`, course, 100000+i, run, i)
				if status, err := post(client, url, e.token, body); err == nil && status == http.StatusOK {
					accepted.Add(1)
				} else {
					errs.Add(1)
				}
			}
		})
	}
	// Open loop: offer rate/100 orders every 10 ms.
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	i := 0
	for time.Since(start) < e.o.togetherDur {
		<-tick.C
		due := int(time.Since(start).Seconds() * float64(e.o.rate))
		for ; i < due; i++ {
			select {
			case jobs <- i:
			default: // senders saturated: the order is not offered (counted below)
			}
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	delivered := e.enrolls.Load()
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(e.queue)
	if err != nil {
		return together{}, err
	}
	return together{
		accepted:      int(accepted.Load()),
		errors:        int(errs.Load()),
		acceptedRate:  float64(accepted.Load()) / elapsed,
		deliveredRate: float64(delivered) / elapsed,
		backlog:       info.Pending + info.Active + info.Scheduled + info.Retry,
		proc:          p.usage(),
	}, nil
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
