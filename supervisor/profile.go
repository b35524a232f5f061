package supervisor

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// serveProfile relays a pprof profile from one slot's worker, over its
// control channel: profiles never reach the public port.
func (s *Supervisor) serveProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	slot, err := strconv.Atoi(q.Get("slot"))
	if err != nil {
		operator.WriteError(w, operator.WithStatus(http.StatusBadRequest, fmt.Errorf("pprof: slot %q: want a number", q.Get("slot"))))
		return
	}
	kind := q.Get("kind")
	seconds := 0
	if kind == "cpu" {
		if seconds, err = strconv.Atoi(q.Get("seconds")); err != nil || seconds < 1 {
			operator.WriteError(w, operator.WithStatus(http.StatusBadRequest, fmt.Errorf("pprof: seconds %q: want a positive number", q.Get("seconds"))))
			return
		}
	}
	type found struct {
		p     *proc
		slots int
	}
	f, _ := ask(s.in, func(o *owner) found { return found{o.worker(slot), len(o.slots)} })
	p := f.p
	if p == nil {
		operator.WriteError(w, operator.WithStatus(http.StatusNotFound, fmt.Errorf("pprof: no worker in slot %d (slots 0 to %d)", slot, f.slots-1)))
		return
	}
	m, err := request(r.Context(), p, control.Message{Type: control.TypeProfile, Profile: &control.ProfileRequest{Kind: kind, Seconds: seconds}})
	switch {
	case err != nil:
		operator.WriteError(w, operator.WithStatus(http.StatusServiceUnavailable, fmt.Errorf("pprof: %w", err)))
		return
	case m.Error != "":
		operator.WriteError(w, operator.WithStatus(http.StatusBadRequest, fmt.Errorf("pprof: worker %d: %s", p.pid, m.Error)))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(m.Data)
}
