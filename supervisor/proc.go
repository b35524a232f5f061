package supervisor

import (
	"errors"
	"net"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// queueLen is how many messages a worker's outbound queue holds. A worker
// that lets it fill is not reading its control channel: it is replaced.
const queueLen = 1024

// errQueueFull is a send to a worker whose outbound queue is full.
var errQueueFull = errors.New("outbound queue full")

// proc is one worker process. The owner loop alone writes its fields after
// spawn; the goroutines that read, write and reap it only use the channels.
type proc struct {
	slot    int
	gen     int
	pid     int
	cfg     config.Config
	process process
	conn    net.Conn
	codec   *control.Codec
	out     *peer
	calls   *control.Requests
	started time.Time
	ready   chan struct{} // closed by the owner on the ready message
	exited  chan struct{} // closed by the owner once the process is reaped
	// pausing, closed by a hand-over, makes the reader stop at a message
	// boundary and say so on paused.
	pausing chan struct{}
	paused  chan struct{}

	state    procState // written in lifecycle.go alone
	readyAt  time.Time
	lastBeat time.Time
	drainBy  time.Time // when a draining worker is killed
	quitAt   time.Time // when a hung worker was asked for its stacks
	// maxRequests is when the worker is recycled: max_requests plus its
	// own share of the jitter; 0 never.
	maxRequests uint64
	stats       control.Stats
	exitErr     error
	ctlClosed   bool // the worker closed its control channel (it has drained)
}

// peer is a worker's outbound queue with its own writer goroutine, so that
// a slow or stopped worker never blocks the owner loop or another worker.
type peer struct {
	q    chan control.Message
	stop chan struct{}
	// hold pauses the writer for a hand-over: it writes what is queued,
	// answers on the channel it was given, and waits for it to close.
	hold chan chan struct{}
}

func newPeer(codec *control.Codec, onError func(control.Message, error)) *peer {
	p := &peer{q: make(chan control.Message, queueLen), stop: make(chan struct{}), hold: make(chan chan struct{})}
	send := func(m control.Message) bool {
		err := codec.Send(m)
		if err != nil {
			onError(m, err)
		}
		return err == nil
	}
	go func() {
		for {
			select {
			case m := <-p.q:
				send(m)
			case h := <-p.hold:
				for flushed := false; !flushed; {
					select {
					case m := <-p.q:
						flushed = !send(m)
					default:
						flushed = true
					}
				}
				h <- struct{}{}
				<-h
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// Send queues m without waiting; it fails with errQueueFull when the
// worker has not kept up.
func (p *peer) Send(m control.Message) error {
	select {
	case p.q <- m:
		return nil
	default:
		return errQueueFull
	}
}

// procMsg is a message a worker sent, or (closed) the end of its channel.
type procMsg struct {
	p      *proc
	m      control.Message
	closed bool
}

// exit is a reaped worker process.
type exit struct {
	p   *proc
	err error
}

// read hands p's messages to the owner until its control channel ends.
// Answers to the supervisor's own requests go straight to their waiter.
func (in inbox) read(p *proc) {
	for {
		m, err := p.codec.Receive()
		if err != nil {
			select {
			case <-p.pausing:
				p.paused <- struct{}{}
				return
			default:
			}
			p.calls.Close()
			post(in, in.msgs, procMsg{p: p, closed: true})
			return
		}
		switch m.Type {
		case control.TypeApplied, control.TypeStats, control.TypeProfile:
			p.calls.Deliver(m)
		default:
			post(in, in.msgs, procMsg{p: p, m: m})
		}
	}
}

// reap waits for p to exit and tells the owner.
func (in inbox) reap(p *proc) {
	err := p.process.Wait()
	p.codec.Close()
	close(p.out.stop)
	post(in, in.exits, exit{p: p, err: err})
}

// post sends v to the owner loop on ch unless the loop has ended.
func post[T any](in inbox, ch chan<- T, v T) {
	select {
	case ch <- v:
	case <-in.done:
	}
}

// live is every process not yet reaped whose channel is open, but skip.
func (o *owner) live(skip *proc) []*proc {
	out := make([]*proc, 0, len(o.procs))
	for p := range o.procs {
		if p != skip && !p.is(stateExited) && !p.ctlClosed {
			out = append(out, p)
		}
	}
	return out
}
