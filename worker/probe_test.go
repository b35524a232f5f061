package worker

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/labstack/echo/v4"
)

func TestProbeGoesThroughTheChainUncounted(t *testing.T) {
	cfg := testConfig()
	cfg.Log.Access = true
	var logs bytes.Buffer
	e := newEnv(t, cfg)
	e.app.log = slog.New(slog.NewJSONHandler(&logs, nil))

	entered, release := make(chan struct{}), make(chan struct{})
	chain := e.app.chain
	e.app.chain = func(c echo.Context) error {
		if c.Request().RemoteAddr == probeAddr {
			close(entered)
			<-release
		}
		return chain(c)
	}
	probed := make(chan struct{})
	go func() {
		e.app.Probe()
		close(probed)
	}()
	<-entered // the probe reached the application's middleware chain
	select {
	case <-probed:
		t.Fatal("Probe returned while the request path was stuck")
	default:
	}
	close(release)
	<-probed
	if n := e.app.Requests(); n != 0 {
		t.Errorf("the probe counted as %d requests", n)
	}
	if logs.Len() != 0 {
		t.Errorf("the probe was logged: %s", logs.String())
	}
}
