// Command peers drives NATS JetStream or Redis Streams with the workloads of `telex-bench broker`, so that
// Scripts/bench-peers.sh can put their figures beside Telex's measured on the same events in the same run:
// publish on one connection with a window of events awaiting their acks, replay of the whole stream into the
// client, publish→delivery latency on a fixed schedule measured from each event's intended send time, bytes on
// disk per event and the server's peak RSS. Medians of -runs, with the samples, as one JSON object on stdout.
//
// It is built in GOPATH mode from Debian's packaged client sources (golang-github-nats-io-go-nats-dev,
// golang-github-gomodule-redigo-dev); see Scripts/bench-peers.sh.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A broker is one peer under test. Stream names are short words with hyphens (valid for both).
type broker interface {
	// create makes an empty stream `name`, removing any left from an earlier run.
	create(name string) error
	// publish sends every event to `name` with at most `window` awaiting their ack; it returns when all are acked.
	publish(name string, events [][]byte, window int) error
	// replay reads `name` from its first event until `count` arrived and returns the bytes of events received.
	replay(name string, count int) (int, error)
	// live subscribes to the new stream `name` on a second connection, sending each delivered event's index and
	// arrival time to `arrivals`, and returns the publishing side for `total` events.
	live(name string, total int, arrivals chan<- arrival) (liveStream, error)
	// drop deletes stream `name`, so each run's data does not add to the next run's memory.
	drop(name string) error
	close()
}

// A liveStream publishes without waiting for acks (they are collected on the side).
type liveStream interface {
	send(index int, event []byte) error
	// close waits for outstanding acks and ends the subscription.
	close() error
}

type arrival struct {
	index int
	at    time.Time
}

type options struct {
	brokerName, server, corpus, dataDir, jsonOut string
	events, runs, window, rate, serverPID        int
	duration                                     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.brokerName, "broker", "", "nats or redis")
	flag.StringVar(&o.server, "server", "", "the broker's HOST:PORT")
	flag.StringVar(&o.corpus, "corpus", "", "JSON Lines file: each line one event, published as is (cycled if short)")
	flag.IntVar(&o.events, "events", 200000, "events per publish run")
	flag.IntVar(&o.runs, "runs", 3, "runs of each workload; medians are reported")
	flag.IntVar(&o.window, "window", 256, "events awaiting their ack while publishing")
	flag.IntVar(&o.rate, "rate", 5000, "events per second in the latency run")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of the latency run")
	flag.StringVar(&o.dataDir, "data-dir", "", "the broker's data directory, to measure bytes on disk per event")
	flag.IntVar(&o.serverPID, "server-pid", 0, "the broker's process id, to read its peak RSS (VmHWM)")
	flag.StringVar(&o.jsonOut, "json-out", "", "write the JSON summary to this file too")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "peers (%s): %v\n", o.brokerName, err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.server == "" || o.corpus == "" || o.events < 1 || o.runs < 1 || o.window < 1 || o.rate < 1 {
		return fmt.Errorf("need -broker, -server, -corpus and positive -events, -runs, -window and -rate")
	}
	events, jsonBytes, err := readCorpus(o.corpus, o.events)
	if err != nil {
		return err
	}
	var b broker
	switch o.brokerName {
	case "nats":
		b, err = dialNATS(o.server, o.window)
	case "redis":
		b, err = dialRedis(o.server)
	default:
		return fmt.Errorf("-broker must be nats or redis, not %q", o.brokerName)
	}
	if err != nil {
		return err
	}
	defer b.close()
	logf(o, "corpus %s: %d events, %d B of JSON each on average", o.corpus, len(events), jsonBytes/len(events))

	var publish, replay, disk, p50, p99, p999, max []float64
	for run := 1; run <= o.runs; run++ {
		name := fmt.Sprintf("publish-%d", run)
		if err := b.create(name); err != nil {
			return fmt.Errorf("run %d: creating stream %s: %v", run, name, err)
		}
		before := dirBytes(o.dataDir)
		start := time.Now()
		if err := b.publish(name, events, o.window); err != nil {
			return fmt.Errorf("run %d: publishing to %s: %v", run, name, err)
		}
		publish = append(publish, float64(len(events))/time.Since(start).Seconds())
		start = time.Now()
		got, err := b.replay(name, len(events))
		if err != nil {
			return fmt.Errorf("run %d: replaying %s: %v", run, name, err)
		}
		replay = append(replay, float64(len(events))/time.Since(start).Seconds())
		if got != jsonBytes {
			return fmt.Errorf("run %d: replay of %s gave %d bytes of events, published %d", run, name, got, jsonBytes)
		}
		// Measured after the replay: NATS writes its blocks from a background flusher.
		if o.dataDir != "" {
			disk = append(disk, float64(dirBytes(o.dataDir)-before)/float64(len(events)))
		}
		if err := b.drop(name); err != nil {
			return fmt.Errorf("run %d: deleting %s: %v", run, name, err)
		}
		logf(o, "run %d: publish %.0f ev/s, replay %.0f ev/s", run, publish[run-1], replay[run-1])

		delays, err := latencyRun(b, fmt.Sprintf("latency-%d", run), events, o)
		if err != nil {
			return fmt.Errorf("run %d: latency: %v", run, err)
		}
		p50, p99 = append(p50, percentile(delays, 0.50)), append(p99, percentile(delays, 0.99))
		p999, max = append(p999, percentile(delays, 0.999)), append(max, percentile(delays, 1))
		logf(o, "run %d: latency at %d ev/s: p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms", run, o.rate,
			p50[run-1], p99[run-1], p999[run-1], max[run-1])
	}

	summary := map[string]interface{}{
		"broker": o.brokerName, "events": len(events), "runs": o.runs, "eventsInFlight": o.window,
		"averageEventJSONBytes":  jsonBytes / len(events),
		"publishEventsPerSecond": int(median(publish)), "replayEventsPerSecond": int(median(replay)),
		"latencyRate": o.rate, "latencySeconds": o.duration.Seconds(),
		"latencyP50Ms": median(p50), "latencyP99Ms": median(p99), "latencyP999Ms": median(p999),
		"latencyMaxMs": median(max), "diskBytesPerEvent": nil, "serverPeakRSSMiB": nil,
		"samples": map[string]interface{}{"publish": ints(publish), "replay": ints(replay), "latencyP50Ms": p50,
			"latencyP99Ms": p99, "diskBytesPerEvent": ints(disk)},
	}
	if len(disk) > 0 {
		summary["diskBytesPerEvent"] = int(median(disk))
	}
	if rss, err := peakRSS(o.serverPID); err == nil {
		summary["serverPeakRSSMiB"] = math.Round(rss*10) / 10
	} else if o.serverPID != 0 {
		return err
	}
	line, err := json.Marshal(summary)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	if o.jsonOut != "" {
		return ioutil.WriteFile(o.jsonOut, append(line, '\n'), 0o644)
	}
	return nil
}

// latencyRun publishes rate×duration events on a fixed schedule (event i is due at start + i/rate, however late
// the previous ones were: no coordinated omission) and returns each event's delay from its due time to its
// delivery, in milliseconds.
func latencyRun(b broker, name string, events [][]byte, o options) ([]float64, error) {
	total := int(float64(o.rate) * o.duration.Seconds())
	if err := b.create(name); err != nil {
		return nil, fmt.Errorf("creating stream %s: %v", name, err)
	}
	arrivals := make(chan arrival, total) // never blocks the subscriber
	stream, err := b.live(name, total, arrivals)
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %v", name, err)
	}
	interval := time.Second / time.Duration(o.rate)
	start := time.Now()
	due := func(index int) time.Time { return start.Add(time.Duration(index) * interval) }
	for index := 0; index < total; index++ {
		if wait := time.Until(due(index)); wait > 0 {
			time.Sleep(wait) // sleep, not spin: the broker shares the two cores
		}
		if err := stream.send(index, events[index%len(events)]); err != nil {
			stream.close()
			return nil, fmt.Errorf("publishing event %d to %s: %v", index, name, err)
		}
	}
	delays := make([]float64, 0, total)
	seen := make([]bool, total)
	deadline := time.After(30 * time.Second)
	for len(delays) < total {
		select {
		case a := <-arrivals:
			if a.index < 0 || a.index >= total || seen[a.index] {
				stream.close()
				return nil, fmt.Errorf("%s delivered event index %d twice or out of range", name, a.index)
			}
			seen[a.index] = true
			delays = append(delays, float64(a.at.Sub(due(a.index)))/1e6)
		case <-deadline:
			closing := stream.close() // may say why (a failed subscriber)
			return nil, fmt.Errorf("%s delivered %d of %d events within 30 s of the last send (closing: %v)",
				name, len(delays), total, closing)
		}
	}
	if err := stream.close(); err != nil {
		return nil, err
	}
	return delays, b.drop(name)
}

// readCorpus reads the non-blank lines of a JSON Lines file, cycled to `count` events; it returns them and
// their total bytes.
func readCorpus(path string, count int) ([][]byte, int, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("-corpus: %v", err)
	}
	defer file.Close()
	var distinct [][]byte
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; scanner.Scan(); line++ {
		text := bytes.TrimRight(scanner.Bytes(), "\r")
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		if !json.Valid(text) {
			return nil, 0, fmt.Errorf("-corpus %s line %d: not JSON", path, line)
		}
		distinct = append(distinct, append([]byte(nil), text...))
		if len(distinct) == count {
			break
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, 0, fmt.Errorf("-corpus %s: %v", path, err)
	}
	if len(distinct) == 0 {
		return nil, 0, fmt.Errorf("-corpus %s: no JSON lines in it", path)
	}
	events, total := make([][]byte, count), 0
	for i := range events {
		events[i] = distinct[i%len(distinct)]
		total += len(events[i])
	}
	return events, total, nil
}

// dirBytes is the apparent size of the regular files under dir (du -sb), 0 without a directory.
func dirBytes(dir string) int64 {
	var total int64
	if dir == "" {
		return 0
	}
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil // files come and go under a live broker: count what is there
	})
	return total
}

// peakRSS reads VmHWM of process pid, in MiB.
func peakRSS(pid int) (float64, error) {
	if pid == 0 {
		return 0, fmt.Errorf("no -server-pid")
	}
	status, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("-server-pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "VmHWM:" {
			kilobytes, err := strconv.ParseFloat(fields[1], 64)
			return kilobytes / 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmHWM line", pid)
}

// percentile of unsorted values by the nearest-rank method (q = 1 is the maximum).
func percentile(values []float64, q float64) float64 {
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	return percentile(values, 0.5)
}

func ints(values []float64) []int {
	out := make([]int, len(values))
	for i, value := range values {
		out[i] = int(value)
	}
	return out
}

func logf(o options, format string, arguments ...interface{}) {
	fmt.Fprintf(os.Stderr, "peers (%s): %s\n", o.brokerName, fmt.Sprintf(format, arguments...))
}
