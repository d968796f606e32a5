package main

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// natsBroker drives JetStream: file-storage streams of one subject each, async publishes with at most the window
// awaiting their acks, and ordered (push, flow-controlled) consumers for replay and live delivery.
type natsBroker struct {
	url string
	nc  *nats.Conn
	js  nats.JetStreamContext

	mu       sync.Mutex
	firstErr error // the first failed async publish, reported by the next publish or close
}

const indexHeader = "Bench-Index"

func dialNATS(server string, window int) (*natsBroker, error) {
	b := &natsBroker{url: "nats://" + server}
	nc, err := nats.Connect(b.url, nats.Name("telex-peers"))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %v", b.url, err)
	}
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(window), nats.PublishAsyncErrHandler(b.asyncError))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream on %s: %v", b.url, err)
	}
	b.nc, b.js = nc, js
	return b, nil
}

func subject(name string) string { return "peers." + name }

func (b *natsBroker) asyncError(_ nats.JetStream, msg *nats.Msg, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.firstErr == nil {
		b.firstErr = fmt.Errorf("async publish to %s failed: %v", msg.Subject, err)
	}
}

// drained waits for every outstanding async publish to be acknowledged and returns the first failure.
func (b *natsBroker) drained() error {
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return fmt.Errorf("%d publishes still unacknowledged after a minute", b.js.PublishAsyncPending())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.firstErr
}

func (b *natsBroker) create(name string) error {
	if err := b.js.DeleteStream(name); err != nil && err != nats.ErrStreamNotFound {
		return err
	}
	_, err := b.js.AddStream(&nats.StreamConfig{
		Name: name, Subjects: []string{subject(name)}, Storage: nats.FileStorage, Replicas: 1,
	})
	return err
}

func (b *natsBroker) publish(name string, events [][]byte, window int) error {
	for _, event := range events {
		// PublishAsync blocks while `window` publishes await their acks (PublishAsyncMaxPending); the stall
		// wait only bounds how long it may block.
		if _, err := b.js.PublishAsync(subject(name), event, nats.StallWait(time.Minute)); err != nil {
			return err
		}
	}
	return b.drained()
}

func (b *natsBroker) replay(name string, count int) (int, error) {
	var received, size int
	done := make(chan struct{})
	sub, err := b.js.Subscribe(subject(name), func(m *nats.Msg) {
		if received < count {
			received++
			size += len(m.Data)
			if received == count {
				close(done)
			}
		}
	}, nats.OrderedConsumer(), nats.DeliverAll())
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return 0, err
	}
	select {
	case <-done:
		return size, nil
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("no end of the replay after 5 minutes")
	}
}

func (b *natsBroker) live(name string, _ int, arrivals chan<- arrival) (liveStream, error) {
	// The subscriber has its own connection, as in telex-bench's latency run.
	nc, err := nats.Connect(b.url, nats.Name("telex-peers-subscriber"))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %v", b.url, err)
	}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	sub, err := js.Subscribe(subject(name), func(m *nats.Msg) {
		at := time.Now()
		index, err := strconv.Atoi(m.Header.Get(indexHeader))
		if err != nil {
			index = -1 // reported by latencyRun as out of range
		}
		arrivals <- arrival{index, at}
	}, nats.OrderedConsumer(), nats.DeliverAll())
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsLive{b: b, nc: nc, sub: sub, subject: subject(name)}, nil
}

type natsLive struct {
	b       *natsBroker
	nc      *nats.Conn
	sub     *nats.Subscription
	subject string
}

func (l *natsLive) send(index int, event []byte) error {
	msg := &nats.Msg{Subject: l.subject, Data: event, Header: nats.Header{}}
	msg.Header.Set(indexHeader, strconv.Itoa(index))
	_, err := l.b.js.PublishMsgAsync(msg, nats.StallWait(time.Minute))
	return err
}

func (l *natsLive) close() error {
	err := l.b.drained()
	l.sub.Unsubscribe()
	l.nc.Close()
	return err
}

func (b *natsBroker) drop(name string) error { return b.js.DeleteStream(name) }

func (b *natsBroker) close() { b.nc.Close() }
