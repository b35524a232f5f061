// Package pagecheck opens an HTML file in headless Chromium and reports
// what its script drew and every error the page raised: uncaught
// exceptions, console.error and console.warn calls, and browser log
// entries of level error (a resource that failed to load, such as a script
// from a network the page must not need). It is for tests.
package pagecheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/chromedp/chromedp"
)

// Result is what Open saw.
type Result struct {
	// Charts is the number of svg.chart elements, Marks the number of mark
	// lines drawn in them.
	Charts int
	Marks  int
	// Errors lists every error the page raised, in order.
	Errors []string
}

// Browser returns the path of the chromium binary, or an error naming what
// to install.
func Browser() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found (Debian package chromium)")
}

// Open loads file in a fresh headless Chromium (its own profile directory,
// no sandbox, GPU or background networking, so that it runs as root and
// offline), waits until the page's script has marked the body with
// data-charts, and returns what it drew and the errors it raised. It gives
// up after timeout.
func Open(ctx context.Context, browser, file string, timeout time.Duration) (Result, error) {
	profile, err := os.MkdirTemp("", "pagecheck-")
	if err != nil {
		return Result{}, fmt.Errorf("pagecheck: %w", err)
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()

	// Subscribing before the navigation loses no message; the loop below
	// reads them once the page has drawn.
	messages := chromedp.Console(tabCtx)
	var res Result
	err = chromedp.Do(tabCtx,
		chromedp.Navigate("file://"+file),
		chromedp.WaitReady(chromedp.CSS("body[data-charts]")),
	)
	if err == nil {
		res.Charts, err = chromedp.Run(tabCtx, chromedp.Evaluate[int](`document.querySelectorAll("svg.chart").length`))
	}
	if err == nil {
		res.Marks, err = chromedp.Run(tabCtx, chromedp.Evaluate[int](`document.querySelectorAll("svg.chart .marks line").length`))
	}
	if err != nil {
		return res, fmt.Errorf("pagecheck %s: %w", file, err)
	}
	// The page is drawn; what it raised is queued. Closing the tab ends
	// the iteration once the queue is read.
	drained, stop := context.WithTimeout(tabCtx, 2*time.Second)
	defer stop()
	go func() {
		<-drained.Done()
		cancelTab()
	}()
	for m, err := range messages {
		if err != nil {
			break
		}
		switch m.Type {
		case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
			res.Errors = append(res.Errors, m.String()+" "+m.URL)
		}
	}
	return res, nil
}
