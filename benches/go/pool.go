// A plain hand-written goroutine pool — one buffered channel of closures and a
// sync.WaitGroup — as an optional peer of benches/throughput.rs, so that the
// Go reference in the performance issue is measured on this host, in the same
// run as the Rust pools, instead of quoted from another machine.
//
// It is driven by the Rust bench over stdin/stdout (see "Go peer" in
// benches/throughput.rs): started with the worker count and the channel
// capacity, it reads one request per line,
//
//	<jobs> <producers> <work_us> <reps>
//
// runs the workload reps times back to back (submit every job from
// <producers> goroutines, wait until all have run) and answers with the total
// wall time in nanoseconds. The pool is built once at start and reused, like
// every other peer. CPU work is a spin loop calibrated here, in Go, to the
// same microseconds the Rust peers spin for.
//
// Build (Go 1.19 or later, no modules needed):
//
//	go build -o /work/target-bench/gopool benches/go/pool.go
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sink keeps the spin loop's result alive so the compiler cannot drop it.
var sink uint64

//go:noinline
func spin(iters uint64) {
	acc := uint64(0)
	for i := uint64(0); i < iters; i++ {
		acc ^= i
		acc = acc*0x9E3779B97F4A7C15 + 1
	}
	sink += acc
}

// calibrate returns spin iterations per microsecond: the fastest of several
// runs, since interference only ever makes a run slower.
func calibrate() float64 {
	const iters = 4_000_000
	spin(iters)
	best := time.Duration(1 << 62)
	for i := 0; i < 7; i++ {
		start := time.Now()
		spin(iters)
		if d := time.Since(start); d < best {
			best = d
		}
	}
	return float64(iters) / (float64(best.Nanoseconds()) / 1000)
}

// pool is the whole goroutine pool: workers ranging over one buffered channel.
type pool struct {
	jobs chan func()
}

func newPool(workers, capacity int) *pool {
	p := &pool{jobs: make(chan func(), capacity)}
	for i := 0; i < workers; i++ {
		go func() {
			for job := range p.jobs {
				job()
			}
		}()
	}
	return p
}

// runOnce submits jobs closures from producers goroutines and waits for all
// of them to run. Each closure spins, then counts down the WaitGroup.
func (p *pool) runOnce(jobs, producers int, iters uint64) {
	var wg sync.WaitGroup
	wg.Add(jobs)
	submit := func(from, to int) {
		for i := from; i < to; i++ {
			p.jobs <- func() {
				spin(iters)
				wg.Done()
			}
		}
	}
	if producers <= 1 {
		submit(0, jobs)
	} else {
		per := (jobs + producers - 1) / producers
		var started sync.WaitGroup
		for k := 0; k < producers; k++ {
			from, to := k*per, (k+1)*per
			if to > jobs {
				to = jobs
			}
			started.Add(1)
			go func() {
				defer started.Done()
				submit(from, to)
			}()
		}
		started.Wait()
	}
	wg.Wait()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gopool: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: gopool <workers> <capacity>")
	}
	workers, err1 := strconv.Atoi(os.Args[1])
	capacity, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil || workers < 1 || capacity < 0 {
		fail("bad arguments %q", os.Args[1:])
	}
	perMicro := calibrate()
	p := newPool(workers, capacity)
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "%s GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	out.Flush()
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 4 {
			fail("bad request %q", in.Text())
		}
		jobs, e1 := strconv.Atoi(f[0])
		producers, e2 := strconv.Atoi(f[1])
		workUs, e3 := strconv.ParseFloat(f[2], 64)
		reps, e4 := strconv.Atoi(f[3])
		if e1 != nil || e2 != nil || e3 != nil || e4 != nil {
			fail("bad request %q", in.Text())
		}
		iters := uint64(perMicro*workUs + 0.5)
		start := time.Now()
		for r := 0; r < reps; r++ {
			p.runOnce(jobs, producers, iters)
		}
		fmt.Fprintf(out, "%d\n", time.Since(start).Nanoseconds())
		out.Flush()
	}
	close(p.jobs)
}
