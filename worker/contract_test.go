package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/workertest"
)

// contract checks exchanges with a worker against the OpenAPI document and
// records which operations and statuses it saw.
type contract struct {
	doc    *openapi3.T
	router routers.Router
	seen   map[string][]int // operationId → statuses
}

func loadContract(t testing.TB, doc *openapi3.T) *contract {
	t.Helper()
	if doc == nil {
		doc = loadDocument(t)
	}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{doc: doc, router: r, seen: map[string][]int{}}
}

func loadDocument(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	return doc
}

// exchange is one request and the answer to it.
type exchange struct {
	req    *http.Request
	body   []byte
	answer answer
}

func (e *env) exchange(t testing.TB, method, path, body string, headers ...string) exchange {
	t.Helper()
	req := workertest.NewRequest(t, method, e.srv.URL+path, body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	status, header, b := workertest.Do(t, e.http, req)
	return exchange{req: req, body: []byte(body), answer: answer{status: status, header: header, body: b}}
}

// conformance is what a check expects of the request itself.
type conformance int

const (
	conforms conformance = iota
	violates             // bad inputs are meant not to conform
	unchecked
)

func expect(valid bool) conformance {
	if valid {
		return conforms
	}
	return violates
}

// check validates x against the document: the request as want says, and
// any answer must have its status declared for the operation, its declared
// headers present and well-formed, and its body matching the declared
// schema exactly.
func (ct *contract) check(x exchange, want conformance) error {
	req := x.req.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(x.body))
	route, params, err := ct.router.FindRoute(req)
	if err != nil {
		return ct.checkUnrouted(x, err)
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc:    requireBearerHeader,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(context.Background(), in)
	if want != unchecked && (reqErr == nil) != (want == conforms) {
		return fmt.Errorf("request conforms: %v, want %v (%v)", reqErr == nil, want == conforms, reqErr)
	}
	op := route.Operation.OperationID
	ct.seen[op] = append(ct.seen[op], x.answer.status)
	declared := route.Operation.Responses.Status(x.answer.status)
	if declared == nil {
		return fmt.Errorf("%s answered %d, which the document does not declare: %s", op, x.answer.status, x.answer.body)
	}
	if x.answer.status == http.StatusNotModified {
		// openapi3filter skips 304s; check what the document says of them.
		if len(x.answer.body) != 0 {
			return fmt.Errorf("%s: 304 with a body", op)
		}
		return requiredHeaders(declared.Value, x.answer.header)
	}
	res := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 x.answer.status,
		Header:                 x.answer.header,
		Options:                opts,
	}
	res.SetBodyBytes(x.answer.body)
	if err := openapi3filter.ValidateResponse(context.Background(), res); err != nil {
		return fmt.Errorf("%s %d: %w", op, x.answer.status, err)
	}
	return nil
}

// checkUnrouted checks an answer to a path or method the document lacks:
// the document's info promises 404 or 405 in the error shape.
func (ct *contract) checkUnrouted(x exchange, routeErr error) error {
	name := map[error]string{routers.ErrPathNotFound: "NotFound", routers.ErrMethodNotAllowed: "MethodNotAllowed"}[routeErr]
	want := map[string]int{"NotFound": http.StatusNotFound, "MethodNotAllowed": http.StatusMethodNotAllowed}[name]
	if name == "" {
		return fmt.Errorf("find route: %w", routeErr)
	}
	if x.answer.status != want {
		return fmt.Errorf("%s %s is not in the document (%v) but answered %d, not %d", x.req.Method, x.req.URL.Path, routeErr, x.answer.status, want)
	}
	ct.seen["(unrouted)"] = append(ct.seen["(unrouted)"], x.answer.status)
	resp := ct.doc.Components.Responses[name].Value
	if err := requiredHeaders(resp, x.answer.header); err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(x.answer.body, &v); err != nil {
		return fmt.Errorf("%d body: %w", want, err)
	}
	return resp.Content.Get("application/json").Schema.Value.VisitJSON(v, openapi3.VisitAsResponse())
}

func requiredHeaders(resp *openapi3.Response, h http.Header) error {
	for name, ref := range resp.Headers {
		if ref.Value.Required && h.Get(name) == "" {
			return fmt.Errorf("required header %s missing", name)
		}
	}
	return nil
}

// requireBearerHeader is the document's bearerAuth as far as a request can
// conform to it: an Authorization header with the Bearer scheme.
func requireBearerHeader(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if _, ok := bearerToken(in.RequestValidationInput.Request.Header.Get("Authorization")); !ok {
		return errors.New("no bearer token")
	}
	return nil
}

type contractCase struct {
	name         string
	method, path string
	body         string
	headers      []string
	requestValid bool
	status       int
}

func (ct *contract) run(t *testing.T, e *env, cases []contractCase) {
	t.Helper()
	for _, tc := range cases {
		x := e.exchange(t, tc.method, tc.path, tc.body, tc.headers...)
		if x.answer.status != tc.status {
			t.Errorf("%s: %s %s answered %d, want %d: %s", tc.name, tc.method, tc.path, x.answer.status, tc.status, x.answer.body)
		}
		if err := ct.check(x, expect(tc.requestValid)); err != nil {
			t.Errorf("%s: %s %s: %v", tc.name, tc.method, tc.path, err)
		}
	}
}

// TestContract runs the API with authentication on, as in production, and
// checks every exchange against the document.
func TestContract(t *testing.T) {
	cfg := authConfig(t)
	cfg.Simulator.AddFail = 0 // more creates than one success phase
	e := newEnv(t, cfg)
	ct := loadContract(t, nil)
	bearer := []string{"Authorization", "Bearer " + mint(t, cfg)}
	withBearer := func(h ...string) []string { return append(append([]string(nil), bearer...), h...) }
	etag := e.do(t, "GET", "/users/1", "").header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on GET /users/1")
	}
	big := `{"name":"` + strings.Repeat("a", int(cfg.HTTP.MaxBodyBytes)) + `","userId":1}`
	ct.run(t, e, []contractCase{
		{"list users", "GET", "/users", "", nil, true, 200},
		{"list users again (HIT)", "GET", "/users", "", nil, true, 200},
		{"one user", "GET", "/users/1", "", nil, true, 200},
		{"user not modified", "GET", "/users/1", "", []string{"If-None-Match", etag}, true, 304},
		{"user id not a number", "GET", "/users/abc", "", nil, false, 400},
		{"user id zero", "GET", "/users/0", "", nil, false, 400},
		{"user id over 32 bits", "GET", "/users/2147483648", "", nil, false, 400},
		{"no such user", "GET", "/users/999", "", nil, true, 404},
		{"list events", "GET", "/events", "", nil, true, 200},
		{"one event by number", "GET", "/events/3", "", nil, true, 200},
		{"one event by id", "GET", "/events/event-3", "", []string{"X-Request-ID", "contract-1"}, true, 200},
		// Keys are what writers chose: any printable one may exist upstream.
		{"event key with leading zero, none stored", "GET", "/events/03", "", nil, true, 404},
		{"event key of a writer's own, none stored", "GET", "/events/event-x", "", nil, true, 404},
		{"event key past int64, none stored", "GET", "/events/event-9999999999999999999", "", nil, true, 404},
		{"event key too long", "GET", "/events/" + strings.Repeat("k", 129), "", nil, false, 400},
		{"no such event", "GET", "/events/event-999", "", nil, true, 404},
		{"user events", "GET", "/events/user/1", "", nil, true, 200},
		{"user events, bad id", "GET", "/events/user/x", "", nil, false, 400},
		{"user events, no such user", "GET", "/events/user/999", "", nil, true, 404},
		{"circuit status", "GET", "/events/circuit-status", "", nil, true, 200},
		{"healthz", "GET", "/healthz", "", nil, true, 200},
		{"readyz", "GET", "/readyz", "", nil, true, 200},
		{"openapi", "GET", "/openapi.json", "", nil, true, 200},
		{"legacy users", "GET", "/getUsers", "", nil, true, 200},
		{"legacy events", "GET", "/getEvents", "", nil, true, 200},
		{"legacy user events", "GET", "/getEventsByUserId/2", "", nil, true, 200},
		{"legacy user events, bad id", "GET", "/getEventsByUserId/-1", "", nil, false, 400},
		{"legacy user events, no such user", "GET", "/getEventsByUserId/999", "", nil, true, 404},
		{"create", "POST", "/events", `{"name":"Contract","userId":1,"details":"d"}`, bearer, true, 201},
		{"legacy create", "POST", "/addEvent", `{"name":"Legacy contract","userId":2}`, bearer, true, 200},
		{"legacy create, the original's documented body", "POST", "/addEvent", `{"name":"hello","userId":"3"}`, bearer, true, 200},
		{"legacy create, the original's id and extra fields", "POST", "/addEvent", `{"id":1733000000000,"name":"x","userId":3,"venue":"roof"}`, bearer, true, 200},
		{"legacy create, userId not digits", "POST", "/addEvent", `{"name":"x","userId":"three"}`, bearer, false, 400},
		{"legacy create, unknown user", "POST", "/addEvent", `{"name":"x","userId":"999"}`, bearer, true, 422},
		{"legacy create, body too large", "POST", "/addEvent", big, bearer, false, 413},
		{"legacy create, text/plain", "POST", "/addEvent", `{"name":"x","userId":1}`, withBearer("Content-Type", "text/plain"), false, 415},
		{"create without token", "POST", "/events", `{"name":"x","userId":1}`, nil, false, 401},
		{"create with a bad token", "POST", "/events", `{"name":"x","userId":1}`, []string{"Authorization", "Bearer x.y.z"}, true, 401},
		{"create without the role", "POST", "/addEvent", `{"name":"x","userId":1}`, []string{"Authorization", "Bearer " + mint(t, cfg, "events:read")}, true, 403},
		{"create, unknown field", "POST", "/events", `{"name":"x","userId":1,"admin":true}`, bearer, false, 400},
		{"create, blank name", "POST", "/events", `{"name":"   ","userId":1}`, bearer, true, 400},
		{"create, name too long", "POST", "/events", `{"name":"` + strings.Repeat("n", 201) + `","userId":1}`, bearer, false, 400},
		{"create, userId a string", "POST", "/events", `{"name":"x","userId":"1"}`, bearer, false, 400},
		{"create, unknown user", "POST", "/events", `{"name":"x","userId":999}`, bearer, true, 422},
		{"create, malformed JSON", "POST", "/events", `{"name":`, bearer, false, 400},
		// kin-openapi reads the first JSON value only; the worker refuses the rest.
		{"create, two objects", "POST", "/addEvent", `{"name":"x","userId":1}{}`, bearer, true, 400},
		{"create, body too large", "POST", "/events", big, bearer, false, 413},
		{"create, text/plain", "POST", "/events", `{"name":"x","userId":1}`, withBearer("Content-Type", "text/plain"), false, 415},
		{"unknown path", "GET", "/nope", "", nil, false, 404},
		{"unknown method", "DELETE", "/events", "", nil, false, 405},
		{"unknown method on a legacy path", "PUT", "/getUsers", "", nil, false, 405},
		{"create with a key", "POST", "/events", `{"name":"Keyed","userId":1}`, withBearer("Idempotency-Key", "contract-1"), true, 201},
		{"create with a key, retried", "POST", "/events", `{"name":"Keyed","userId":1}`, withBearer("Idempotency-Key", "contract-1"), true, 201},
		{"create with a key, other body", "POST", "/events", `{"name":"Other","userId":1}`, withBearer("Idempotency-Key", "contract-1"), true, 422},
		{"create with a bad key", "POST", "/events", `{"name":"Keyed","userId":1}`, withBearer("Idempotency-Key", "a b"), true, 400},
		{"legacy create with a key", "POST", "/addEvent", `{"name":"Keyed","userId":"1"}`, withBearer("Idempotency-Key", "contract-2"), true, 200},
		{"legacy create with a key, retried", "POST", "/addEvent", `{"name":"Keyed","userId":"1"}`, withBearer("Idempotency-Key", "contract-2"), true, 200},
		{"legacy create with a key, other body", "POST", "/addEvent", `{"name":"Other","userId":"1"}`, withBearer("Idempotency-Key", "contract-2"), true, 422},
		{"legacy create with a bad key", "POST", "/addEvent", `{"name":"Keyed","userId":1}`, withBearer("Idempotency-Key", "a b"), true, 400},
	})
	// A retry while the first request is in flight: hold its key, which
	// is scoped to the token's subject.
	for _, path := range []string{"/events", "/addEvent"} {
		body := `{"name":"In flight","userId":1}`
		fp := idempotency.FingerprintOf([]byte("POST"), []byte(path), []byte(body))
		if _, err := e.idem.Begin(context.Background(), "test\x00held"+path, fp, "event-99"); err != nil {
			t.Fatal(err)
		}
		ct.run(t, e, []contractCase{{"create while the key is in flight " + path, "POST", path, body, withBearer("Idempotency-Key", "held"+path), true, 409}})
	}

	e.app.Drain()
	ct.run(t, e, []contractCase{{"readyz while draining", "GET", "/readyz", "", nil, true, 503}})

	// Every route the worker serves is in the document, and every
	// operation of the document was exercised.
	for _, r := range e.app.echo.Routes() {
		if r.Path == "/*" {
			continue
		}
		path := strings.ReplaceAll(r.Path, ":id", "1")
		req, _ := http.NewRequest(r.Method, e.srv.URL+path, nil)
		if _, _, err := ct.router.FindRoute(req); err != nil {
			t.Errorf("route %s %s is not in the document: %v", r.Method, r.Path, err)
		}
	}
	for path, item := range ct.doc.Paths.Map() {
		for method, op := range item.Operations() {
			if len(ct.seen[op.OperationID]) == 0 {
				t.Errorf("%s %s (%s) was never exercised", method, path, op.OperationID)
			}
		}
	}
}

func TestContractProtectedReads(t *testing.T) {
	cfg := authConfig(t)
	cfg.Auth.ProtectReads = true
	e := newEnv(t, cfg)
	ct := loadContract(t, nil)
	ct.run(t, e, []contractCase{
		{"read without a token", "GET", "/users", "", nil, true, 401},
		{"legacy read without a token", "GET", "/getEventsByUserId/1", "", nil, true, 401},
		{"read without the role", "GET", "/events/3", "", []string{"Authorization", "Bearer " + mint(t, cfg, "events:read")}, true, 403},
		{"read with a token", "GET", "/users/1", "", []string{"Authorization", "Bearer " + mint(t, cfg)}, true, 200},
		{"circuit status stays public", "GET", "/events/circuit-status", "", nil, true, 200},
	})
}

// anyBearer satisfies the document's security requirement where the
// worker runs with authentication off and ignores the header.
var anyBearer = []string{"Authorization", "Bearer unchecked"}

// TestContractUnderFailure provokes the answers only a failing Event API or
// a busy client gets: 503 with an open breaker, stale reads, 429, 504.
func TestContractUnderFailure(t *testing.T) {
	t.Run("breaker open", func(t *testing.T) {
		cfg := testConfig()
		cfg.Breaker.OpenTimeout = time.Minute
		cfg.Breaker.MaxOpenTimeout = time.Minute
		cfg.Simulator.AddOK = 0
		cfg.Simulator.ListErrorRate = 1
		cfg.Cache.Users.Fresh = time.Millisecond
		e := newEnv(t, cfg)
		ct := loadContract(t, nil)
		// Fill the cache before the upstream lists start failing.
		if err := e.sim.Update(func(c *simulator.Config) { c.ListErrorRate = 0 }); err != nil {
			t.Fatal(err)
		}
		ct.run(t, e, []contractCase{{"users while healthy", "GET", "/users", "", nil, true, 200}})
		if err := e.sim.Update(func(c *simulator.Config) { c.ListErrorRate = 1 }); err != nil {
			t.Fatal(err)
		}
		failing := contractCase{"create while addEvent fails", "POST", "/events", `{"name":"x","userId":1}`, anyBearer, true, 503}
		for attempt := 0; e.up.Breaker("addEvent").Status().State != "open"; attempt++ {
			if attempt == 20 {
				t.Fatal("the addEvent breaker did not open")
			}
			ct.run(t, e, []contractCase{failing})
		}
		ct.run(t, e, []contractCase{
			{"create with the breaker open", "POST", "/events", `{"name":"x","userId":1}`, anyBearer, true, 503},
			{"events with no stale copy", "GET", "/events", "", nil, true, 503},
			{"circuit status with a breaker open", "GET", "/events/circuit-status", "", nil, true, 200},
		})
		deadline := time.Now().Add(5 * time.Second)
		for {
			x := e.exchange(t, "GET", "/users", "")
			if err := ct.check(x, conforms); err != nil {
				t.Fatal(err)
			}
			if x.answer.header.Get("X-Cache") == "STALE" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no STALE answer for /users")
			}
		}
	})
	t.Run("rate limited", func(t *testing.T) {
		cfg := testConfig()
		cfg.RateLimit.Rate = "2-M"
		e := newEnv(t, cfg)
		ct := loadContract(t, nil)
		ct.run(t, e, []contractCase{
			{"first", "GET", "/users", "", nil, true, 200},
			{"second", "GET", "/events/circuit-status", "", nil, true, 200},
			{"third", "GET", "/users/1", "", nil, true, 429},
			{"third write", "POST", "/events", `{"name":"x","userId":1}`, anyBearer, true, 429},
			{"openapi", "GET", "/openapi.json", "", nil, true, 429},
			{"health is not limited", "GET", "/healthz", "", nil, true, 200},
		})
	})
	t.Run("slow upstream", func(t *testing.T) {
		cfg := testConfig()
		cfg.Simulator.EventDelay = 300 * time.Millisecond
		cfg.Upstream.Timeout = 20 * time.Millisecond
		cfg.Upstream.Retries = 1
		e := newEnv(t, cfg)
		ct := loadContract(t, nil)
		x := e.exchange(t, "GET", "/events/event-1", "")
		if x.answer.status != http.StatusGatewayTimeout && x.answer.status != http.StatusServiceUnavailable {
			t.Fatalf("a read past the upstream timeout answered %d: %s", x.answer.status, x.answer.body)
		}
		t.Logf("a read past the upstream timeout: %d %s", x.answer.status, x.answer.body)
		if err := ct.check(x, conforms); err != nil {
			t.Error(err)
		}
	})
}

// TestContractBadInputs sends the bad inputs of docs/api.md: each answer must be
// one the document declares, in the shape it declares.
func TestContractBadInputs(t *testing.T) {
	e := newEnv(t, testConfig())
	ct := loadContract(t, nil)
	for _, row := range readBadInputs(t) {
		headers := append(append([]string(nil), anyBearer...), row.headers...)
		x := e.exchange(t, row.method, row.path, row.body, headers...)
		if err := ct.check(x, unchecked); err != nil {
			t.Errorf("%s %s %.40q: %v", row.method, row.path, row.body, err)
		}
	}
}

// TestContractCatchesDrift proves the checks bite: a document that lacks a
// field or a status the handlers produce fails validation of a real answer.
func TestContractCatchesDrift(t *testing.T) {
	e := newEnv(t, testConfig())
	event := e.exchange(t, "GET", "/events/event-3", "")
	missing := e.exchange(t, "GET", "/users/999", "")
	if event.answer.status != 200 || missing.answer.status != 404 {
		t.Fatalf("setup: %d and %d", event.answer.status, missing.answer.status)
	}
	if err := loadContract(t, nil).check(event, conforms); err != nil {
		t.Fatalf("the real document refuses a real answer: %v", err)
	}
	for _, tc := range []struct {
		name   string
		x      exchange
		mutate func(doc *openapi3.T)
	}{
		{"Event whose name is a number", event, func(doc *openapi3.T) {
			doc.Components.Schemas["Event"].Value.Properties["name"].Value.Type = &openapi3.Types{openapi3.TypeInteger}
		}},
		{"getUser without 404", missing, func(doc *openapi3.T) {
			doc.Paths.Value("/users/{id}").Get.Responses.Delete("404")
		}},
		{"X-Cache without STALE, MISS", event, func(doc *openapi3.T) {
			doc.Components.Headers["X-Cache"].Value.Schema.Value.Enum = []any{"HIT"}
		}},
		{"error codes without user_not_found", missing, func(doc *openapi3.T) {
			code := doc.Components.Schemas["UserNotFoundError"].Value.Properties["error"].Value.Properties["code"].Value
			code.Enum = []any{"not_found"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := loadDocument(t)
			tc.mutate(doc)
			if err := loadContract(t, doc).check(tc.x, conforms); err == nil {
				t.Error("the mutated document accepts the answer")
			}
		})
	}
}
