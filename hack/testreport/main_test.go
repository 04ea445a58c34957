package main

import (
	"fmt"
	"strings"
	"testing"
)

// Lines as go test -json writes them (Time and Elapsed left out: unread).
const (
	pkgStart = `{"Action":"start","Package":"example.com/p"}`
	pkgPass  = `{"Action":"pass","Package":"example.com/p"}`
	pkgFail  = `{"Action":"fail","Package":"example.com/p"}`

	aRun  = `{"Action":"run","Package":"example.com/p","Test":"TestA"}`
	aOut  = `{"Action":"output","Package":"example.com/p","Test":"TestA","Output":"=== RUN   TestA\n"}`
	aPass = `{"Action":"pass","Package":"example.com/p","Test":"TestA"}`
	aFail = `{"Action":"fail","Package":"example.com/p","Test":"TestA"}`

	bRun   = `{"Action":"run","Package":"example.com/p","Test":"TestB"}`
	bLog   = `{"Action":"output","Package":"example.com/p","Test":"TestB","Output":"    b_test.go:9: setting up\n"}`
	bMsg   = `{"Action":"output","Package":"example.com/p","Test":"TestB","Output":"    b_test.go:12: needs root: it creates network namespaces\n"}`
	bFrame = `{"Action":"output","Package":"example.com/p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}`
	bSkip  = `{"Action":"skip","Package":"example.com/p","Test":"TestB"}`

	subRun  = `{"Action":"run","Package":"example.com/p","Test":"FuzzC/seed#1"}`
	subMsg  = `{"Action":"output","Package":"example.com/p","Test":"FuzzC/seed#1","Output":"    fuzz_test.go:5: input out of bounds\n"}`
	subSkip = `{"Action":"skip","Package":"example.com/p","Test":"FuzzC/seed#1"}`
	cPass   = `{"Action":"pass","Package":"example.com/p","Test":"FuzzC"}`

	pkgFailOut = `{"Action":"output","Package":"example.com/p","Output":"FAIL\texample.com/p\t0.01s\n"}`
	panicOut   = `{"Action":"output","Package":"example.com/p","Output":"panic: TestMain: no binary\n"}`

	buildOut  = `{"ImportPath":"example.com/p [example.com/p.test]","Action":"build-output","Output":"p_test.go:3:1: syntax error\n"}`
	buildFail = `{"ImportPath":"example.com/p [example.com/p.test]","Action":"build-fail"}`
	buildPkg  = `{"Action":"fail","Package":"example.com/p","FailedBuild":"example.com/p [example.com/p.test]"}`
	buildFAIL = `{"Action":"output","Package":"example.com/p","Output":"FAIL\texample.com/p [build failed]\n"}`
)

func TestReport(t *testing.T) {
	allowFuzzC := []allowed{{Package: "example.com/p", Test: "FuzzC", Reason: "out-of-bounds seeds"}}
	for _, tc := range []struct {
		name                    string
		lines                   []string
		root                    bool
		allow                   []allowed
		ok                      bool
		passed, failed, skipped int
		// Each must appear in the report; a problem's text when !ok.
		want []string
	}{
		{
			name:   "all pass",
			lines:  []string{pkgStart, aRun, aOut, aPass, pkgPass},
			root:   true,
			ok:     true,
			passed: 1,
			want:   []string{"=== RUN   TestA\n"},
		},
		{
			name:   "a test fails",
			lines:  []string{pkgStart, aRun, aOut, aFail, pkgFailOut, pkgFail},
			root:   true,
			failed: 1,
			want:   []string{"example.com/p: TestA failed"},
		},
		{
			name:  "build failure",
			lines: []string{buildOut, buildFail, pkgStart, buildFAIL, buildPkg},
			root:  true,
			want:  []string{"p_test.go:3:1: syntax error", "example.com/p [example.com/p.test]: build failed", "the run fails (1)"},
		},
		{
			name:  "build failure seen only as FAIL output and a package fail",
			lines: []string{pkgStart, buildFAIL, pkgFail},
			want:  []string{"failed with no failing test"},
		},
		{
			name:   "package fails outside any test",
			lines:  []string{pkgStart, aRun, aPass, panicOut, pkgFailOut, pkgFail},
			passed: 1,
			want:   []string{"panic: TestMain", "failed with no failing test"},
		},
		{
			name:   "no package result",
			lines:  []string{pkgStart, aRun, aOut},
			root:   true,
			want:   []string{"example.com/p: no result"},
			passed: 0,
		},
		{
			name:  "no input",
			lines: nil,
			want:  []string{"no test2json events"},
		},
		{
			name:    "skip as root, not allowed",
			lines:   []string{pkgStart, bRun, bLog, bMsg, bFrame, bSkip, pkgPass},
			root:    true,
			allow:   allowFuzzC,
			skipped: 1,
			want: []string{
				"example.com/p TestB: b_test.go:12: needs root: it creates network namespaces",
				"TestB skipped as root and is not in hack/testreport's allow-list: b_test.go:12: needs root",
			},
		},
		{
			name:    "skip not as root",
			lines:   []string{pkgStart, bRun, bLog, bMsg, bFrame, bSkip, pkgPass},
			ok:      true,
			skipped: 1,
			want:    []string{"skipped tests (1):", "example.com/p TestB: b_test.go:12: needs root"},
		},
		{
			name:    "subtest skip allowed by its parent's entry",
			lines:   []string{pkgStart, subRun, subMsg, subSkip, cPass, pkgPass},
			root:    true,
			allow:   allowFuzzC,
			ok:      true,
			passed:  1,
			skipped: 1,
			want:    []string{"example.com/p FuzzC/seed#1 [allowed: out-of-bounds seeds]: fuzz_test.go:5: input out of bounds"},
		},
		{
			name:    "an entry for another package allows nothing",
			lines:   []string{pkgStart, subRun, subMsg, subSkip, cPass, pkgPass},
			root:    true,
			allow:   []allowed{{Package: "example.com/q", Test: "FuzzC", Reason: "x"}},
			passed:  1,
			skipped: 1,
			want:    []string{"FuzzC/seed#1 skipped as root"},
		},
		{
			name:   "lines that are not events are shown",
			lines:  []string{"go: downloading example.com/x v1.0.0", pkgStart, aRun, aPass, pkgPass},
			ok:     true,
			passed: 1,
			want:   []string{"go: downloading example.com/x v1.0.0\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Join(tc.lines, "\n")
			if in != "" {
				in += "\n"
			}
			var out strings.Builder
			s, err := report(strings.NewReader(in), &out, tc.root, tc.allow)
			if err != nil {
				t.Fatal(err)
			}
			if s.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v; problems %q", s.OK(), tc.ok, s.Problems)
			}
			if s.Passed != tc.passed || s.Failed != tc.failed || s.Skipped != tc.skipped {
				t.Errorf("counts %d/%d/%d, want %d/%d/%d", s.Passed, s.Failed, s.Skipped, tc.passed, tc.failed, tc.skipped)
			}
			text := out.String()
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("report lacks %q:\n%s", w, text)
				}
			}
			// CI parses the last line alone.
			lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
			if got, want := lines[len(lines)-1], fmtCounts(tc.passed, tc.failed, tc.skipped); got != want {
				t.Errorf("last line %q, want %q", got, want)
			}
		})
	}
}

func fmtCounts(p, f, s int) string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", p, f, s)
}
