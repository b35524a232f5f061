// Package bench is the engine behind amexbench: it runs vegeta attacks
// against a loopback target, classifies their outcomes, reports them as a
// table or JSON, serves the bare net/http baseline and starts amexd for a run.
package bench
