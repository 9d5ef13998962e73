// Command loadgen is Coordinator's reproducible benchmark (make bench): it
// starts the real binary against the machine's Redis and an in-process fake
// LMS, drives it from 127.0.0.1 for bounded times and counts, and prints one
// table: API throughput and latency against two references measured in the
// same session — a bare net/http handler, and the "durable ceiling" (the same
// validation and one asynq enqueue of the task, nothing else) — backlog drain rate at two LMS latencies, API and worker together
// under a steady load, and each process's peak RSS and CPU time. With
// -repeat n each API and drain measurement is made n times, alternating, and
// the medians are reported with every run's figure.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
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
	"github.com/openedx/coordinator/internal/httpapi"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/seat"
)

const (
	lmsSecret = "loadgen-lms-secret"
	jwtSecret = "loadgen-jwt-secret-0123456789abcdef"
	issuer    = "http://loadgen/oauth2"
	audience  = "lms-key"
	course    = "course-v1:edX+DemoX+Demo_Course"
)

type options struct {
	bin           string
	redisURL      string
	apiDuration   time.Duration
	conns         []int
	drainN        int
	drainLatency  []time.Duration
	rate          int
	togetherDur   time.Duration
	concurrency   int
	runs          string
	profile       string
	logLevel      string
	drainServers  []int // worker.servers settings the drain runs compare
	repeat        int
	togetherConcs []int // the together runs to make
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "--bare-server" {
		bareServer(os.Args[2])
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "--ceiling-server" {
		ceilingServer(os.Args[2], os.Args[3], os.Args[4])
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
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile to this file: of coordinator api during the first API run, of the worker during the first drain with -runs drain")
	flag.StringVar(&o.runs, "runs", "api,drain,together", "which runs to make")
	flag.IntVar(&o.concurrency, "worker-concurrency", 600, "worker.concurrency and lms.max_concurrency for the drain runs")
	var togetherConc string
	flag.StringVar(&togetherConc, "together-concurrency", "0,600", "worker.concurrency and lms.max_concurrency of each together run (0: the binary's defaults)")
	flag.StringVar(&o.logLevel, "log-level", "info", "log.level of the coordinator processes (their logs go to a file, as to a collector)")
	var servers string
	flag.StringVar(&servers, "worker-servers", "0", "worker.servers settings the drain and together runs compare (0: the binary's default)")
	flag.IntVar(&o.repeat, "repeat", 1, "measure each API and drain setting this many times, alternating; report medians")
	flag.Parse()
	o.conns = parseInts("conns", conns)
	o.togetherConcs = parseInts("together-concurrency", togetherConc)
	o.drainServers = parseInts("worker-servers", servers)
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

// orderBody is a POST /orders/fulfill body for the learner and order number.
func orderBody(learner int64, orderNumber string) []byte {
	return fmt.Appendf(nil, `{"course_id":%q,"course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":%d,"email_opt_in":true,"order_number":%q}`,
		course, learner, orderNumber)
}

// parseInts reads a flag's comma-separated list of counts (0 or more).
func parseInts(name, list string) []int {
	var out []int
	for _, v := range strings.Split(list, ",") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fatal(fmt.Errorf("-%s: %q", name, v))
		}
		out = append(out, n)
	}
	return out
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

// ceilingServer is the durable ceiling: what Coordinator must do for an
// accepted order and nothing else — verify the HS256 JWT (Coordinator's own
// httpapi.Authenticator: its checks and its cache of verified tokens),
// validate the order, and queue its task with one asynq enqueue
// (asynq.Client with the task's id, as the queue does) before answering
// 200. No router, middleware, signals, order index, logging or metrics.
// (The ceiling of earlier rounds wrote the task in a group commit shared by
// concurrent requests, with asynq's message and script copied by hand; the
// queue no longer does, and a build of that version measures it.)
func ceilingServer(addr, redisURL, queueName string) {
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		fatal(err)
	}
	rdb := redis.NewClient(ropt)
	kinds := pipeline.NewKinds(seat.Kinds(nil, nil)...)
	enroll, _ := kinds.Get(seat.KindEnroll)
	client := asynq.NewClientFromRedisClient(rdb)
	auth := httpapi.NewAuthenticator(httpapi.AuthOptions{AdminClaim: "administrator",
		Issuers: []httpapi.Issuer{{Issuer: issuer, Audience: audience, Secret: jwtSecret}}}, nil)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		if _, err := auth.Verify(r.Context(), r.Header.Get("Authorization")); err != nil {
			http.Error(w, `{"detail":"unauthenticated"}`, http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			http.Error(w, `{"detail":"body"}`, http.StatusBadRequest)
			return
		}
		o, err := fulfillment.Parse(body, func(s string) bool { return s == fulfillment.DefaultSite })
		if err != nil {
			http.Error(w, `{"detail":"invalid"}`, http.StatusBadRequest)
			return
		}
		o.RequestID, o.AcceptedAt = "ceiling", time.Now().UTC()
		payload, err := json.Marshal(o)
		if err != nil {
			http.Error(w, `{"detail":"invalid"}`, http.StatusBadRequest)
			return
		}
		id := pipeline.TaskID(seat.KindEnroll, o.Ref().Key())
		_, err = client.EnqueueContext(r.Context(), asynq.NewTask(enroll.TaskType, payload), asynq.TaskID(id),
			asynq.Queue(queueName), asynq.MaxRetry(20), asynq.Retention(7*24*time.Hour), asynq.Timeout(time.Minute))
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			http.Error(w, `{"detail":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"task_id":"` + id + `"}`))
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
	// 1. API against the bare handler and the durable ceiling, alternating.
	for _, c := range runIf(want("api"), o.conns) {
		var bares, ceilings, apis []stats
		var procs, ceilingProcs []usage
		for range o.repeat {
			bare, err := e.measureBare(ctx, c)
			if err != nil {
				return err
			}
			ceiling, ceilingProc, err := e.measureCeiling(ctx, c)
			if err != nil {
				return err
			}
			api, proc, err := e.measureAPI(ctx, c)
			if err != nil {
				return err
			}
			bares, ceilings, apis = append(bares, bare), append(ceilings, ceiling), append(apis, api)
			procs, ceilingProcs = append(procs, proc), append(ceilingProcs, ceilingProc)
			fmt.Fprintf(os.Stderr, "loadgen: API %d conns, run %d: API %s | ceiling %s | bare %s | API/ceiling %.2f, API/bare %.2f | CPU µs/order: API %.1f, ceiling %.1f | API RSS %.1f MB\n",
				c, len(apis), api, ceiling, bare, api.rps/ceiling.rps, api.rps/bare.rps, 1000*proc.perThousand(api.ok),
				1000*ceilingProc.perThousand(ceiling.ok), proc.rssMB)
		}
		api, ceiling, bare := medianStats(apis), medianStats(ceilings), medianStats(bares)
		var rssMB, cpu, ceilingCPU float64
		for i, p := range procs {
			rssMB = max(rssMB, p.rssMB)
			cpu += p.perThousand(apis[i].ok)
			ceilingCPU += ceilingProcs[i].perThousand(ceilings[i].ok)
		}
		add("| API, %d conns, log %s | %s | durable ceiling (one asynq enqueue) %s; bare %s | **API/ceiling %.2f** (median of runs %s), API/bare %.2f (median of runs %s) | coordinator api: peak RSS %.1f MB, %.3f CPU s per 1,000 orders (the ceiling's server %.3f) |",
			c, o.logLevel, api, ceiling, bare, medianRatio(apis, ceilings), ratios(apis, ceilings), medianRatio(apis, bares), ratios(apis, bares),
			rssMB, cpu/float64(len(procs)), ceilingCPU/float64(len(procs)))
		add("| API %d conns, each run (req/s) | API %s | ceiling %s; bare %s | | |", c, rates(apis), rates(ceilings), rates(bares))
	}
	// 2. Drain, alternating the latencies and the worker.servers settings.
	type drainKey struct {
		lat     time.Duration
		servers int
	}
	drains := map[drainKey][]drain{}
	for range runIf(want("drain"), make([]struct{}, o.repeat)) {
		for _, srv := range o.drainServers {
			for _, lat := range o.drainLatency {
				d, err := e.measureDrain(ctx, lat, srv)
				if err != nil {
					return err
				}
				k := drainKey{lat, srv}
				drains[k] = append(drains[k], d)
				fmt.Fprintf(os.Stderr, "loadgen: drain LMS %v, worker.servers %s, run %d: %.0f tasks/s, %.2f CPU s per 1,000, machine idle %.0f %%\n",
					lat, setting(srv), len(drains[k]), d.rate, d.proc.perThousand(o.drainN), 100*d.idle)
			}
		}
	}
	for _, lat := range runIf(want("drain"), o.drainLatency) {
		var first float64
		for i, srv := range o.drainServers {
			ds := drains[drainKey{lat, srv}]
			all := make([]float64, len(ds))
			for i, d := range ds {
				all[i] = d.rate
			}
			m := ds[medianIndex(all)]
			ratio := "—"
			if i == 0 {
				first = m.rate
			} else {
				ratio = fmt.Sprintf("%.2f of worker.servers %s", m.rate/first, setting(o.drainServers[0]))
			}
			add("| drain %d tasks, LMS %v, worker.servers %s | **%.0f tasks/s** (runs %s) | %d token requests, %d account look-ups for %d learners | %s | coordinator worker: peak RSS %.1f MB, %.2f CPU s per 1,000 orders; machine idle %.0f %% |",
				o.drainN, lat, setting(srv), m.rate, floats(all), m.tokens, m.accounts, o.drainN, ratio, m.proc.rssMB, m.proc.perThousand(o.drainN), 100*m.idle)
		}
	}
	// 3. Together, at each concurrency and worker.servers setting asked for.
	for _, conc := range runIf(want("together"), o.togetherConcs) {
		for _, srv := range o.drainServers {
			t, err := e.measureTogether(ctx, conc, srv)
			if err != nil {
				return err
			}
			add("| together, offered %d/s for %v, log %s, worker.concurrency %s, worker.servers %s | accepted %.0f/s, delivered %.0f/s, errors %d | backlog at end %d (every 5 s: %s), all enrolled %s after the load | delivered/accepted %.2f | coordinator all: peak RSS %.1f MB, %.2f CPU s per 1,000 orders; machine idle %.0f %% |",
				o.rate, o.togetherDur, o.logLevel, setting(conc), setting(srv), t.acceptedRate, t.deliveredRate, t.errors, t.backlog, joinInts(t.backlogs), restLabel(t.rest), t.deliveredRate/max(1, t.acceptedRate), t.proc.rssMB, t.proc.perThousand(t.accepted), 100*t.idle)
		}
	}
	fmt.Println("| run | result | reference (same session) | ratio | process |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
	return nil
}

// medianStats is the run of median throughput.
func medianStats(runs []stats) stats {
	r := make([]float64, len(runs))
	for i, s := range runs {
		r[i] = s.rps
	}
	return runs[medianIndex(r)]
}

// medianIndex is the index of the median (the lower one of an even count).
func medianIndex(v []float64) int {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(v[a], v[b]) })
	return idx[(len(v)-1)/2]
}

// medianRatio is the median of the per-run ratios of a's throughput to b's.
func medianRatio(a, b []stats) float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i].rps / b[i].rps
	}
	return r[medianIndex(r)]
}

// ratios are the per-run ratios of a's throughput to b's (same run).
func ratios(a, b []stats) string {
	var out []string
	for i := range a {
		out = append(out, fmt.Sprintf("%.2f", a[i].rps/b[i].rps))
	}
	return strings.Join(out, " · ")
}

func rates(runs []stats) string {
	v := make([]float64, len(runs))
	for i, s := range runs {
		v[i] = s.rps
	}
	return floats(v)
}

func floats(v []float64) string {
	var out []string
	for _, f := range v {
		out = append(out, fmt.Sprintf("%.0f", f))
	}
	return strings.Join(out, " · ")
}

// setting names a count setting; 0 is the binary's default.
func setting(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n)
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

// process is a running child process; its logs go to a file, as to a log
// collector (an in-memory buffer would grow with every info line).
type process struct {
	cmd     *exec.Cmd
	logFile *os.File
}

// logs returns the end of the process's logs.
func (p *process) logs() string {
	b, _ := os.ReadFile(p.logFile.Name())
	return tail(string(b))
}

type usage struct {
	rssMB  float64
	cpuSec float64
}

// perThousand is the CPU time, in seconds, per 1,000 of the n orders or
// tasks the process handled (1,000 × it is µs per one).
func (u usage) perThousand(n int) float64 { return u.cpuSec / float64(max(1, n)) * 1000 }

// start runs the coordinator binary with a generated config.
// concurrency sets worker.concurrency and lms.max_concurrency, servers
// worker.servers; 0 leaves them at the binary's defaults.
func (e *env) start(command, addr string, latency time.Duration, concurrency, servers int) (*process, error) {
	serversCfg, workerConc, lmsConc := "", "", ""
	if servers > 0 {
		serversCfg = fmt.Sprintf("servers: %d, ", servers)
	}
	if concurrency > 0 {
		workerConc = fmt.Sprintf("concurrency: %d, ", concurrency)
		lmsConc = fmt.Sprintf("max_concurrency: %d, ", concurrency)
	}
	cfg := fmt.Sprintf(`
http: {addr: %q, pprof: true}
shutdown_timeout: 10s
log: {level: %s}
redis: {url: %q}
lms: {url: %q, client_secret: %q, timeout: 5s, %srate_per_minute: 100000000}
auth: {jwt: [{issuer: %q, audience: %q, secret: %q}]}
worker: {queue: %q, http_addr: %q, %s%sretry: {initial_delay: 1s, max_delay: 10s}}
signals: {fulfill_order_placed: [lms.fulfill_order_placed_send_enroll_in_course]}
`, addr, e.o.logLevel, e.o.redisURL, e.lmsURL, lmsSecret, lmsConc, issuer, audience, jwtSecret, e.queue, addr, workerConc, serversCfg)
	path := filepath.Join(e.dir, command+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	e.fake.SetLatency(latency)
	lf, err := os.Create(filepath.Join(e.dir, command+".log"))
	if err != nil {
		return nil, err
	}
	p := &process{cmd: exec.Command(e.o.bin, "--config", path, command), logFile: lf}
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	if command != "worker" {
		if err := waitHTTP("http://" + addr + "/health"); err != nil {
			p.stop()
			return nil, fmt.Errorf("%s: %w\n%s", command, err, p.logs())
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
func (p *process) usage() usage { return usageOf(p.cmd.Process.Pid) }

// usageOf reads a live process's peak RSS and CPU time from /proc.
func usageOf(p int) usage {
	var u usage
	pid := strconv.Itoa(p)
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

// cpuTimes reads the machine's idle and total CPU time (jiffies, every core)
// from /proc/stat.
func cpuTimes() (idle, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return idle, total
}

// idleSince is the share of the machine's CPU time left idle since
// cpuTimes gave idle0, total0: near 0, the run was bound by the machine's
// CPU (every process of the run shares it), not by what it measures.
func idleSince(idle0, total0 float64) float64 {
	idle, total := cpuTimes()
	if total <= total0 {
		return 0
	}
	return (idle - idle0) / (total - total0)
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
	p.logFile.Close()
	_ = os.Remove(p.logFile.Name())
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

func (e *env) measureCeiling(_ context.Context, conns int) (stats, usage, error) {
	defer e.deleteQueue()
	addr := freeAddr()
	self, _ := os.Executable()
	cmd := exec.Command(self, "--ceiling-server", addr, e.o.redisURL, e.queue)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return stats{}, usage{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := waitHTTP("http://" + addr + "/health"); err != nil {
		return stats{}, usage{}, fmt.Errorf("ceiling server: %w", err)
	}
	run := time.Now().UnixNano()
	s := load("http://"+addr+"/orders/fulfill", e.token, conns, e.o.apiDuration, func(w, i int) []byte {
		return orderBody(3, fmt.Sprintf("CEIL-%d-%d-%d", run, w, i))
	})
	return s, usageOf(cmd.Process.Pid), e.checkQueued("ceiling", s)
}

// checkQueued fails a run unless every 200 is a task in Redis.
func (e *env) checkQueued(run string, s stats) error {
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(e.queue)
	if err != nil {
		return fmt.Errorf("queue after %s run: %w", run, err)
	}
	if info.Size != s.ok {
		return fmt.Errorf("%s run: %d answered 200 but %d tasks in Redis", run, s.ok, info.Size)
	}
	return nil
}

func (e *env) measureAPI(_ context.Context, conns int) (stats, usage, error) {
	defer e.deleteQueue()
	addr := freeAddr()
	p, err := e.start("api", addr, 0, 0, 0)
	if err != nil {
		return stats{}, usage{}, err
	}
	defer p.stop()
	if e.o.profile != "" {
		go e.fetchProfile("http://"+addr+"/debug/pprof/profile?seconds=%d", e.o.apiDuration-time.Second)
	}
	run := time.Now().UnixNano()
	s := load("http://"+addr+"/orders/fulfill", e.token, conns, e.o.apiDuration, func(w, i int) []byte {
		return orderBody(3, fmt.Sprintf("API-%d-%d-%d", run, w, i))
	})
	// Every 200 must really be in Redis.
	if err := e.checkQueued("API", s); err != nil {
		return s, usage{}, err
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
	idle             float64 // the machine's idle CPU share during the drain
}

func (e *env) measureDrain(ctx context.Context, latency time.Duration, servers int) (drain, error) {
	defer e.deleteQueue()
	kinds := pipeline.NewKinds(seat.Kinds(nil, nil)...)
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
				_, err := enq.Accept(ctx, seat.KindEnroll, o.Ref(), o)
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
	addr := freeAddr()
	p, err := e.start("worker", addr, latency, e.o.concurrency, servers)
	if err != nil {
		return drain{}, err
	}
	defer p.stop()
	if e.o.profile != "" && e.o.runs == "drain" {
		if err := waitHTTP("http://" + addr + "/health"); err != nil {
			return drain{}, err
		}
		go e.fetchProfile("http://"+addr+"/debug/pprof/profile?seconds=%d", 3*time.Second)
	}
	idle0, total0 := cpuTimes()
	deadline := time.Now().Add(5 * time.Minute)
	for e.enrolls.Load() < int64(e.o.drainN) {
		if time.Now().After(deadline) {
			return drain{}, fmt.Errorf("drain: %d of %d delivered in 5 minutes\n%s", e.enrolls.Load(), e.o.drainN, p.logs())
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
		idle:     idleSince(idle0, total0),
	}, nil
}

type together struct {
	accepted, errors            int
	acceptedRate, deliveredRate float64
	backlog                     int
	backlogs                    []int64       // accepted minus enrolled, every 5 s of the run
	rest                        time.Duration // from the end of the load to the last enrollment; -1: over 60 s
	proc                        usage
	idle                        float64 // the machine's idle CPU share during the load
}

func (e *env) measureTogether(_ context.Context, concurrency, servers int) (together, error) {
	defer e.deleteQueue()
	addr := freeAddr()
	p, err := e.start("all", addr, 0, concurrency, servers)
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
				body := orderBody(100000+int64(i), fmt.Sprintf("ALL-%d-%d", run, i))
				if status, err := post(client, url, e.token, body); err == nil && status == http.StatusOK {
					accepted.Add(1)
				} else {
					errs.Add(1)
				}
			}
		})
	}
	// Open loop: offer rate/100 orders every 10 ms. Every 5 s the backlog
	// (accepted, not yet enrolled) is noted: a backlog that stays flat is a
	// worker keeping up, one that grows is not.
	start := time.Now()
	idle0, total0 := cpuTimes()
	tick := time.NewTicker(10 * time.Millisecond)
	i := 0
	var backlogs []int64
	next := start.Add(5 * time.Second)
	for time.Since(start) < e.o.togetherDur {
		<-tick.C
		if now := time.Now(); !now.Before(next) {
			backlogs = append(backlogs, accepted.Load()-e.enrolls.Load())
			next = next.Add(5 * time.Second)
		}
		due := int(time.Since(start).Seconds() * float64(e.o.rate))
		for ; i < due; i++ {
			select {
			case jobs <- i:
			default: // senders saturated: the order is not offered (counted below)
			}
		}
	}
	tick.Stop()
	idle := idleSince(idle0, total0)
	loadEnd := time.Now()
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	delivered := e.enrolls.Load()
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(e.queue)
	if err != nil {
		return together{}, err
	}
	// How long the rest takes once the load stopped (-1: not within 60 s).
	for e.enrolls.Load() < accepted.Load() && time.Since(loadEnd) < time.Minute {
		time.Sleep(10 * time.Millisecond)
	}
	rest := time.Since(loadEnd)
	if e.enrolls.Load() < accepted.Load() {
		rest = -1
	}
	return together{
		accepted:      int(accepted.Load()),
		errors:        int(errs.Load()),
		acceptedRate:  float64(accepted.Load()) / elapsed,
		deliveredRate: float64(delivered) / elapsed,
		backlog:       info.Pending + info.Active + info.Scheduled + info.Retry,
		backlogs:      backlogs,
		rest:          rest,
		proc:          p.usage(),
		idle:          idle,
	}, nil
}

func restLabel(d time.Duration) string {
	if d < 0 {
		return "not within 60 s"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func joinInts(xs []int64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(s, " ")
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
