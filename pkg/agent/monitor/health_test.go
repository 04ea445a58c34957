package monitor

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	m := NewMetrics()
	m.RoutesProgrammed.Set(2)
	var ready bool
	srv := httptest.NewServer(Handler(m, func() bool { return ready }))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path     string
		ready    bool
		wantCode int
		wantBody string
	}{
		{"/healthz", false, 200, "ok"},
		{"/readyz", false, 503, "not ready"},
		{"/readyz", true, 200, "ok"},
		{"/metrics", true, 200, "vethroute_agent_routes_programmed 2"},
		{"/nope", true, 404, ""},
	}
	for _, tc := range tests {
		ready = tc.ready
		code, body := get(tc.path)
		if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
			t.Errorf("GET %s (ready=%v) = %d %q, want %d containing %q", tc.path, tc.ready, code, body, tc.wantCode, tc.wantBody)
		}
	}
}
