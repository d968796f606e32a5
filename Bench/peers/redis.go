package main

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// redisBroker drives Redis Streams: XADD pipelined with at most the window of replies outstanding (one goroutine
// sends, one reads the replies: redigo allows one of each on a connection), XRANGE in pages of 1,000 for replay
// and XREAD BLOCK on a second connection for live delivery. Each event is one field, "event"; the latency run adds
// "index".
type redisBroker struct {
	server string
	conn   redis.Conn // for commands answered one at a time
}

const page = 1000

func dialRedis(server string) (*redisBroker, error) {
	conn, err := redis.Dial("tcp", server)
	if err != nil {
		return nil, fmt.Errorf("connecting to redis at %s: %v", server, err)
	}
	return &redisBroker{server: server, conn: conn}, nil
}

// create: XADD makes the stream; only an old one must go.
func (b *redisBroker) create(name string) error { return b.drop(name) }

// pipeline sends commands on its own connection while a goroutine reads their replies.
type pipeline struct {
	conn  redis.Conn
	slots chan struct{} // one per command awaiting its reply
	done  chan struct{}
	err   error // the first failed reply; read after done is closed
}

func newPipeline(server string, window, replies int) (*pipeline, error) {
	conn, err := redis.Dial("tcp", server)
	if err != nil {
		return nil, fmt.Errorf("connecting to redis at %s: %v", server, err)
	}
	p := &pipeline{conn: conn, slots: make(chan struct{}, window), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; i < replies; i++ {
			if _, err := conn.Receive(); err != nil && p.err == nil {
				p.err = fmt.Errorf("reply %d: %v", i, err)
			}
			<-p.slots
		}
	}()
	return p, nil
}

func (p *pipeline) send(command string, arguments ...interface{}) error {
	select {
	case p.slots <- struct{}{}:
	default:
		// The window is full: what is buffered must reach the server before a slot frees.
		if err := p.conn.Flush(); err != nil {
			return err
		}
		p.slots <- struct{}{}
	}
	return p.conn.Send(command, arguments...)
}

// finish flushes, waits for every reply and closes the connection.
func (p *pipeline) finish() error {
	err := p.conn.Flush()
	if err == nil {
		select {
		case <-p.done:
			err = p.err
		case <-time.After(time.Minute):
			err = fmt.Errorf("replies still missing after a minute")
		}
	}
	p.conn.Close()
	return err
}

func (b *redisBroker) publish(name string, events [][]byte, window int) error {
	p, err := newPipeline(b.server, window, len(events))
	if err != nil {
		return err
	}
	for i, event := range events {
		if err := p.send("XADD", name, "*", "event", event); err != nil {
			p.conn.Close()
			return fmt.Errorf("XADD %d: %v", i, err)
		}
	}
	return p.finish()
}

// entries parses an XRANGE reply (or one stream of an XREAD reply), [[id, [field, value, ...]], ...], as
// redigo's helpers do: taking the reply and the error of Do.
func entries(reply interface{}, replyErr error) (ids []string, fields []map[string][]byte, err error) {
	list, err := redis.Values(reply, replyErr)
	if err != nil {
		return nil, nil, err
	}
	for _, item := range list {
		pair, err := redis.Values(item, nil)
		if err != nil || len(pair) != 2 {
			return nil, nil, fmt.Errorf("stream entry is not [id, fields]: %v", item)
		}
		id, err := redis.String(pair[0], nil)
		if err != nil {
			return nil, nil, fmt.Errorf("stream entry id: %v", err)
		}
		values, err := redis.ByteSlices(pair[1], nil)
		if err != nil || len(values)%2 != 0 {
			return nil, nil, fmt.Errorf("stream entry %s: fields are not name/value pairs", id)
		}
		byName := map[string][]byte{}
		for i := 0; i < len(values); i += 2 {
			byName[string(values[i])] = values[i+1]
		}
		ids, fields = append(ids, id), append(fields, byName)
	}
	return ids, fields, nil
}

func (b *redisBroker) replay(name string, count int) (int, error) {
	received, size, from := 0, 0, "-"
	for received < count {
		ids, fields, err := entries(b.conn.Do("XRANGE", name, from, "+", "COUNT", page))
		if err != nil {
			return 0, fmt.Errorf("XRANGE %s %s: %v", name, from, err)
		}
		if len(ids) == 0 {
			return 0, fmt.Errorf("stream %s ended after %d of %d events", name, received, count)
		}
		for _, entry := range fields {
			size += len(entry["event"])
		}
		received += len(ids)
		from = "(" + ids[len(ids)-1] // exclusive start (Redis 6.2 and later)
	}
	return size, nil
}

func (b *redisBroker) live(name string, total int, arrivals chan<- arrival) (liveStream, error) {
	// The subscriber has its own connection (XREAD BLOCK holds it), as in telex-bench's latency run.
	conn, err := redis.Dial("tcp", b.server)
	if err != nil {
		return nil, fmt.Errorf("connecting to redis at %s: %v", b.server, err)
	}
	pub, err := newPipeline(b.server, page, total)
	if err != nil {
		conn.Close()
		return nil, err
	}
	l := &redisLive{name: name, pub: pub, sub: conn, stopped: make(chan error, 1)}
	go l.subscribe(arrivals)
	return l, nil
}

type redisLive struct {
	name    string
	pub     *pipeline
	sub     redis.Conn
	stop    int32 // set by close; the subscriber looks at it after each XREAD
	stopped chan error
}

// subscribe reads the stream from its start (it is new) until close, stamping each page's arrival time.
func (l *redisLive) subscribe(arrivals chan<- arrival) {
	last := "0-0"
	for atomic.LoadInt32(&l.stop) == 0 {
		reply, err := redis.Values(l.sub.Do("XREAD", "COUNT", page, "BLOCK", 500, "STREAMS", l.name, last))
		at := time.Now()
		if err == redis.ErrNil {
			continue // BLOCK timed out: look at stop again
		}
		if err != nil || len(reply) != 1 {
			l.stopped <- fmt.Errorf("XREAD %s: %v", l.name, err)
			return
		}
		stream, _ := redis.Values(reply[0], nil) // [name, entries]
		if len(stream) != 2 {
			l.stopped <- fmt.Errorf("XREAD %s: reply is not [stream, entries]", l.name)
			return
		}
		ids, fields, err := entries(stream[1], nil)
		if err != nil {
			l.stopped <- fmt.Errorf("XREAD %s: %v", l.name, err)
			return
		}
		for _, entry := range fields {
			index, err := strconv.Atoi(string(entry["index"]))
			if err != nil {
				index = -1 // reported by latencyRun as out of range
			}
			arrivals <- arrival{index, at}
		}
		last = ids[len(ids)-1]
	}
	l.stopped <- nil
}

func (l *redisLive) send(index int, event []byte) error {
	if err := l.pub.send("XADD", l.name, "*", "index", index, "event", event); err != nil {
		return err
	}
	return l.pub.conn.Flush() // each event leaves at its time
}

func (l *redisLive) close() error {
	err := l.pub.finish()
	atomic.StoreInt32(&l.stop, 1)
	if subErr := <-l.stopped; err == nil {
		err = subErr
	}
	l.sub.Close()
	return err
}

func (b *redisBroker) drop(name string) error {
	_, err := b.conn.Do("DEL", name)
	return err
}

func (b *redisBroker) close() { b.conn.Close() }
